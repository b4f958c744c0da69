r"""A Markdown model card for a trained run.

  python -m byteflax.report --workdir=/tmp/byteqrnn [--export_dir=/tmp/byteqrnn/export]

Writes <workdir>/model_card/model_card.md (or --out) with PNG plots next to it: the config,
the task and its split sizes, the final metrics (eval.json), a threshold table (precision,
recall, F1 at fixed thresholds) and reliability bins computed from the selected checkpoint's
predictions, the model's size, and with --export_dir the TFLite files' sizes and, when
benchmarks/export_benchmark.py has been run on it, their AUC and latency. Plots: the
training curves (metrics.jsonl), precision / recall / F1 by threshold and the reliability
diagram. Everything is read from the workdir: the config is its config.json.
"""

from __future__ import annotations

import datetime
import json
import os

from absl import app
from absl import flags
from etils import epath
import jax
import ml_collections
import numpy as np

from byteflax import cli
from byteflax import export
from byteflax import input_pipeline
from byteflax import machine
from byteflax import metrics as metrics_lib
from byteflax import paths
from byteflax import train
from tasks import toxicity

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RELIABILITY_BINS = 10


def predict(config: ml_collections.ConfigDict, workdir: str, split: str
            ) -> tuple[np.ndarray, np.ndarray, int]:
  """Probabilities and labels `[examples, labels]` of the newest checkpoint on a split,
  and the checkpoint's step."""
  trainer = train.Trainer(config)
  variables, step = train.load_variables(workdir, trainer)
  apply = jax.jit(lambda v, x: jax.nn.sigmoid(trainer.model.apply(v, x, train=False)))
  probs, labels = [], []
  for batch in input_pipeline.eval_batches(trainer.task_name, split, config.data):
    real = batch["weights"] > 0
    probs.append(np.asarray(apply(variables, batch["inputs"]))[real])
    labels.append(batch["labels"][real])
  return np.concatenate(probs), np.concatenate(labels), step


def threshold_table(labels: np.ndarray, probs: np.ndarray,
                    thresholds=THRESHOLDS) -> list[dict[str, float]]:
  """Precision, recall, F1 and the flagged fraction when `prob >= t`, for one label `[n]`."""
  labels = labels.astype(bool)
  rows = []
  for t in thresholds:
    flagged = probs >= t
    true_pos = int(np.sum(flagged & labels))
    precision = true_pos / flagged.sum() if flagged.any() else float("nan")
    recall = true_pos / labels.sum() if labels.any() else float("nan")
    f1 = (2 * precision * recall / (precision + recall) if true_pos else 0.0)
    rows.append({"threshold": float(t), "precision": float(precision),
                 "recall": float(recall), "f1": float(f1),
                 "flagged": float(flagged.mean())})
  return rows


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = RELIABILITY_BINS
                     ) -> tuple[list[dict[str, float]], float]:
  """Equal-width probability bins: count, mean predicted probability, observed positive
  rate; and the expected calibration error (count-weighted mean |predicted - observed|)."""
  index = np.minimum((probs * bins).astype(int), bins - 1)
  rows, error = [], 0.0
  for b in range(bins):
    members = index == b
    if not members.any():
      continue
    predicted, observed = float(probs[members].mean()), float(labels[members].mean())
    rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(members.sum()),
                 "predicted": predicted, "observed": observed})
    error += members.sum() * abs(predicted - observed)
  return rows, float(error / len(probs))


def _save_png(figure, path: epath.Path) -> None:
  with path.open("wb") as f:  # A file object: savefig's own paths are local only.
    figure.savefig(f, format="png", dpi=110)


