"""The docs cannot drift from the code: README.md and docs/*.md name only real things.

Checked, statically and fast (no subprocess; the only imports are the configs, which need
ml_collections alone):
  1. README.md is a front door of at most 12,288 bytes.
  2. Every `python -m <module>` (and `python <script>.py`) in a code block or inline code
     names a module of this repository (or one of a few tools: pip, pytest, venv).
  3. Every `--flag` on such a command is defined by that module: absl `DEFINE_*("name"`
     anywhere in the module and at module level in the repository modules it imports (absl
     flags are global), config_flags' `DEFINE_config_file`, argparse `add_argument("--name"`
     (subcommands included), plus absl's own flags.
  4. Every `--config.a.b=...` override exists in the config that `--config=configs/X.py:arg`
     loads; a lone `--config.a.b` or `--flag` in inline code exists in some config / module
     named by the docs' commands.
  5. Every relative link or image in README.md and docs/*.md points at an existing file.
  6. README's test commands are the ones `.ci/run` runs.
Commands may span lines (trailing backslashes) and use shell variables set in the same code
block (`QAT="--config=..."` then `python -m byteflax.main $QAT`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.machinery
import importlib.util
import pathlib
import re
import shlex
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_BYTES = 12_288
# `python -m` tools that are not this repository's modules; their flags are not checked.
EXTERNAL_MODULES = frozenset({"pip", "pytest", "venv"})
# Flags that absl's app / logging define for every absl program.
ABSL_BUILTIN_FLAGS = frozenset({
    "?", "help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok",
    "only_check_args", "only_check_flags", "pdb", "pdb_post_mortem", "run_with_pdb",
    "run_with_profiling", "profile_file", "use_cprofile_for_profiling", "logtostderr",
    "alsologtostderr", "log_dir", "logger_levels", "stderrthreshold", "showprefixforinfo",
    "v", "verbosity"})
ARGPARSE_BUILTIN_FLAGS = frozenset({"help"})
CONFIG_DEFINERS = frozenset({"DEFINE_config_file", "DEFINE_config_dict",
                             "DEFINE_config_dataclass"})
SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;"})
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


def doc_paths() -> list[pathlib.Path]:
  return [README, *sorted((ROOT / "docs").glob("*.md"))]


# --- Finding commands in Markdown ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Command:
  """One python invocation: `python -m module args` or `python script.py args`."""
  source: str  # Where it was found, for messages.
  text: str  # The (joined, expanded) command line.
  module: str | None
  script: str | None
  args: tuple[str, ...]


def _tokens(line: str) -> list[str]:
  """Shell words of one logical line; comments dropped, operators as their own tokens."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  try:
    return list(lexer)
  except ValueError:  # Unbalanced quotes (prose): split on whitespace instead.
    return line.split()


def _expand(line: str, variables: dict[str, str]) -> str:
  return _VARIABLE.sub(
      lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), line)


def _logical_lines(code: str) -> list[str]:
  """Joins backslash-continued lines."""
  lines, current = [], ""
  for raw in code.split("\n"):
    if raw.rstrip().endswith("\\"):
      current += raw.rstrip()[:-1] + " "
    else:
      lines.append(current + raw)
      current = ""
  if current:
    lines.append(current)
  return lines


def commands_in_tokens(tokens: list[str], source: str, text: str) -> list[Command]:
  """Every python invocation in one tokenized line (several if joined by && ; |)."""
  commands = []
  for i, token in enumerate(tokens):
    if not _PYTHON.fullmatch(token.rsplit("/", 1)[-1]):
      continue
    rest = tokens[i + 1:]
    module = script = None
    while rest and rest[0].startswith("-") and rest[0] != "-m":
      rest = rest[1:]  # Interpreter options (-u, -X ...).
    if len(rest) >= 2 and rest[0] == "-m":
      module, rest = rest[1], rest[2:]
    elif rest and rest[0].endswith(".py"):
      script, rest = rest[0], rest[1:]
    else:
      continue
    args = []
    for arg in rest:
      if arg in SHELL_OPERATORS or arg == "--":  # `--`: the rest is for another program.
        break
      args.append(arg)
    commands.append(Command(source, text, module, script, tuple(args)))
  return commands


