r"""Exports a trained classifier to TFLite: float32 and full-integer int8, with a manifest.

  python -m byteflax.export --workdir=/tmp/byteqrnn_qat --out=/tmp/byteqrnn_qat/export \
      [--length=1024] [--lengths=32,64,128,256,512,1024] [--config=<file> <overrides>]

(the run's own config.json unless --config is given) writes `model_float.tflite`,
`model_int8.tflite`, `model_int8_full.tflite` and `manifest.json` into --out. The path is
jax2tf (graph mode, no XLA ops) -> `tf.lite.TFLiteConverter` -> the LiteRT interpreter. Two
int8 forms, for two kinds of hardware (docs/export.md measures both):
- `model_int8.tflite`, for CPUs (phones): int8 weights (per output channel); each conv /
  matmul quantizes its input on the fly and runs in int8 (XNNPack's dynamically quantized
  kernels), the elementwise recurrence stays float32. No calibration. The fastest file on a
  CPU, and the closest to the float model.
- `model_int8_full.tflite`, for integer-only accelerators (NPUs, DSPs, Edge TPU): int8
  weights and int8 activations everywhere, ranges calibrated on a representative set of
  the task's training examples (the `quant_stats` ranges of a quantization-aware run are
  what made the weights robust to it). On a CPU its int8 elementwise ops, each rescaling,
  make it slower than float.

On-device contract (both models):
- signatures `length_<n>`, one per input length n (--lengths; by default powers of two from
  32 up to the longest, --length), sharing one copy of the weights: a text runs at the
  shortest n that holds it, so a 150-byte comment costs 256 bytes of compute, not 1,024.
- input `ids`: int32 `[1, n]` byte ids. The byte splitter is a few lines in any
  language: take the first length - 1 bytes of the text's UTF-8 encoding, map each byte b
  to b + 3, append 1 (end of sequence), pick the smallest n >= the number of ids, and
  right-pad with 0 to n. (0 = pad, 1 = EOS, 2 = unknown, unused; vocabulary 259, identical
  to seqio.ByteVocabulary / ByT5; the same truncation as training's config.data.max_length.)
- outputs: `probabilities` float32 `[1, num_labels]` (sigmoid, one per label) and `logits`
  float32 `[1, num_labels]`. In the full-int8 model both are dequantized from int8; the logits
  have the finer resolution near 0 and 1, so rank with them (ROC AUC) where it matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import json
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath
import flax.linen as nn
import jax
from jax.experimental import jax2tf
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

import byteflax
from byteflax import cli
from byteflax import input_pipeline
from byteflax import quant
from byteflax import splitter
from byteflax import train

# Module attributes each exportable model needs for TFLite (model_name -> overrides). A
# model missing here has not been checked to convert; add it once it has.
EXPORT_OVERRIDES = {
    # associative_scan interleaves with interior padding, which the int8 quantizer cannot
    # handle; the doubling scan computes the same recurrence from shifts and products.
    "byte_qrnn": {"qrnn_scan": "doubling"},
    "byte_transformer": {},
    "byte_funnel_transformer": {},
    "raw_byte_transformer": {},
}
# Models whose full-integer file tracks the JAX model (tests/test_export.py). The
# transformers' full-integer conversion runs but does not (logit correlation 0.25-0.79 with
# JAX on random smoke models, to be found op by op), so they export float32 and int8 only.
INT8_FULL_EXPORTABLE = ("byte_qrnn",)
# The numeric forms a model is converted to (`convert`), each with its file.
FLOAT32, INT8, INT8_FULL = "float32", "int8", "int8_full"
FLOAT_FILE = "model_float.tflite"
INT8_FILE = "model_int8.tflite"
INT8_FULL_FILE = "model_int8_full.tflite"
FILES = {FLOAT32: FLOAT_FILE, INT8: INT8_FILE, INT8_FULL: INT8_FULL_FILE}
QUANTIZATION_OF_FILE = {filename: quantization for quantization, filename in FILES.items()}
MANIFEST_FILE = "manifest.json"
OUTPUTS = ("logits", "probabilities")


class UnexportableConfigError(ValueError):
  """The config describes a model that has no faithful TFLite form."""


def check_exportable(config: ml_collections.ConfigDict) -> None:
  """Raises UnexportableConfigError, saying why, for configs that cannot be exported."""
  if config.model_name not in EXPORT_OVERRIDES:
    raise UnexportableConfigError(
        f"model_name {config.model_name!r} has no TFLite export recipe (exportable: "
        f"{sorted(EXPORT_OVERRIDES)}); add it to byteflax.export.EXPORT_OVERRIDES once its "
        "conversion and JAX-vs-TFLite parity are tested.")
  if config.model.get("gbst_score_calibration"):
    # int8 calibration would stretch that tensor's range to ~1e38 and round every real
    # value to the same integer.
    raise UnexportableConfigError(
        "config.model.gbst_score_calibration=True masks padding with the float32 minimum, "
        "which int8 quantization cannot represent; train with it off to export.")


def inference_model(trainer: train.Trainer) -> nn.Module:
  """The trained model in its TFLite-friendly form, without fake quantization ops.

  Fake quantization only simulates int8 during training; the converter quantizes the
  float graph itself (per-channel weights, calibrated activation ranges).
  """
  check_exportable(trainer.config)
  return trainer.model.clone(quant=quant.QuantConfig(),
                             **EXPORT_OVERRIDES[trainer.config.model_name])


def calibration_examples(config: ml_collections.ConfigDict, lengths: Sequence[int],
                         count: int) -> dict[int, np.ndarray]:
  """Training inputs that calibrate int8 ranges, per signature length: `{n: [<= count, n]}`.

  Each signature is calibrated on the texts it will run: those longer than the previous
  length and at most n ids (the longest signature also on the longer texts, cut), drawn at
  random (seed 0). Ranges calibrated on short texts padded out clip the states and logits
  of long ones. A length no text falls in gets random texts cut to it.
  """
  ids, _ = input_pipeline.task_examples(config.data, "train", max(lengths))
  used = (ids != splitter.PAD_ID).sum(axis=1)
  rng = np.random.default_rng(0)
  sets = {}
  for shorter, length in zip([0, *lengths[:-1]], lengths):
    rows = np.flatnonzero((used > shorter) & (used <= length))
    if not len(rows):
      rows = np.arange(len(ids))
    rows = np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False))
    sets[length] = cut_ids(ids[rows], length)
  return sets


def signature_key(length: int) -> str:
  return f"length_{length}"


def default_lengths(max_length: int) -> list[int]:
  """Signature lengths: powers of two from 32 below max_length, and max_length itself."""
  return [2**k for k in range(5, max_length.bit_length()) if 2**k < max_length] + [max_length]


def cut_ids(ids: np.ndarray, length: int) -> np.ndarray:
  """Byte ids `[n, width]` as the splitter encodes them at `length`: cut (keeping EOS
  last, as input_pipeline.task_examples does) or right-padded."""
  if ids.shape[1] <= length:
    return np.pad(ids, ((0, 0), (0, length - ids.shape[1])))
  cut = ids[:, :length].copy()
  cut[ids[:, length] != splitter.PAD_ID, -1] = splitter.EOS_ID
  return cut


def convert(model: nn.Module, params, lengths: int | Sequence[int],
            quantization: str = FLOAT32,
            representative_ids: np.ndarray | dict[int, np.ndarray] | None = None) -> bytes:
  """A TFLite flatbuffer of the model.

  Args:
    model: the inference model (see `inference_model`).
    params: its params.
    lengths: input lengths; each gets a signature `length_<L>` taking ids `[1, L]`, so a
      text runs at the shortest length that holds it (`TFLiteClassifier`), not at the
      longest. The signatures share one copy of the weights.
    quantization: FLOAT32; INT8 (int8 weights, dynamically quantized int8 convs and
      matmuls, float elementwise ops); or INT8_FULL (int8 everywhere, calibrated on
      representative_ids). The module docstring says which hardware each is for.
    representative_ids: INT8_FULL only: int32 inputs that calibrate every activation
      range: `{length: [examples, length]}` per signature (`calibration_examples`), or
      one `[examples, width]` array cut or padded to each length.
  """
  if quantization not in FILES:
    raise ValueError(f"quantization must be one of {list(FILES)}, got {quantization!r}.")
  if (quantization == INT8_FULL) != (representative_ids is not None):
    raise ValueError("representative_ids calibrate int8_full, and only int8_full.")
  lengths = sorted({lengths} if isinstance(lengths, int) else set(lengths))
  if representative_ids is not None and not isinstance(representative_ids, dict):
    representative_ids = {n: cut_ids(representative_ids, n) for n in lengths}

  def serve(ids):
    logits = model.apply({"params": params}, ids, train=False)
    return {"logits": logits, "probabilities": jax.nn.sigmoid(logits)}

  tf_serve = to_tf(serve)
  signatures = {signature_key(length): tf_serve.get_concrete_function(
      tf.TensorSpec((1, length), tf.int32, name="ids")) for length in lengths}
  representative_dataset = None
  if quantization == INT8_FULL:
    representative_dataset = lambda: (
        (signature_key(length), {"ids": row[None]})
        for length in lengths for row in representative_ids[length])
  return to_tflite({"classify": tf_serve}, signatures, quantization, representative_dataset)


def to_tf(function: Callable) -> tf.types.experimental.GenericFunction:
  """A JAX function of arrays as a tf.function of plain TF ops that TFLite knows
  (graph-mode jax2tf with XLA ops disabled)."""
  return tf.function(jax2tf.convert(function, native_serialization=False, enable_xla=False,
                                    with_gradient=False), autograph=False)


def to_tflite(functions: dict[str, tf.types.experimental.GenericFunction],
              signatures: dict[str, tf.types.experimental.ConcreteFunction],
              quantization: str = FLOAT32, representative_dataset: Callable | None = None
              ) -> bytes:
  """A TFLite flatbuffer whose signatures (named inputs and outputs) are concrete
  functions of `functions` (`to_tf`), sharing one copy of the weights.

  quantization: FLOAT32, INT8 (dynamic range) or INT8_FULL (representative_dataset, a
  callable yielding (signature key, {input name: array}), calibrates every activation).
  """
  if quantization not in FILES:
    raise ValueError(f"quantization must be one of {list(FILES)}, got {quantization!r}.")
  if (quantization == INT8_FULL) != (representative_dataset is not None):
    raise ValueError("A representative dataset calibrates int8_full, and only int8_full.")
  # Through a SavedModel so that the flatbuffer gets signatures with named inputs/outputs.
  with tempfile.TemporaryDirectory() as saved_model_dir:
    module = tf.Module()
    for name, function in functions.items():
      # Not `serve`: the converter takes that for a Keras export.
      setattr(module, name, function)
    tf.saved_model.save(module, saved_model_dir, signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=list(signatures))
    if quantization != FLOAT32:
      # Without a representative dataset this is dynamic-range quantization (INT8).
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == INT8_FULL:
      converter.representative_dataset = representative_dataset
      # int8 builtins only: an op that cannot be quantized fails the conversion instead of
      # silently falling back to a float kernel.
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def median_latency_ms(predict: Callable[[np.ndarray], object], examples: np.ndarray,
                      runs: int) -> float:
  """Median wall time of `predict` on single examples `[1, ...]` drawn at random (seed 0)
  from `examples`, after 10 warm-up calls. At random, not the first `runs`: evaluation
  splits come sorted by length bucket, and their first rows are the shortest texts."""
  order = np.random.default_rng(0).permutation(len(examples))
  rows = [examples[order[i % len(examples)]][None] for i in range(runs)]
  return float(np.median(time_each({"model": predict}, rows, warmup=10)["model"]))


def time_each(predicts: dict[str, Callable[[Any], object]], inputs: Sequence[Any],
              warmup: int) -> dict[str, np.ndarray]:
  """Milliseconds of one call of each predictor per input, after `warmup` untimed calls of
  each on the first inputs. The predictors take turns on every input (in an order that
  alternates), so a change in the machine's load falls on all of them alike."""
  for item in inputs[:warmup]:
    for predict in predicts.values():
      predict(item)
  times = {name: [] for name in predicts}
  for index, item in enumerate(inputs):
    names = list(predicts) if index % 2 == 0 else list(reversed(predicts))
    for name in names:
      start = time.perf_counter()
      predicts[name](item)
      times[name].append(time.perf_counter() - start)
  return {name: 1000 * np.asarray(measured) for name, measured in times.items()}


