r"""Early exit: a ByteQRNN with a classifier after every layer stops at the first confident one.

  python -m byteflax.main --config=configs/byteqrnn_toxicity.py:early_exit --workdir=/tmp/ee
  python -m byteflax.early_exit --workdir=/tmp/ee [--tolerance=0.005] [--export] [--config=...]

Training (`config.model.early_exit=True`): the exits (pooling + head after QRNN layer k) are
trained jointly, the loss a weighted mean of theirs (`step.exit_settings`: by default
weights 1, 2, 3, deeper exits weigh more). The last exit is the full model.

The rule (one threshold t for every exit, as CALM's): a text leaves at the first exit whose
confidence reaches t; the last exit always answers. Confidence of a logit vector is
min over labels of max(p, 1 - p), p = sigmoid(logit): how sure the exit is of every label.
Its score (for ROC AUC) is the logit of the exit it left at. t = 1 never exits early (the
full model, exactly); t = 0.5 always leaves at the first exit (`is_confident`).

Thresholds are chosen on validation only: the sweep runs over the validation split's own
confidences, and the chosen t is the one with the fewest layers on average whose validation
ROC AUC is within --tolerance of the full model's. Test is measured at the sweep's
thresholds after that and reported beside it, never used to choose. The command writes
<workdir>/early_exit.json (per-exit AUC, the sweep, the chosen t, test at t).

Inference: `staged_predict` (JAX) runs layer k only for the texts still undecided after
exit k - 1 (`ByteQRNN(resume=..., with_encodings=True)`), so their layers are not run.
With --export, `convert` writes <workdir>/early_exit/model_{float,int8}.tflite: signatures
`length_<n>_exit_<k>` chained by the caller (`TFLiteEarlyExit`): exit 1 takes the ids and
returns logits plus the encodings and mask that exit 2 takes, and so on. One graph per
exit, rather than one graph with conditionals, because TFLite runs a graph whole: control
flow ops would keep every layer in the graph and the XNNPack delegate does not take them,
while a chain of plain graphs lets the app stop after any of them at no cost.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import json

from absl import app
from absl import flags
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from byteflax import cli
from byteflax import export
from byteflax import metrics
from byteflax import splitter
from byteflax import train

REPORT_FILE = "early_exit.json"
EXPORT_DIR = "early_exit"
FILES = {export.FLOAT32: export.FLOAT_FILE, export.INT8: export.INT8_FILE}


def confidence(logits: np.ndarray) -> np.ndarray:
  """[..., labels] logits -> [...] min over labels of max(p, 1 - p) = sigmoid(|logit|)."""
  return 1.0 / (1.0 + np.exp(-np.abs(np.asarray(logits, np.float64)).min(axis=-1)))


def is_confident(logits: np.ndarray, threshold: float) -> np.ndarray:
  """[..., labels] -> [...] bool: confidence >= threshold, compared in logit space (|logit|
  >= log(t / (1 - t))) so that t = 1 is never reached and t = 0.5 always is, exactly."""
  bound = np.inf if threshold >= 1 else np.log(threshold / (1 - threshold))
  return np.abs(np.asarray(logits)).min(axis=-1) >= bound


def apply_rule(exit_logits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """exit_logits [exits, n, labels] -> (logits [n, labels] of the exit each text leaves at,
  that exit [n], 1-based): the first whose confidence reaches threshold, else the last."""
  confident = is_confident(exit_logits, threshold)
  confident[-1] = True
  exits = np.argmax(confident, axis=0)
  return np.take_along_axis(exit_logits, exits[None, :, None], axis=0)[0], exits + 1


def mean_auc(labels: np.ndarray, logits: np.ndarray) -> float:
  """ROC AUC averaged over labels: labels [n, labels] 0/1, logits [n, labels]."""
  return float(np.mean([metrics.roc_auc(labels[:, i], logits[:, i])
                        for i in range(labels.shape[1])]))


def default_thresholds(validation_exit_logits: np.ndarray, count: int = 200) -> np.ndarray:
  """Thresholds at quantiles of the validation confidences of the early exits (so each step
  moves a similar share of texts), plus 1.0 (never exit early)."""
  early = confidence(validation_exit_logits[:-1]).ravel()
  return np.unique(np.append(np.quantile(early, np.linspace(0, 1, count)), 1.0))


def sweep(exit_logits: np.ndarray, labels: np.ndarray, thresholds: Sequence[float]
          ) -> list[dict[str, float]]:
  """For each threshold: mean exit (layers run per text), ROC AUC, share leaving at each exit."""
  rows = []
  for threshold in thresholds:
    logits, exits = apply_rule(exit_logits, threshold)
    rows.append({"threshold": float(threshold), "mean_layers": float(exits.mean()),
                 "roc_auc": mean_auc(labels, logits),
                 "exit_shares": [float(np.mean(exits == k))
                                 for k in range(1, len(exit_logits) + 1)]})
  return rows


def choose_threshold(validation_sweep: list[dict[str, float]], full_auc: float,
                     tolerance: float) -> dict[str, float]:
  """The validation sweep's row with the fewest mean layers among those whose ROC AUC is at
  least full_auc - tolerance (ties: the higher threshold). t = 1 always qualifies."""
  eligible = [row for row in validation_sweep if row["roc_auc"] >= full_auc - tolerance]
  return min(eligible, key=lambda row: (row["mean_layers"], -row["threshold"]))


def split_logits(trainer: train.Trainer, variables, split: str, outputs: str = "all_exits"
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Every output's logits on a split: ([outputs, n, labels], labels [n, labels]); outputs
  is the model's keyword that stacks them ("all_exits"; "all_dims" for Matryoshka)."""
  apply = jax.jit(functools.partial(trainer.model.apply, **{outputs: True}))
  logits, labels = [], []
  for batch in trainer.objective.eval_batches(split):
    real = batch["weights"] > 0
    logits.append(np.asarray(apply(variables, batch["inputs"]))[:, real])
    labels.append(batch["labels"][real])
  return np.concatenate(logits, axis=1), np.concatenate(labels)


