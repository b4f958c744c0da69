r"""Latency-budget architecture search: measure first, train only what fits the budget.

  python -m byteflax.search --config=configs/byteqrnn_toxicity.py --workdir=/tmp/search \
      --latency_budget_ms=1 [--candidates=12] [--proxy_steps=300] [--space='{...}']

1. Candidates: the config's own model, then --candidates - 1 others drawn at random
   (--seed) from the grid `SPACE` (or --space, JSON `{model field: [choices]}`), each a
   set of `config.model` fields.
2. Latency, before any training: each candidate, at random weights (latency does not
   depend on their values), is converted to the CPU int8 TFLite file (byteflax/export.py)
   with one signature, the length that holds the median text of --texts validation texts,
   and timed on one thread on the texts of that length: its median is the candidate's
   median per-text latency on this machine (latency grows with the signature, so the
   median text sets the median).
3. Candidates within --latency_budget_ms train for --proxy_steps steps on the labels (the
   teacher is left out: it ranks architectures as well at a fraction of the cost) and
   are scored on the validation split only; the test split is never read.
4. Written to --workdir: search.json (every candidate: fields, params, latency, validation
   ROC AUC when trained, on the Pareto front or not), search.md (the table), search.png
   (AUC against latency, the front and the budget) and chosen_config.py, the best
   validation AUC under the budget, as a config file that byteflax.main takes:
   `python -m byteflax.main --config=<workdir>/chosen_config.py --workdir=...` trains
   the searched config (its teacher included) with the chosen model.

A restarted search reuses the latencies it measured (latency.json: delete it after changing
the model's code) and the proxy runs' checkpoints (one workdir per candidate). Measured:
docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
import copy
import itertools
import json
import os
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from byteflax import cli
from byteflax import export
from byteflax import input_pipeline
from byteflax import models
from byteflax import splitter
from byteflax import train

# `config.model` fields of ByteQRNN and the values the search draws from.
SPACE = {
    "embed_dim": [64, 128],
    "gbst_max_block_size": [2, 4],
    "gbst_downsample_rate": [2, 4],
    "qrnn_layers": [1, 2, 3],
    "qrnn_features": [64, 96, 128],
    "qrnn_kernel_size": [2, 3],
}
LATENCY_FILE = "latency.json"
RESULTS_FILE = "search.json"
CHOSEN_CONFIG_FILE = "chosen_config.py"


def candidates(config: ml_collections.ConfigDict, space: dict[str, Sequence],
               count: int, seed: int) -> list[dict]:
  """The config's own model fields (over the space's keys), then count - 1 other points of
  the grid, drawn at random without replacement."""
  unknown = set(space) - set(config.model)
  if unknown:
    raise ValueError(f"Search space fields {sorted(unknown)} are not in config.model "
                     f"({sorted(config.model)}).")
  own = {name: config.model[name] for name in space}
  grid = [dict(zip(space, values)) for values in itertools.product(*space.values())]
  others = [point for point in grid if point != own]
  rng = np.random.default_rng(seed)
  picks = rng.choice(len(others), size=min(count - 1, len(others)), replace=False)
  return [own] + [others[i] for i in sorted(picks)]


def with_model(config: ml_collections.ConfigDict, fields: dict) -> ml_collections.ConfigDict:
  candidate = copy.deepcopy(config)
  candidate.model.update(fields)
  return candidate


def median_signature(config: ml_collections.ConfigDict, num_texts: int
                     ) -> tuple[int, np.ndarray]:
  """The signature length that holds the median validation text, and the ids `[n, length]`
  of the texts that run at it (longer than the next shorter signature)."""
  lengths = export.default_lengths(config.data.max_length)
  ids, _ = input_pipeline.task_examples(config.data, "validation", config.data.max_length)
  rng = np.random.default_rng(0)
  ids = ids[rng.choice(len(ids), size=min(num_texts, len(ids)), replace=False)]
  used = (ids != splitter.PAD_ID).sum(axis=1)
  length = next(n for n in lengths if n >= np.median(used))
  shorter = max([0] + [n for n in lengths if n < length])
  rows = (used > shorter) & (used <= length)
  return length, export.cut_ids(ids[rows], length)


def int8_latency_ms(config: ml_collections.ConfigDict, length: int, ids: np.ndarray,
                    runs: int) -> tuple[float, int]:
  """(median ms per text on one thread, params) of the config's model as the CPU int8
  TFLite file with one signature of `length`, at random weights."""
  model = models.build_model(config.model_name, 1, config.model).clone(
      **export.EXPORT_OVERRIDES[config.model_name])
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids[:1])["params"]
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, export.INT8_FILE)
    with open(path, "wb") as f:
      f.write(export.convert(model, params, length, export.INT8))
    classifier = export.TFLiteClassifier(path, num_threads=1)
    return export.median_latency_ms(classifier, ids, runs), train.count_params(params)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
  """For (latency, auc) points: True where no other point is at least as fast and as
  accurate, and strictly better in one."""
  return [not any(l2 <= l1 and a2 >= a1 and (l2, a2) != (l1, a1) for l2, a2 in points)
          for l1, a1 in points]


def _load_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _key(fields: dict) -> str:
  return json.dumps(fields, sort_keys=True)


def search(config: ml_collections.ConfigDict, workdir: str, latency_budget_ms: float, *,
           num_candidates: int = 12, proxy_steps: int = 300, space: dict | None = None,
           seed: int = 0, num_texts: int = 200, latency_runs: int = 100) -> dict:
  """Runs the search (module docstring) and writes its files; returns search.json's dict."""
  if config.model_name not in export.EXPORT_OVERRIDES:
    raise ValueError(f"model_name {config.model_name!r} has no TFLite export recipe, so its "
                     "latency cannot be measured (byteflax.export.EXPORT_OVERRIDES).")
  os.makedirs(workdir, exist_ok=True)
  points = candidates(config, space or SPACE, num_candidates, seed)
  length, ids = median_signature(config, num_texts)
  logging.info("%d candidates; latency at the median text's signature, length %d (%d "
               "texts of that length).", len(points), length, len(ids))
  latency_path = os.path.join(workdir, LATENCY_FILE)
  measured = _load_json(latency_path)
  rows = []
  for i, fields in enumerate(points):
    key = _key({"fields": fields, "length": length})
    if key not in measured:
      latency_ms, params = int8_latency_ms(with_model(config, fields), length, ids,
                                           latency_runs)
      measured[key] = {"latency_ms": latency_ms, "params": params}
      with open(latency_path, "w") as f:
        json.dump(measured, f, indent=2)
    row = {"candidate": i, "fields": fields, **measured[key]}
    row["under_budget"] = row["latency_ms"] <= latency_budget_ms
    logging.info("Candidate %d %s: %.3f ms, %d params%s.", i, fields, row["latency_ms"],
                 row["params"], "" if row["under_budget"] else " (over budget)")
    rows.append(row)

  for row in rows:
    if not row["under_budget"]:
      continue
    proxy = with_model(config, row["fields"])
    proxy.total_steps = proxy_steps
    proxy.distill.alpha = 0.0
    proxy.init_from = None  # A pretrained encoder has the default architecture's shapes.
    proxy.evals = ml_collections.ConfigDict(
        {"validation": {"split": "validation", "every_steps": 0}})
    report = train.train_and_evaluate(
        proxy, os.path.join(workdir, f"candidate_{row['candidate']}"))
    row["validation_auc"] = report["validation"]["auc"]
  trained = [row for row in rows if "validation_auc" in row]
  for row, on_front in zip(trained, pareto_front(
      [(row["latency_ms"], row["validation_auc"]) for row in trained])):
    row["pareto"] = on_front
  results = {"latency_budget_ms": latency_budget_ms, "signature_length": length,
             "latency_texts": len(ids), "proxy_steps": proxy_steps,
             "task": input_pipeline.resolve_task(config.data), "machine_cpus": os.cpu_count(),
             "rows": rows}
  if trained:
    results["chosen"] = max(trained, key=lambda row: row["validation_auc"])["candidate"]
  with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, "search.md"), "w") as f:
    f.write(format_table(results) + "\n")
  plot(results, os.path.join(workdir, "search.png"))
  return results