def exported_files(export_dir: str) -> list[str]:
  """The .tflite files an export wrote (its manifest's; float first)."""
  written = json.loads((epath.Path(export_dir) / MANIFEST_FILE).read_text())["files"]
  return [name for name in FILES.values() if name in written]


class TFLiteClassifier:
  """Runs an exported model in the LiteRT interpreter, one example at a time, each at the
  shortest signature length that holds its ids (any file of this module: one length or
  several)."""

  def __init__(self, path: str, num_threads: int = 1):
    from ai_edge_litert import interpreter as litert  # Heavy; only needed here.
    self.interpreter = litert.Interpreter(model_path=path, num_threads=num_threads)
    self.runners = {}  # length -> signature runner
    for key in self.interpreter.get_signature_list():
      runner = self.interpreter.get_signature_runner(key)
      self.runners[int(runner.get_input_details()["ids"]["shape"][1])] = runner
    self.lengths = sorted(self.runners)
    self.length = self.lengths[-1]

  def __call__(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    """ids `[examples, width]` int32, right-padded with 0, no example longer than the
    longest signature -> {"logits", "probabilities"} `[examples, labels]`."""
    ids = np.asarray(ids, np.int32)
    if ids.ndim != 2:
      raise ValueError(f"Expected ids [examples, length], got {ids.shape}.")
    used = (ids != splitter.PAD_ID).sum(axis=1)
    if used.max(initial=0) > self.length:
      raise ValueError(f"Expected ids of at most {self.length} ids per example (the longest "
                       f"signature), got {int(used.max())}; cut longer texts first.")
    rows = []
    for row, count in zip(ids, used):
      length = next(n for n in self.lengths if n >= count)
      rows.append(self.runners[length](ids=cut_ids(row[None, :count], length)))
    return {name: np.concatenate([r[name] for r in rows]) for name in OUTPUTS}


def export(config: ml_collections.ConfigDict, workdir: str, out_dir: str,
           length: int | None = None, num_calibration_examples: int = 200,
           lengths: Sequence[int] | None = None) -> dict:
  """Writes the TFLite models (`FILES`) and the manifest for the run's model in workdir
  (its selected checkpoint, `train.Selection`).

  Args:
    length: the longest input (default config.data.max_length).
    num_calibration_examples: per signature, training examples that calibrate the full-int8
      model's activation ranges.
    lengths: the signature lengths, each at most `length` (default `default_lengths`).

  Returns:
    The manifest.
  """
  check_exportable(config)
  length = length or config.data.max_length
  lengths = sorted({*(lengths or default_lengths(length)), length})
  if lengths[0] < 2 or lengths[-1] > length:
    raise ValueError(f"Signature lengths must be in [2, {length}], got {lengths}.")
  trainer = train.Trainer(config, training=False)
  variables, step = train.load_variables(workdir, trainer, collections=("params",))
  params = jax.device_get(variables["params"])
  model = inference_model(trainer)
  quantizations = [FLOAT32, INT8, INT8_FULL]
  if config.model_name not in INT8_FULL_EXPORTABLE:
    logging.warning("Not writing %s: the full-integer conversion of %s does not track the "
                    "JAX model yet (export.INT8_FULL_EXPORTABLE).", INT8_FULL_FILE,
                    config.model_name)
    quantizations.remove(INT8_FULL)
  representative_ids = None
  if INT8_FULL in quantizations:
    try:
      representative_ids = calibration_examples(config, lengths, num_calibration_examples)
    except FileNotFoundError as error:  # A run copied without its data: the rest needs none.
      logging.warning("Not writing %s: its calibration reads the training data (%s).",
                      INT8_FULL_FILE, error)
      quantizations.remove(INT8_FULL)
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  sizes = {}
  for quantization in quantizations:
    flatbuffer = convert(model, params, lengths, quantization,
                         representative_ids if quantization == INT8_FULL else None)
    (out / FILES[quantization]).write_bytes(flatbuffer)
    sizes[FILES[quantization]] = len(flatbuffer)
    logging.info("Wrote %s (%d bytes).", FILES[quantization], len(flatbuffer))
  quant_config = quant.QuantConfig.from_config(config.get("quant"))
  manifest = {
      "byteflax_version": byteflax.__version__,
      "model_name": config.model_name,
      "checkpoint_step": step,
      "num_params": train.count_params(params),
      "labels": list(trainer.label_names),
      "input": {"name": "ids", "dtype": "int32", "shape": [1, length],
                "signatures": {signature_key(n): [1, n] for n in lengths},
                "vocab_size": splitter.VOCAB_SIZE, "pad_id": splitter.PAD_ID,
                "eos_id": splitter.EOS_ID, "byte_offset": splitter.NUM_SPECIAL_IDS,
                "splitter": "ids = [b + 3 for b in text.encode('utf-8')[:length - 1]] + "
                            "[1]; run signature length_<n> for the smallest n >= len(ids), "
                            "ids right-padded with 0 to n"},
      "outputs": {name: {"dtype": "float32", "shape": [1, len(trainer.label_names)]}
                  for name in OUTPUTS},
      "files": {name: description for name, description in (
          (FLOAT_FILE, {"bytes": sizes[FLOAT_FILE], "weights": "float32",
                        "activations": "float32"}),
          (INT8_FILE, {"bytes": sizes[INT8_FILE],
                       "weights": "int8, symmetric, per output channel",
                       "activations": "float32; each conv / matmul quantizes its input to "
                                      "int8 at run time (dynamic range)",
                       "for": "CPUs (XNNPack)"}),
          (INT8_FULL_FILE, {"bytes": sizes.get(INT8_FULL_FILE),
                            "weights": "int8, symmetric, per output channel",
                            "activations": "int8, asymmetric, calibrated",
                            "for": "integer-only accelerators",
                            "calibration": {
                                signature_key(n): f"{len(ids)} training examples of at most "
                                f"{n} ids (and longer than the previous signature's), drawn "
                                "at random (seed 0)"
                                for n, ids in (representative_ids or {}).items()}}))
                if name in sizes},
      "quantization_aware_training": dataclasses.asdict(quant_config),
      "config": json.loads(config.to_json_best_effort()),
  }
  (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
  return manifest


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "The config the run in --workdir was trained with; default: the "
      "run's own config.json.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None,
                                "Run whose model (its selected checkpoint) is exported.")
  out = flags.DEFINE_string("out", None, "Directory for the .tflite files and manifest.json.")
  length = flags.DEFINE_integer(
      "length", None, "Longest input in bytes; default config.data.max_length.")
  lengths = flags.DEFINE_list(
      "lengths", None, "Signature lengths (one per input length bucket); default powers of "
      "two from 32 up to --length.")
  calibration = flags.DEFINE_integer(
      "calibration_examples", 200, "Training examples that calibrate int8 activation ranges.")

  flags.mark_flags_as_required(["workdir", "out"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    manifest = export(train.run_config(workdir.value, config.value), workdir.value,
                      out.value, length.value, calibration.value,
                      [int(n) for n in lengths.value or ()])
    print(json.dumps({"out": out.value, **{name: file["bytes"] for name, file in
                                           manifest["files"].items()}}, indent=2))

  app.run(run)


if __name__ == "__main__":
  main()