def commands_in_code(code: str, source: str) -> list[Command]:
  """Commands of a shell code block; `NAME=value` lines define variables for later lines."""
  commands, variables = [], {}
  for line in _logical_lines(code):
    line = _expand(line, variables)
    tokens = _tokens(line)
    if tokens and all(_ASSIGNMENT.match(t) for t in tokens):
      for token in tokens:
        name, value = token.split("=", 1)
        variables[name] = value
      continue
    commands.extend(commands_in_tokens(tokens, source, line.strip()))
  return commands


def split_markdown(text: str) -> tuple[list[tuple[str, str]], str]:
  """(fenced blocks as (language, code)), the text with the blocks blanked out."""
  blocks = [(m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(text)]
  return blocks, _FENCE.sub("", text)


def inline_code(prose: str) -> list[str]:
  return [" ".join(m.group(1).split()) for m in _INLINE_CODE.finditer(prose)]


def commands_in_markdown(text: str, source: str) -> tuple[list[Command], list[str]]:
  """(commands, inline-code fragments holding flags but no command)."""
  blocks, prose = split_markdown(text)
  commands = []
  for language, code in blocks:
    if language in ("", "bash", "sh", "shell", "console"):
      commands.extend(commands_in_code(code, source))
  fragments = []
  for span in inline_code(prose):
    found = commands_in_tokens(_tokens(span), source, span)
    if found:
      commands.extend(found)
    elif "--" in span:
      fragments.append(span)
  return commands, fragments


# --- What the code defines ------------------------------------------------------------------


@dataclasses.dataclass
class Flags:
  names: set[str]
  config_flags: set[str]  # Flags that load a config file and take --<name>.a.b overrides.


@functools.lru_cache(maxsize=None)
def _module_file(module: str) -> pathlib.Path | None:
  """The repository file of `module` (as `python -m` finds it from the root), or None.

  importlib's PathFinder, level by level from the root: unlike importlib.util.find_spec
  it imports no parent package (tasks/__init__.py would import TensorFlow).
  """
  locations = [str(ROOT)]
  spec = None
  parts = module.split(".")
  for i in range(len(parts)):
    if not parts[i].isidentifier() or locations is None:
      return None
    spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:i + 1]), locations)
    if spec is None:
      return None
    locations = spec.submodule_search_locations
  if spec.origin in (None, "namespace"):  # A bare directory: nothing to run.
    return None
  return pathlib.Path(spec.origin).resolve()


def _runnable_file(module: str) -> pathlib.Path | None:
  """What `python -m module` runs: the module, or a package's __main__.py."""
  path = _module_file(module)
  if path is not None and path.name == "__init__.py":
    path = path.parent / "__main__.py"
  return path if path is not None and path.is_file() else None


def _string_arg(call: ast.Call, keyword: str) -> str | None:
  if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
    return call.args[0].value
  for kw in call.keywords:
    if kw.arg == keyword and isinstance(kw.value, ast.Constant):
      return kw.value.value
  return None


def _call_name(call: ast.Call) -> str:
  func = call.func
  return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _top_level_nodes(tree: ast.Module):
  """Nodes executed on import: everything outside function and class bodies."""
  stack = list(tree.body)
  while stack:
    node = stack.pop()
    yield node
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
      stack.extend(ast.iter_child_nodes(node))


def _imported_modules(tree: ast.Module, package: str) -> set[str]:
  names = set()
  for node in _top_level_nodes(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(p for p in [*parts, base] if p)
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)
  return names


def _absl_defines(nodes) -> tuple[set[str], set[str]]:
  names, configs = set(), set()
  for node in nodes:
    if isinstance(node, ast.Call) and _call_name(node).startswith("DEFINE"):
      name = _string_arg(node, "name")
      if name:
        names.add(name)
        if _call_name(node) in CONFIG_DEFINERS:
          configs.add(name)
  return names, configs


@functools.lru_cache(maxsize=None)
def _parse(path: pathlib.Path) -> ast.Module:
  return ast.parse(path.read_text(), filename=str(path))


@functools.lru_cache(maxsize=None)
def _import_time_flags(module: str) -> tuple[frozenset[str], frozenset[str]]:
  """absl flags defined when `module` is imported: at module level in it and in every
  repository module it imports, transitively."""
  names, configs = set(), set()
  seen, todo = set(), [module]
  while todo:
    current = todo.pop()
    if current in seen:
      continue
    seen.add(current)
    path = _module_file(current)
    if path is None:
      continue
    tree = _parse(path)
    more_names, more_configs = _absl_defines(_top_level_nodes(tree))
    names |= more_names
    configs |= more_configs
    package = current if path.name == "__init__.py" else current.rpartition(".")[0]
    todo.extend(_imported_modules(tree, package) - seen)
  return frozenset(names), frozenset(configs)