def staged_predict(model, variables, ids: np.ndarray, threshold: float
                   ) -> tuple[np.ndarray, np.ndarray]:
  """JAX early-exit inference: ids [n, length] -> (logits [n, labels], exit [n], 1-based).

  Layer k runs only on the texts no earlier exit was confident about (the rows are
  gathered), so the layers past a text's exit are not computed for it.
  """
  exits_count = model.num_exits
  logits = np.zeros((len(ids), model.num_labels), np.float32)
  exits = np.zeros(len(ids), np.int32)
  rows = np.arange(len(ids))
  first = jax.jit(functools.partial(model.apply, depth=1, with_encodings=True))
  resumed = jax.jit(lambda variables, encodings, mask, depth: model.apply(
      variables, None, depth=depth, resume=(encodings, mask, depth - 1),
      with_encodings=True), static_argnames=("depth",))
  for depth in range(1, exits_count + 1):
    if depth == 1:
      stage_logits, encodings = first(variables, ids)
    else:
      stage_logits, encodings = resumed(variables, *encodings, depth=depth)
    stage_logits = np.asarray(stage_logits)
    done = is_confident(stage_logits, threshold) | (depth == exits_count)
    logits[rows[done]] = stage_logits[done]
    exits[rows[done]] = depth
    rows = rows[~done]
    if not rows.size:
      break
    encodings = tuple(e[~done] for e in encodings)
  return logits, exits


def convert(model, params, lengths: Sequence[int], quantization: str = export.FLOAT32
            ) -> bytes:
  """A TFLite flatbuffer with signatures `length_<n>_exit_<k>` (one per length and exit).

  exit 1: `ids` int32 [1, n] -> `logits`, `probabilities` [1, labels], `encodings`
  float32 [1, m, features] and `mask` bool [1, m] (m = n / GBST downsample rate); exit
  k > 1: that exit's `encodings` and `mask` -> the same outputs (the last exit: logits and
  probabilities only). quantization: export.FLOAT32 or export.INT8 (dynamic range).
  """
  if quantization not in FILES:
    raise ValueError(f"quantization must be one of {list(FILES)}, got {quantization!r}.")
  variables = {"params": params}
  exits_count = model.num_exits

  def outputs(depth, logits, encodings):
    named = {"logits": logits, "probabilities": jax.nn.sigmoid(logits)}
    if depth < exits_count:
      named.update(encodings=encodings[0], mask=encodings[1])
    return named

  functions, signatures = {}, {}
  for depth in range(1, exits_count + 1):
    if depth == 1:
      function = lambda ids: outputs(1, *model.apply(variables, ids, depth=1,
                                                     with_encodings=True))
    else:
      function = lambda encodings, mask, depth=depth: outputs(depth, *model.apply(
          variables, None, depth=depth, resume=(encodings, mask, depth - 1),
          with_encodings=True))
    functions[f"exit_{depth}"] = export.to_tf(function)
  for length in lengths:
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    _, (encodings, mask) = jax.eval_shape(
        functools.partial(model.apply, depth=1, with_encodings=True), variables, ids)
    for depth in range(1, exits_count + 1):
      specs = ([tf.TensorSpec(ids.shape, tf.int32, name="ids")] if depth == 1 else
               [tf.TensorSpec(encodings.shape, tf.float32, name="encodings"),
                tf.TensorSpec(mask.shape, tf.bool, name="mask")])
      signatures[signature_key(length, depth)] = (
          functions[f"exit_{depth}"].get_concrete_function(*specs))
  return export.to_tflite(functions, signatures, quantization)


