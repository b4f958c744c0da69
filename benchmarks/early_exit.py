r"""Early exit: test ROC AUC against layers used and per-comment latency (int8 TFLite, 1 thread).

  python -m byteflax.early_exit --workdir=/tmp/ee --export
  python -m byteflax.export --workdir=/tmp/ee --out=/tmp/ee/export  # one plain graph
  python -m benchmarks.early_exit --workdir=/tmp/ee --plain_export=/tmp/ee/export \
      --out=benchmarks/results/early_exit

For thresholds of the validation sweep in <workdir>/early_exit.json (the chosen one, and
those whose validation mean layers are nearest to --layer_targets), it times the chained
int8 file (`early_exit.TFLiteEarlyExit`) on --texts test comments drawn at random (seed 0),
each scored once per round at batch 1 after --warmup calls, every threshold in turn on
each text (so all share the machine's load): mean and median ms per comment and the mean
exit taken. The AUCs are the sweep's, on the whole validation and test splits. With
--plain_export, the same texts through that export's model_int8.tflite (one graph, the last
exit) give the full model's latency without the exits' overhead. Writes
<out>/early_exit.json and <out>/early_exit.png and prints the table.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
import json

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from benchmarks import results_io
from byteflax import cli
from byteflax import distill
from byteflax import early_exit
from byteflax import export
from byteflax import machine
from byteflax import splitter
from byteflax import train


def timed_thresholds(report: dict, targets: list[float]) -> list[dict]:
  """Validation sweep rows: the chosen threshold's, the full model's (t = 1) and those
  nearest each target in mean layers, one per mean."""
  rows = report["sweep"]["validation"]
  chosen = [r for r in rows if r["threshold"] == report["chosen"]["threshold"]]
  full = [r for r in rows if r["threshold"] == 1.0]
  nearest = [min(rows, key=lambda r, t=t: abs(r["mean_layers"] - t)) for t in targets]
  # One row per validation mean: thresholds that send the same texts out time alike.
  unique = {}
  for row in chosen + full + nearest:
    unique.setdefault(row["mean_layers"], row)
  return sorted(unique.values(), key=lambda r: r["mean_layers"])


def benchmark(config, workdir: str, plain_export: str | None, num_texts: int, rounds: int,
              warmup: int, targets: list[float]) -> dict:
  with open(os.path.join(workdir, early_exit.REPORT_FILE)) as f:
    report = json.load(f)
  _, texts, _ = distill.split_texts(config, "test")
  rng = np.random.default_rng(0)
  chosen_texts = [texts[i] for i in rng.choice(len(texts), min(num_texts, len(texts)),
                                               replace=False)]
  encode = splitter.ByteSplitter(config.data.max_length).encode
  ids = [encode(text)[None] for text in chosen_texts]
  path = os.path.join(workdir, early_exit.EXPORT_DIR, early_exit.FILES[export.INT8])
  test_rows = {r["threshold"]: r for r in report["sweep"]["test"]}
  cases, exits = {}, {}
  for row in timed_thresholds(report, targets):
    model = early_exit.TFLiteEarlyExit(path, row["threshold"])
    cases[row["threshold"]] = lambda x, m=model: m(x)
    exits[row["threshold"]] = float(np.mean([model(x)[1] for x in ids]))
  if plain_export:
    plain = export.TFLiteClassifier(os.path.join(plain_export, export.INT8_FILE))
    cases["plain"] = plain
  timed_rounds = [export.time_each(cases, ids, warmup) for _ in range(rounds)]
  rows = []
  for key in cases:
    measured = np.concatenate([times[key] for times in timed_rounds])
    row = {"threshold": key, "mean_ms": float(measured.mean()),
           "median_ms": float(np.median(measured))}
    if key != "plain":
      validation = next(r for r in report["sweep"]["validation"] if r["threshold"] == key)
      row.update(validation_mean_layers=validation["mean_layers"],
                 validation_roc_auc=validation["roc_auc"],
                 timed_texts_mean_exit=exits[key],
                 test_mean_layers=test_rows[key]["mean_layers"],
                 test_roc_auc=test_rows[key]["roc_auc"],
                 chosen=key == report["chosen"]["threshold"])
    rows.append(row)
  full = next(r for r in rows if r["threshold"] == 1.0)
  return {"workdir": workdir, "texts": len(ids), "rounds": rounds, "threads": 1,
          "machine": machine.describe(), "tolerance": report["tolerance"],
          "per_exit_roc_auc": report["per_exit_roc_auc"],
          "full_model_chain_mean_ms": full["mean_ms"], "rows": rows}


def format_table(results: dict) -> str:
  lines = ["| threshold | val mean layers | val ROC AUC | test mean layers | test ROC AUC | "
           "mean ms / comment | median ms |", "|---|---|---|---|---|---|---|"]
  for row in results["rows"]:
    if row["threshold"] == "plain":
      lines.append(f"| plain int8 graph (no exits) | 3 | | 3 | | {row['mean_ms']:.3f} | "
                   f"{row['median_ms']:.3f} |")
      continue
    mark = " (chosen)" if row["chosen"] else ""
    lines.append(f"| {row['threshold']:.4f}{mark} | {row['validation_mean_layers']:.2f} | "
                 f"{row['validation_roc_auc']:.4f} | {row['test_mean_layers']:.2f} | "
                 f"{row['test_roc_auc']:.4f} | {row['mean_ms']:.3f} | "
                 f"{row['median_ms']:.3f} |")
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in results["rows"] if r["threshold"] != "plain"]
  figure, (by_layers, by_latency) = plt.subplots(1, 2, figsize=(11, 4.2))
  for split in ("validation", "test"):
    by_layers.plot([r[f"{split}_mean_layers"] for r in rows],
                   [r[f"{split}_roc_auc"] for r in rows], marker="o", label=split)
  by_layers.set(xlabel="mean QRNN layers per comment", ylabel="ROC AUC",
                title="AUC against layers used")
  by_latency.plot([r["mean_ms"] for r in rows], [r["test_roc_auc"] for r in rows],
                  marker="o", label="early exit (int8 chain)")
  plain = [r for r in results["rows"] if r["threshold"] == "plain"]
  if plain:
    by_latency.axvline(plain[0]["mean_ms"], color="gray", linestyle="--",
                       label="plain int8 graph")
  by_latency.set(xlabel="mean ms per comment (int8 TFLite, 1 thread)", ylabel="test ROC AUC",
                 title="AUC against latency")
  for axis in (by_layers, by_latency):
    axis.grid(True, alpha=0.3)
    axis.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "The early-exit run's config; default: its own config.json.",
      lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "The run, after python -m byteflax.early_exit "
                                 "--export.")
  plain_export = flags.DEFINE_string("plain_export", None,
                                      "byteflax.export of the same run: the one-graph baseline.")
  out = flags.DEFINE_string("out", None, "Directory for early_exit.json and .png.")
  texts = flags.DEFINE_integer("texts", 500, "Test texts timed per threshold and round.")
  rounds = flags.DEFINE_integer("rounds", 2, "Rounds over all thresholds.")
  warmup = flags.DEFINE_integer("warmup", 20, "Untimed calls before each timing.")
  layer_targets = flags.DEFINE_list(
      "layer_targets", ["1.0", "1.25", "1.5", "1.75", "2.0", "2.5", "3.0"],
      "Validation mean layers whose nearest thresholds are timed.")
  flags.mark_flags_as_required(["workdir"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    results = benchmark(train.run_config(workdir.value, config.value), workdir.value,
                        plain_export.value, texts.value, rounds.value, warmup.value,
                        [float(t) for t in layer_targets.value])
    results_io.report(results, format_table(results), out.value, "early_exit", plot)

  app.run(run)


if __name__ == "__main__":
  main()