def _plots(out_dir: epath.Path, workdir: str, label: str, labels: np.ndarray,
           probs: np.ndarray, reliability: list[dict[str, float]]) -> list[tuple[str, str]]:
  """Writes the PNGs; returns [(caption, file name)]."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top  (the "bench" extra)
  except ImportError as error:
    raise ImportError("The model card's plots need matplotlib: pip install -e '.[bench]'."
                      ) from error
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  written = []

  history = []
  metrics_path = epath.Path(workdir) / "metrics.jsonl"
  if metrics_path.exists():
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()
               if line.strip()]
  train_points = [(r["step"], r["train/loss"]) for r in history if "train/loss" in r]
  validation_points = [(r["step"], r["validation/auc"]) for r in history
                       if "validation/auc" in r]
  if train_points:
    figure, ax = pyplot.subplots(figsize=(6, 4))
    ax.plot(*zip(*train_points), label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    if validation_points:
      right = ax.twinx()
      right.plot(*zip(*validation_points), "o-", color="C1", label="validation ROC AUC")
      right.set_ylabel("validation ROC AUC")
      right.legend(loc="upper right")
    ax.legend(loc="upper left")
    figure.tight_layout()
    _save_png(figure, out_dir / "training.png")
    written.append(("Training curves", "training.png"))

  grid = np.linspace(0.01, 0.99, 99)
  table = threshold_table(labels, probs, grid)
  figure, ax = pyplot.subplots(figsize=(6, 4))
  for key in ("precision", "recall", "f1"):
    ax.plot(grid, [row[key] for row in table], label=key)
  ax.set_xlabel(f"threshold on P({label})")
  ax.legend()
  ax.grid(True, alpha=0.3)
  figure.tight_layout()
  _save_png(figure, out_dir / "thresholds.png")
  written.append(("Precision, recall and F1 by threshold (test)", "thresholds.png"))

  figure, ax = pyplot.subplots(figsize=(4.5, 4.5))
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
  ax.plot([r["predicted"] for r in reliability], [r["observed"] for r in reliability], "o-",
          label="model")
  ax.set_xlabel("mean predicted probability")
  ax.set_ylabel("observed positive rate")
  ax.legend()
  figure.tight_layout()
  _save_png(figure, out_dir / "reliability.png")
  written.append(("Reliability diagram (test)", "reliability.png"))
  pyplot.close("all")
  return written


def _split_sizes(config: ml_collections.ConfigDict) -> dict[str, tuple[int, np.ndarray]]:
  """{split: (examples, positive rate per label)} as the model reads the task."""
  task_name = input_pipeline.resolve_task(config.data)
  sizes = {}
  for split in ("train", "validation", "test"):
    labels = np.concatenate([b["labels"][b["weights"] > 0] for b in
                             input_pipeline.eval_batches(task_name, split, config.data)])
    sizes[split] = (len(labels), labels.mean(axis=0))
  return sizes


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(row) + " |" for row in rows])


def _data_name(config: ml_collections.ConfigDict, task: str) -> str:
  """The data a run trained on, for a title: its training file's name, or the task."""
  return os.path.basename(config.data.train_path) if config.data.train_path else task


def _data_description(config: ml_collections.ConfigDict, task: str) -> str:
  """Where the splits come from: the user's files (a missing split carved from the
  training file, as `tasks.user_files.read_file_splits` does), or the registered task."""
  if not config.data.train_path:
    return f"Task `{task}`."
  carved = (f"{config.data.validation_fraction:.0%} of the training file's distinct texts "
            f"(seed {config.data.split_seed})")
  files = [f"{split} `{path}`" if path else f"{split}: {carved}"
           for split, path in (("train", config.data.train_path),
                               ("validation", config.data.validation_path),
                               ("test", config.data.test_path))]
  positive = config.data.get("positive_label")  # Absent from older runs' config.json.
  return (f"Files ({'; '.join(files)}); text `{config.data.text_key}`, labels "
          f"{', '.join(f'`{name}`' for name in input_pipeline.label_keys(config.data))}"
          f"{f' (1 where `{positive}`, else 0)' if positive is not None else ''}.")


