r"""Pretraining's loss curves and what they buy: one figure from the saved runs.

  python -m benchmarks.pretraining_curves --results=benchmarks/results/pretrain_corpus

Left: the pretraining run's train and validation loss (nats per target byte) against steps,
from <results>/metrics.jsonl. Right: the classifier fine-tunes' train loss against steps,
from every <results>/finetune_<task>_s<seed>/ (from the pretrained encoder) and
scratch_<task>_s<seed>/ (from random weights) directory with a metrics.jsonl, each
labelled with its test ROC AUC (eval.json). Writes <results>/curves.png and prints the AUCs
with their mean per group.
"""

import glob
import json
import os

from absl import app
from absl import flags
import numpy as np


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the rows that logged `key`."""
  pairs = [(row["step"], row[key]) for row in rows if key in row]
  return [step for step, _ in pairs], [value for _, value in pairs]


def finetune_runs(results: str) -> dict[str, list[tuple[str, dict, list[dict]]]]:
  """Group ("pretrained" / "random") -> [(run name, eval.json, metrics rows)], sorted."""
  groups = {"pretrained": [], "random": []}
  for run in sorted(glob.glob(os.path.join(results, "*_s[0-9]*"))):
    name = os.path.basename(run)
    group = ("pretrained" if name.startswith("finetune_") else
             "random" if name.startswith("scratch_") else None)
    metrics = os.path.join(run, "metrics.jsonl")
    if group is None or not os.path.exists(metrics):
      continue
    with open(os.path.join(run, "eval.json")) as f:
      report = json.load(f)
    groups[group].append((name, report, read_jsonl(metrics)))
  return groups


def plot(results: str, path: str) -> dict[str, list[float]]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, (pretraining, finetuning) = plt.subplots(1, 2, figsize=(12, 4.5))
  rows = read_jsonl(os.path.join(results, "metrics.jsonl"))
  pretraining.plot(*series(rows, "train/loss"), label="train", alpha=0.7)
  pretraining.plot(*series(rows, "validation/loss"), marker="o", label="validation")
  pretraining.set(xlabel="pretraining step (batch 64 x 256 bytes)",
                  ylabel="nats per target byte", title="Span corruption on the corpus",
                  ylim=(2.0, 3.5))
  aucs = {}
  for group, color in (("pretrained", "tab:blue"), ("random", "tab:orange")):
    aucs[group] = []
    for name, report, metrics in finetune_runs(results)[group]:
      auc = report["test"]["auc"]
      aucs[group].append(auc)
      finetuning.plot(*series(metrics, "train/loss"), color=color, alpha=0.8,
                      label=f"{name}: test ROC AUC {auc:.4f}")
  finetuning.set(xlabel="fine-tuning step (batch 32)", ylabel="train loss (labels only)",
                 title="Fine-tuning on the comments: pretrained encoder vs random weights")
  for axis in (pretraining, finetuning):
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  return aucs


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  results = flags.DEFINE_string(
      "results", "benchmarks/results/pretrain_corpus",
      "The pretraining run's saved files and its fine-tunes' directories.")

  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    aucs = plot(results.value, os.path.join(results.value, "curves.png"))
    for group, values in aucs.items():
      if values:
        print(f"{group}: test ROC AUC {' '.join(f'{v:.4f}' for v in values)}; "
              f"mean {np.mean(values):.4f}")

  app.run(run)


if __name__ == "__main__":
  main()