def defined_flags(path: pathlib.Path, module: str | None) -> Flags:
  """The flags a run of this file accepts (statically: absl, config_flags, argparse)."""
  tree = _parse(path)
  names, configs = _absl_defines(ast.walk(tree))  # The program's own, main() included.
  package = module.rpartition(".")[0] if module else ""
  uses_absl = False
  for imported in _imported_modules(tree, package) | {module or ""}:
    uses_absl |= imported.startswith("absl")
    if imported and imported != module:
      more_names, more_configs = _import_time_flags(imported)
      names |= more_names
      configs |= more_configs
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and _call_name(node) == "add_argument":
      for arg in node.args:
        if isinstance(arg, ast.Constant) and str(arg.value).startswith("--"):
          names.add(arg.value[2:])
  names |= ABSL_BUILTIN_FLAGS if uses_absl else ARGPARSE_BUILTIN_FLAGS
  return Flags(names, configs)


# --- Configs --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def load_config(value: str):
  """`configs/X.py[:arg]` -> configs.X.get_config(arg or None)."""
  path, _, arg = value.partition(":")
  file = ROOT / path
  if not (file.is_file() and file.suffix == ".py"):
    raise FileNotFoundError(f"no config file {path}")
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  module = ".".join(file.relative_to(ROOT).with_suffix("").parts)
  return importlib.import_module(module).get_config(arg or None)


def has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    try:
      if part not in node:
        return False
    except TypeError:  # A leaf value where a ConfigDict was expected.
      return False
    node = node[part]
  return True


# --- The checks, as functions the negative tests reuse ---------------------------------------


def check_command(command: Command) -> list[str]:
  """Errors of one command: unknown module / script, flags, config keys."""
  where = f"{command.source}: `{command.text}`"
  if command.module is not None:
    if command.module in EXTERNAL_MODULES:
      if importlib.util.find_spec(command.module) is None:  # Top level: imports nothing.
        return [f"{where}: {command.module} is not installed"]
      return []
    path = _runnable_file(command.module)
    if path is None:
      return [f"{where}: no module {command.module} in this repository"]
  else:
    path = ROOT / command.script
    if not path.is_file():
      return [f"{where}: no script {command.script}"]
  flags = defined_flags(path, command.module)
  name = command.module or command.script
  errors, configs = [], {}
  for arg in command.args:
    if not arg.startswith("--") or arg == "--":
      continue
    flag, _, value = arg[2:].partition("=")
    if flag in flags.config_flags and value and value != "...":
      try:
        configs[flag] = load_config(value)
      except Exception as e:  # pylint: disable=broad-except  (any failure is the finding)
        errors.append(f"{where}: --{flag}={value} does not load: {e!r}")
  for arg in command.args:
    if not arg.startswith("--") or arg == "--":
      continue
    flag = arg[2:].partition("=")[0]
    head, dot, key = flag.partition(".")
    if dot and head in flags.config_flags:
      if head in configs and not has_key(configs[head], key):
        errors.append(f"{where}: --{flag}: no key {key!r} in that config")
      elif head not in configs and not any(has_key(c, key) for c in all_configs()):
        errors.append(f"{where}: --{flag}: no config has the key {key!r}")
    elif flag not in flags.names and not (
        flag.startswith("no") and flag[2:] in flags.names):
      errors.append(f"{where}: {name} defines no flag --{flag}")
  return errors


def all_configs() -> list:
  """Every config file's default config and every config the docs' commands load."""
  values = {str(path.relative_to(ROOT)) for path in (ROOT / "configs").glob("*.py")}
  for command in _all_commands()[0]:
    values.update(arg.partition("=")[2] for arg in command.args if arg.startswith("--config="))
  configs = []
  for value in sorted(values):
    try:
      configs.append(load_config(value))
    except Exception:  # pylint: disable=broad-except  (not a config; check_command says so)
      pass
  return configs