def format_table(results: dict) -> str:
  fields = list(results["rows"][0]["fields"])
  lines = [f"| {' | '.join(fields)} | params | int8 ms (1 thread) | validation ROC AUC "
           "| Pareto |", "|" + "---|" * (len(fields) + 4)]
  for row in sorted(results["rows"], key=lambda row: row["latency_ms"]):
    auc = (f"{row['validation_auc']:.4f}" if "validation_auc" in row else "over budget")
    chosen = " (chosen)" if row["candidate"] == results.get("chosen") else ""
    lines.append(f"| {' | '.join(str(row['fields'][name]) for name in fields)} | "
                 f"{row['params']:,} | {row['latency_ms']:.3f} | {auc}{chosen} | "
                 f"{'yes' if row.get('pareto') else ''} |")
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  trained = [row for row in results["rows"] if "validation_auc" in row]
  figure, axes = plt.subplots(figsize=(6, 4))
  axes.scatter([r["latency_ms"] for r in trained], [r["validation_auc"] for r in trained],
               label="trained (proxy budget)")
  front = sorted((r["latency_ms"], r["validation_auc"]) for r in trained if r["pareto"])
  if front:
    axes.plot(*zip(*front), "r-", label="Pareto front")
  axes.axvline(results["latency_budget_ms"], color="gray", linestyle="--", label="budget")
  axes.set_xlabel("median ms per text, int8 TFLite, one thread")
  axes.set_ylabel("validation ROC AUC")
  axes.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def write_chosen_config(path: str, base_config: str, overrides: dict, fields: dict,
                        summary: str) -> None:
  """A config file for byteflax.main: the searched config file (its `:arg` and the
  search command's --config.* overrides) with the chosen model fields."""
  filename, _, arg = base_config.partition(":")
  text = f'''"""Written by python -m byteflax.search: {summary}

  python -m byteflax.main --config={path} --workdir=/tmp/chosen
"""

import importlib.util

BASE_CONFIG = {os.path.abspath(filename)!r}
BASE_ARG = {arg or None!r}
OVERRIDES = {overrides!r}  # The search command's --config.* flags.
MODEL = {fields!r}  # The chosen config.model fields.


def get_config(arg=None):
  spec = importlib.util.spec_from_file_location("searched_config", BASE_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or BASE_ARG)
  for dotted, value in OVERRIDES.items():
    *parents, name = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  config.model.update(MODEL)
  config.init_from = None  # A pretrained encoder has the default architecture's shapes.
  return config
'''
  with open(path, "w") as f:
    f.write(text)


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "The config to search (its model, task and optimizer).",
      lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Where the search writes its files.")
  budget = flags.DEFINE_float("latency_budget_ms", 1.0,
                              "Median ms per text (int8 TFLite, one thread) to stay within.")
  count = flags.DEFINE_integer("candidates", 12, "Candidates, the config's own model first.")
  proxy_steps = flags.DEFINE_integer("proxy_steps", 300,
                                     "Training steps of each candidate under budget.")
  space = flags.DEFINE_string("space", None,
                              "JSON {config.model field: [choices]}; default SPACE.")
  seed = flags.DEFINE_integer("seed", 0, "Draws the candidates.")
  texts = flags.DEFINE_integer("texts", 200, "Validation texts that set the median length.")
  runs = flags.DEFINE_integer("latency_runs", 100, "Timed calls per candidate.")
  flags.mark_flags_as_required(["config", "workdir"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    results = search(config.value, workdir.value, budget.value,
                     num_candidates=count.value, proxy_steps=proxy_steps.value,
                     space=json.loads(space.value) if space.value else None, seed=seed.value,
                     num_texts=texts.value, latency_runs=runs.value)
    print(format_table(results))
    if "chosen" not in results:
      raise app.UsageError(
          f"No candidate runs within {budget.value} ms here (the fastest: "
          f"{min(row['latency_ms'] for row in results['rows']):.3f} ms); raise "
          "--latency_budget_ms or add smaller choices to --space.")
    chosen = results["rows"][results["chosen"]]
    path = os.path.join(workdir.value, CHOSEN_CONFIG_FILE)
    write_chosen_config(
        path, config_flags.get_config_filename(flags.FLAGS["config"]),
        config_flags.get_override_values(flags.FLAGS["config"]), chosen["fields"],
        f"validation ROC AUC {chosen['validation_auc']:.4f} after {proxy_steps.value} proxy "
        f"steps at {chosen['latency_ms']:.3f} ms per median text (int8 TFLite, one thread), "
        f"within a {budget.value} ms budget.")
    print(f"Chosen: candidate {results['chosen']} {chosen['fields']}; "
          f"python -m byteflax.main --config={path} --workdir=...")

  app.run(run)


if __name__ == "__main__":
  main()