def signature_key(length: int, depth: int) -> str:
  return f"length_{length}_exit_{depth}"


class TFLiteEarlyExit:
  """An exported early-exit model in the LiteRT interpreter: one text at a time, each at the
  shortest signature length that holds it, exits chained until one is confident."""

  def __init__(self, path: str, threshold: float, num_threads: int = 1):
    from ai_edge_litert import interpreter as litert  # Heavy; only needed here.
    self.interpreter = litert.Interpreter(model_path=path, num_threads=num_threads)
    keys = self.interpreter.get_signature_list()
    self.runners = {key: self.interpreter.get_signature_runner(key) for key in keys}
    self.lengths = sorted({int(key.split("_")[1]) for key in keys})
    self.num_exits = max(int(key.rsplit("_", 1)[1]) for key in keys)
    self.threshold = threshold

  def __call__(self, ids: np.ndarray, max_exit: int | None = None
               ) -> tuple[np.ndarray, int]:
    """ids [1, width] int32 right-padded with 0 -> (logits [1, labels], exit it left at).
    max_exit: stop there at the latest (default: the last exit)."""
    used = int((np.asarray(ids) != splitter.PAD_ID).sum())
    length = next((n for n in self.lengths if n >= used), None)
    if length is None:
      raise ValueError(f"The text has {used} ids; the export reads at most "
                       f"{self.lengths[-1]}.")
    last = max_exit or self.num_exits
    inputs = {"ids": export.cut_ids(np.asarray(ids, np.int32)[:, :used], length)}
    for depth in range(1, last + 1):
      outputs = self.runners[signature_key(length, depth)](**inputs)
      if depth == last or is_confident(outputs["logits"], self.threshold)[0]:
        return outputs["logits"], depth
      inputs = {"encodings": outputs["encodings"], "mask": outputs["mask"]}
    raise AssertionError("unreachable")


def evaluate(config: ml_collections.ConfigDict, workdir: str, tolerance: float,
             write_export: bool = False) -> dict:
  """Per-exit AUC, the threshold sweep on validation and test, the chosen threshold;
  written to <workdir>/early_exit.json (and the TFLite files with write_export)."""
  trainer = train.Trainer(config)
  if trainer.model.num_exits < 2:
    raise ValueError("This config's model has one exit; train with "
                     "config.model.early_exit=True (configs/byteqrnn_toxicity.py:early_exit).")
  variables, step = train.load_variables(workdir, trainer)
  validation_logits, validation_labels = split_logits(trainer, variables, "validation")
  test_logits, test_labels = split_logits(trainer, variables, "test")
  thresholds = default_thresholds(validation_logits)
  validation_sweep = sweep(validation_logits, validation_labels, thresholds)
  full_auc = mean_auc(validation_labels, validation_logits[-1])
  chosen = choose_threshold(validation_sweep, full_auc, tolerance)
  test_sweep = sweep(test_logits, test_labels, thresholds)
  report = {
      "checkpoint_step": step, "tolerance": tolerance,
      "per_exit_roc_auc": {
          "validation": [mean_auc(validation_labels, l) for l in validation_logits],
          "test": [mean_auc(test_labels, l) for l in test_logits]},
      "chosen": {"threshold": chosen["threshold"], "validation": chosen,
                 "test": next(row for row in test_sweep
                              if row["threshold"] == chosen["threshold"])},
      "sweep": {"validation": validation_sweep, "test": test_sweep},
  }
  (epath.Path(workdir) / REPORT_FILE).write_text(json.dumps(report, indent=2))
  if write_export:
    out = epath.Path(workdir) / EXPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    params = jax.device_get(variables["params"])
    model = export.inference_model(trainer)
    for quantization, filename in FILES.items():
      (out / filename).write_bytes(convert(
          model, params, export.default_lengths(config.data.max_length), quantization))
  return report


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "The config the run in --workdir was trained with; default: the "
      "run's own config.json.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "An early-exit run.")
  tolerance = flags.DEFINE_float(
      "tolerance", 0.005, "Largest validation ROC AUC loss against the full model.")
  write_export = flags.DEFINE_bool(
      "export", False, f"Also write <workdir>/{EXPORT_DIR}/ with the chained-exit TFLite "
      "files.")
  flags.mark_flags_as_required(["workdir"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    report = evaluate(train.run_config(workdir.value, config.value), workdir.value,
                      tolerance.value, write_export.value)
    chosen = report["chosen"]
    print(json.dumps({"per_exit_roc_auc": report["per_exit_roc_auc"],
                      "threshold": chosen["threshold"],
                      "validation": chosen["validation"], "test": chosen["test"]}, indent=2))

  app.run(run)


if __name__ == "__main__":
  main()