def check_fragment(fragment: str, known_flags: set[str]) -> list[str]:
  """A flag in prose (`--mode=eval`, `--config.seed=S`): defined somewhere."""
  errors = []
  tokens = _tokens(fragment)
  if not tokens or not tokens[0].startswith("--"):
    return []  # Another program's command line (`tensorboard --logdir ...`).
  for token in tokens:
    if not re.match(r"--\w", token):
      continue
    flag = token[2:].partition("=")[0]
    head, dot, key = flag.partition(".")
    key = key.removesuffix(".*")  # `--config.data.*`: the section.
    if dot and head == "config":
      if not any(has_key(c, key) for c in all_configs()):
        errors.append(f"`{fragment}`: no config has the key {key!r}")
    elif flag not in known_flags:
      errors.append(f"`{fragment}`: no module of the docs' commands defines --{flag}")
  return errors


def check_links(text: str, base: pathlib.Path, source: str) -> list[str]:
  _, prose = split_markdown(text)
  prose = _INLINE_CODE.sub("", prose)
  errors = []
  for match in _LINK.finditer(prose):
    target = match.group(1)
    if re.match(r"^[a-z]+:", target) or target.startswith("#"):
      continue
    path = target.split("#", 1)[0]
    if not (base / path).exists():
      errors.append(f"{source}: link to {target}, which does not exist")
  return errors


# --- Tests -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _all_commands() -> tuple[tuple[Command, ...], tuple[tuple[str, str], ...]]:
  commands, fragments = [], []
  for path in doc_paths():
    source = str(path.relative_to(ROOT))
    found, loose = commands_in_markdown(path.read_text(), source)
    commands.extend(found)
    fragments.extend((source, f) for f in loose)
  return tuple(commands), tuple(fragments)


def test_readme_is_short():
  size = len(README.read_bytes())
  assert size <= README_MAX_BYTES, f"README.md is {size:,} bytes; move depth into docs/."


def test_docs_exist_and_are_linked_from_readme():
  readme = README.read_text()
  pages = sorted((ROOT / "docs").glob("*.md"))
  assert pages
  unlinked = [p.name for p in pages if f"(docs/{p.name})" not in readme]
  assert not unlinked, f"README.md does not link {unlinked}"


def test_commands_name_real_modules_flags_and_config_keys():
  commands, _ = _all_commands()
  modules = {c.module or c.script for c in commands}
  # The commands that matter are found at all (the parser did not silently miss them).
  assert {"byteflax.main", "byteflax.export", "benchmarks.compare",
          "benchmarks/export_benchmark.py"} <= modules, modules
  errors = [e for c in commands for e in check_command(c)]
  assert not errors, "\n".join(errors)


def test_flags_in_prose_exist():
  commands, fragments = _all_commands()
  known = set(ABSL_BUILTIN_FLAGS)
  for command in commands:
    if command.module in EXTERNAL_MODULES:
      continue
    path = _runnable_file(command.module) if command.module else ROOT / command.script
    if path is not None and path.is_file():
      flags = defined_flags(path, command.module)
      known |= flags.names | flags.config_flags
  errors = [f"{source}: {e}" for source, f in fragments for e in check_fragment(f, known)]
  assert not errors, "\n".join(errors)


def test_relative_links_exist():
  errors = []
  for path in doc_paths():
    errors += check_links(path.read_text(), path.parent, str(path.relative_to(ROOT)))
  assert not errors, "\n".join(errors)


def check_test_commands(readme: str, ci_script: str) -> list[str]:
  """README's "Run the tests" code lines are lines of .ci/run, and its pytest runs all there."""
  if "## Run the tests" not in readme:
    return ['README.md has no "## Run the tests" section']
  section = readme.split("## Run the tests", 1)[1].split("\n## ", 1)[0]
  blocks, _ = split_markdown(section)
  readme_lines = {" ".join(_tokens(line)) for _, code in blocks for line in code.split("\n")}
  readme_lines.discard("")
  ci_lines = {" ".join(_tokens(line)) for line in ci_script.split("\n")}
  ci_tests = {line for line in ci_lines if line.startswith("python -m pytest")}
  return ([f"README runs `{line}`, .ci/run does not" for line in sorted(readme_lines - ci_lines)]
          + [f".ci/run runs `{line}`, README does not" for line in sorted(ci_tests - readme_lines)])


def test_readme_test_commands_are_ci_commands():
  errors = check_test_commands(README.read_text(), (ROOT / ".ci/run").read_text())
  assert not errors, "\n".join(errors)


# --- The checks can fail ---------------------------------------------------------------------