def write_card(workdir: str, export_dir: str | None = None, out: str | None = None,
               latency_runs: int = 100) -> str:
  """Writes the card and its plots; returns the card's path."""
  config = train.run_config(workdir)
  eval_path = epath.Path(workdir) / "eval.json"
  if not eval_path.exists():
    raise FileNotFoundError(f"No eval.json in {workdir}; finish training (or run "
                            "byteflax.main --mode=eval) first.")
  evaluation = json.loads(eval_path.read_text())
  probs, labels, step = predict(config, workdir, "test")
  label_names = toxicity.label_names(evaluation["task"])
  out = paths.absolute(out or epath.Path(workdir) / "model_card" / "model_card.md")
  out_dir = out.parent
  out_dir.mkdir(parents=True, exist_ok=True)

  lines = [f"# Model card: {config.model_name} on {_data_name(config, evaluation['task'])}", "",
           f"Generated {datetime.date.today().isoformat()} by `python -m byteflax.report "
           f"--workdir={workdir}" + (f" --export_dir={export_dir}" if export_dir else "")
           + f"` from the checkpoint at step {step}.", ""]
  if evaluation["step"] != step:
    lines += [f"**Note**: eval.json is from step {evaluation['step']}, the run's model is "
              f"the checkpoint of step {step}; run `byteflax.main --mode=eval` to refresh "
              "it.", ""]

  lines += ["## Model", "",
            f"- Architecture: `{config.model_name}`, {evaluation['num_params']:,} parameters "
            f"({4 * evaluation['num_params'] / 1e6:.2f} MB as float32); labels: "
            f"{', '.join(label_names)} (independent sigmoids).",
            f"- Input: UTF-8 bytes (id = byte + 3, EOS = 1, pad = 0), at most "
            f"{config.data.max_length} bytes; longer texts are cut.",
            f"- Training: {evaluation['step']} steps of batch {config.data.batch_size}, "
            f"AdamW lr {config.optim.learning_rate} ({config.optim.schedule}), seed "
            f"{config.seed}; quantization-aware: {bool(config.get('quant', {}).get('enabled'))}"
            + (f"; distilled from `{config.distill.teacher}` (alpha {config.distill.alpha}, "
               f"temperature {config.distill.temperature}, teacher term "
               f"{config.distill.get('soft_loss', 'cross_entropy')})"
               if config.get("distill") and config.distill.alpha else "") + ".", "",
            "<details><summary>Full config</summary>", "", "```json",
            config.to_json_best_effort(indent=2), "```", "</details>", ""]

  sizes = _split_sizes(config)
  lines += ["## Data", "", _data_description(config, evaluation["task"]), ""]
  lines += _table(["split", "examples", "positive rate"],
                  [[split, f"{n:,}", ", ".join(f"{rate:.1%}" for rate in rates)]
                   for split, (n, rates) in sizes.items()])
  lines += [""]

  lines += ["## Metrics", "", "From `eval.json` (ROC AUC; accuracy at 0.5; F1 at the best "
            "threshold of that split):", ""]
  metric_rows = []
  for split in ("validation", "test"):
    if split in evaluation:
      m = evaluation[split]
      metric_rows.append([split, f"{m['auc']:.4f}", f"{m['accuracy']:.4f}", f"{m['f1']:.4f}",
                          f"{m['loss']:.4f}"])
  lines += _table(["split", "ROC AUC", "accuracy", "best F1", "loss"], metric_rows)
  lines += [""]

  plots = []
  for column, label in enumerate(label_names):
    y, p = labels[:, column], probs[:, column]
    f1, best_threshold = metrics_lib.best_f1(y, p)
    lines += [f"## Thresholds and calibration: {label} (test split)", "",
              f"ROC AUC {metrics_lib.roc_auc(y, p):.4f} on {len(y):,} examples "
              f"({int(y.sum()):,} positive). Flag when P({label}) >= threshold:", ""]
    table = threshold_table(y, p) + threshold_table(y, p, (best_threshold,))
    lines += _table(["threshold", "precision", "recall", "F1", "flagged"],
                    [[f"{r['threshold']:.3f}" + (" (best F1)" if i == len(THRESHOLDS) else ""),
                      f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                      f"{r['flagged']:.1%}"] for i, r in enumerate(table)])
    reliability, ece = reliability_bins(y, p)
    lines += ["", f"Reliability (equal-width bins; expected calibration error {ece:.4f}):",
              ""]
    lines += _table(["P range", "examples", "mean predicted", "observed rate"],
                    [[f"{r['low']:.1f}-{r['high']:.1f}", f"{r['count']:,}",
                      f"{r['predicted']:.3f}", f"{r['observed']:.3f}"] for r in reliability])
    lines += [""]
    if column == 0:  # The plots show the first label.
      plots = _plots(out_dir, workdir, label, y, p, reliability)

  lines += ["## Size and latency", ""]
  size_rows = [["JAX params (float32)", f"{4 * evaluation['num_params']:,}", "-", "-"]]
  if export_dir:
    with open(os.path.join(export_dir, export.MANIFEST_FILE)) as f:
      length = json.load(f)["input"]["shape"][1]
    ids, _ = input_pipeline.task_examples(config.data, "test", length)
    # LiteRT AUCs are export_benchmark's (a full pass per model); latency is cheap to measure.
    benchmark_path = os.path.join(export_dir, "benchmark.json")
    litert_auc = {}
    if os.path.exists(benchmark_path):
      with open(benchmark_path) as f:
        litert_auc = {row["name"]: row["auc"] for row in json.load(f)["rows"]}
    for filename in export.exported_files(export_dir):
      path = os.path.join(export_dir, filename)
      classifier = export.TFLiteClassifier(path)
      auc = litert_auc.get("tflite_" + filename.split("_")[1].split(".")[0])
      size_rows.append([f"TFLite `{filename}` ({length} bytes in)", f"{os.path.getsize(path):,}",
                        f"{auc:.4f}" if auc is not None else "-",
                        f"{export.median_latency_ms(classifier, ids, latency_runs):.2f}"])
    cpu = machine.describe()
    lines += [f"Latency: median of {latency_runs} single test examples, batch 1, one thread, "
              f"LiteRT interpreter, on the machine that wrote this card ({cpu['cpu']}; "
              f"{', '.join(cpu['features']) or 'none'} of avx2, avx512f and the int8 dot-product "
              "instructions; without the latter int8 ran no faster than float32 in "
              "docs/benchmarks.md). LiteRT AUC: from "
              "`benchmarks/export_benchmark.py` (its benchmark.json), when it was run.", ""]
  lines += _table(["model", "bytes", "test ROC AUC (LiteRT)", "ms / example"], size_rows)
  lines += [""]

  lines += ["## Plots", ""]
  lines += [f"![{caption}]({filename})" for caption, filename in plots]
  lines += ["", "## Limitations", "",
            f"Metrics are from one training run (seed {config.seed}) on the splits above"
            + ("; the fortunes' labels are per source file (noisy)"
               if evaluation["task"].startswith("fortunes_") else "")
            + ". Check the threshold table against your own data before choosing an "
            "operating point.", ""]
  out.write_text("\n".join(lines))
  return str(out)


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  workdir = flags.DEFINE_string("workdir", None, "A byteflax.main workdir (trained).")
  export_dir = flags.DEFINE_string("export_dir", None, "Its byteflax.export --out, if any.")
  out = flags.DEFINE_string("out", None,
                            "Card path; default <workdir>/model_card/model_card.md.")
  latency_runs = flags.DEFINE_integer("latency_runs", 100,
                                      "Timed single-example runs per TFLite model.")
  flags.mark_flags_as_required(["workdir"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(f"Wrote {write_card(workdir.value, export_dir.value, out.value, latency_runs.value)}")

  app.run(run)


if __name__ == "__main__":
  main()
