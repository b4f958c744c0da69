r"""Exported TFLite models vs the JAX model: file size, test ROC AUC, latency, logit error.

  python -m byteflax.export --workdir=/tmp/byteqrnn_qat --out=/tmp/byteqrnn_qat/export
  python benchmarks/export_benchmark.py --workdir=/tmp/byteqrnn_qat \
      --export_dir=/tmp/byteqrnn_qat/export

Both read the run's config.json unless --config (with overrides) is given.

Every number is measured here: ROC AUC on the test split is computed from the logits that
the LiteRT interpreter returns (TFLite rows) or that the JAX model returns (JAX rows), on
the same inputs (test texts as byte ids, cut / padded to the exported length). Latency is
per example at batch 1 on 1 CPU thread: the median of --latency_runs warm runs.
JAX rows: the model as trained (with fake quantization for a quantization-aware run) and,
for such a run, the same params with quantization off. The table is printed and saved as
JSON (--out, default <export_dir>/benchmark.json).
"""

import os

# One CPU thread for XLA too (set before JAX starts), so latencies compare like for like.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                           "false intra_op_parallelism_threads=1")

# pylint: disable=g-import-not-at-top,wrong-import-position
import functools
import json

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from byteflax import cli
from byteflax import export
from byteflax import input_pipeline
from byteflax import metrics
from byteflax import quant
from byteflax import train

# Text lengths (bytes, EOS included) over which logit errors are also averaged.
LENGTH_GROUPS = ((0, 128), (128, 512), (512, 1_000_000))

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The config the run in --workdir was trained with; default: the run's "
    "own config.json.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The exported run.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "--out of byteflax.export.")
_OUT = flags.DEFINE_string("out", None, "JSON results; default <export_dir>/benchmark.json.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 200, "Timed runs per model.")


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  return float(np.mean([metrics.roc_auc(labels[:, i], scores[:, i])
                        for i in range(labels.shape[1])]))


def benchmark(config, workdir: str, export_dir: str, split: str, latency_runs: int
              ) -> dict:
  """Rows of {name, bytes, auc, latency_ms, max / mean_abs_logit_error} plus context."""
  with open(os.path.join(export_dir, export.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  length = manifest["input"]["shape"][1]
  ids, labels = input_pipeline.task_examples(config.data, split, length)
  trainer = train.Trainer(config)
  variables, step = train.load_variables(workdir, trainer)
  if step != manifest["checkpoint_step"]:
    raise ValueError(f"{export_dir} was exported from step {manifest['checkpoint_step']}, "
                     f"but the newest checkpoint in {workdir} is step {step}; re-export.")
  jax_models = {"jax": trainer.model}
  if quant.COLLECTION in variables:
    jax_models = {"jax_fake_quant": trainer.model,
                  "jax_float": trainer.model.clone(quant=quant.QuantConfig())}

  rows, reference = [], None
  for name, model in jax_models.items():
    # Variables as an argument, not closed over: XLA would constant-fold them for minutes.
    apply = functools.partial(
        jax.jit(lambda v, x, model=model: model.apply(v, x, train=False)), variables)
    logits = np.concatenate([np.asarray(apply(ids[i:i + 1])) for i in range(len(ids))])
    reference = logits if reference is None else reference
    rows.append({"name": name, "bytes": 4 * manifest["num_params"],
                 "auc": macro_auc(labels, logits), "logits": logits,
                 "latency_ms": export.median_latency_ms(
                     lambda x, apply=apply: jax.block_until_ready(apply(x)), ids,
                     latency_runs)})
  for filename in export.exported_files(export_dir):
    classifier = export.TFLiteClassifier(os.path.join(export_dir, filename))
    logits = classifier(ids)["logits"]
    rows.append({"name": "tflite_" + export.QUANTIZATION_OF_FILE[filename],
                 "bytes": os.path.getsize(os.path.join(export_dir, filename)),
                 "auc": macro_auc(labels, logits), "logits": logits,
                 "latency_ms": export.median_latency_ms(classifier, ids, latency_runs)})
  text_lengths = np.sum(ids != 0, axis=1)
  for row in rows:
    error = np.abs(row.pop("logits") - reference)
    row["max_abs_logit_error"] = float(np.max(error))
    row["mean_abs_logit_error"] = float(np.mean(error))
    # Where along the input the export loses precision: error by text length in bytes.
    row["mean_abs_logit_error_by_length"] = {
        f"{lo}-{hi}": float(np.mean(error[(text_lengths >= lo) & (text_lengths < hi)]))
        for lo, hi in LENGTH_GROUPS if np.any((text_lengths >= lo) & (text_lengths < hi))}
  return {"workdir": workdir, "export_dir": export_dir, "split": split,
          "examples": len(ids), "input_length": length, "checkpoint_step": step,
          "reference": rows[0]["name"], "latency_runs": latency_runs, "rows": rows}


def format_table(results: dict) -> str:
  lines = [f"{results['split']} split, {results['examples']} examples, input length "
           f"{results['input_length']}; logit error vs {results['reference']} (mean by text "
           f"length in the JSON)",
           f"{'model':<16}{'bytes':>12}{'ROC AUC':>10}{'ms/example':>12}"
           f"{'max |dlogit|':>14}{'mean |dlogit|':>15}"]
  for row in results["rows"]:
    lines.append(f"{row['name']:<16}{row['bytes']:>12,}{row['auc']:>10.4f}"
                 f"{row['latency_ms']:>12.2f}{row['max_abs_logit_error']:>14.4f}"
                 f"{row['mean_abs_logit_error']:>15.4f}")
  return "\n".join(lines)


@cli.clean_input_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = train.run_config(_WORKDIR.value, _CONFIG.value)
  results = benchmark(config, _WORKDIR.value, _EXPORT_DIR.value, _SPLIT.value,
                      _LATENCY_RUNS.value)
  print(format_table(results))
  out = _OUT.value or os.path.join(_EXPORT_DIR.value, "benchmark.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"Wrote {out}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "export_dir"])
  app.run(main)