_BAD = """
```bash
python -m byteflax.no_such_module --workdir=/tmp/x
python -m byteflax.main --config=configs/byteqrnn_toxicity.py --workdir=/tmp/x \\
    --no_such_flag=1
python -m byteflax.main --config=configs/byteqrnn_toxicity.py:fortunes --workdir=/tmp/x \\
    --config.model.no_such_key=2
Q="--config=configs/byteqrnn_toxicity.py --config.optim.no_such_rate=1"
python -m byteflax.main $Q --workdir=/tmp/x
python -m byteflax.main --config=configs/byteqrnn_toxicity.py:no_such_variant --workdir=/tmp/x
python -m benchmarks.minilm_teacher fit --bundle=/tmp/b --no_such_option=3
PYTHONPATH=. python benchmarks/no_such_script.py --out=/tmp/x
```

Inline: `python -m byteflax.export --config=configs/byteqrnn_toxicity.py --no_such_out=/tmp/x`.
"""

_GOOD = """
```bash
# A comment naming python -m byteflax.no_such_module is not a command.
python -m byteflax.main --config=configs/byteqrnn_toxicity.py:fortunes,scratch --workdir=/tmp/x \\
    --config.model.dropout_rate=0.1 --mode=eval --alsologtostderr && python -m pytest -q
F="--config.model.zoneout=0.01"
QAT="--config=configs/byteqrnn_toxicity.py:fortunes,qat $F"
python -m byteflax.export $QAT --workdir=/tmp/x --out=/tmp/x/export
python -m benchmarks.minilm_teacher fit --bundle=/tmp/b --out=/tmp/l --epochs=x=1
python -m benchmarks.compare --config=configs/byteqrnn_toxicity.py --runs=/tmp/a \\
    --baselines=tfidf_word --config.data.train_path=train.csv
python -m launch.tpu --project=P --zone=Z --dry_run -- --anything=goes
PYTHONPATH=. python benchmarks/export_benchmark.py $QAT --workdir=/tmp/x --export_dir=/tmp/e
```
"""


def test_checks_catch_made_up_modules_flags_and_keys():
  commands, _ = commands_in_markdown(_BAD, "bad.md")
  assert len(commands) == 8, commands
  problems = [check_command(c) for c in commands]
  assert all(problems), [c.text for c, p in zip(commands, problems) if not p]
  messages = "\n".join(e for p in problems for e in p)
  for expected in ("no module byteflax.no_such_module", "no flag --no_such_flag",
                   "no key 'model.no_such_key'", "no key 'optim.no_such_rate'",
                   "no_such_variant", "no flag --no_such_option",
                   "no script benchmarks/no_such_script.py", "no flag --no_such_out"):
    assert expected in messages, (expected, messages)


def test_checks_pass_real_commands_in_every_style():
  commands, _ = commands_in_markdown(_GOOD, "good.md")
  names = [c.module or c.script for c in commands]
  assert names == ["byteflax.main", "pytest", "byteflax.export", "benchmarks.minilm_teacher",
                   "benchmarks.compare", "launch.tpu", "benchmarks/export_benchmark.py"]
  assert "--config.model.zoneout=0.01" in commands[2].args  # $QAT and its $F expanded.
  assert "--config.model.dropout_rate=0.1" in commands[0].args  # Continuation line.
  errors = [e for c in commands for e in check_command(c)]
  assert not errors, errors


def test_prose_flag_and_link_checks_can_fail():
  assert check_fragment("--config.no_such_section.x=1", {"mode"})
  assert check_fragment("--no_such_flag", {"mode"})
  assert not check_fragment("--mode=eval --config.seed=S --config.data.*", {"mode"})
  assert not check_fragment("tensorboard --logdir /tmp/x", {"mode"})
  bad_links = "[gone](docs/no_such_page.md) ![plot](benchmarks/results/no_such.png)"
  assert len(check_links(bad_links, ROOT, "x.md")) == 2
  assert not check_links("[ok](docs/results.md) [web](https://example.com) [a](#x)", ROOT, "x")


def test_ci_agreement_check_can_fail():
  ci = "python -m pip install -q -e .\npython -m pytest  # fast\npython -m pytest -m slow\n"
  readme = "## Run the tests\n\n```bash\npython -m pytest\npython -m pytest -x\n```\n"
  assert check_test_commands(readme, ci) == [
      "README runs `python -m pytest -x`, .ci/run does not",
      ".ci/run runs `python -m pytest -m slow`, README does not"]
