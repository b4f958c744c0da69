r"""Encoder benchmark: ByteQRNN, ByteTransformer, ByteFunnelTransformer, raw-bytes transformer.

  pip install -e ".[bench]"
  python -m benchmarks.encoders --out=/tmp/encoders [--train_steps=300] [--skip_training]
  # How ByteQRNN's recurrence is evaluated (byteflax/qrnn.py), one row per way:
  python -m benchmarks.encoders --models=ByteQRNN --qrnn_scans=associative,sequential \
      --lengths=128,256,512 --batch_size=32 --skip_training

Every model is its config on the English fortunes, labels only
(configs/byteqrnn_toxicity.py:fortunes,scratch, configs/transformer_toxicity.py:
{transformer,funnel,raw},fortunes). For each one at every --lengths
(bytes per example, all real, no padding) it measures:
- parameters;
- forward FLOPs of one batch, from XLA's cost analysis of the compiled inference function;
- inference and training throughput in bytes/s: the jitted forward pass, and the real
  `step.train_step` (forward, backward, AdamW update). Every (model, length) pair is timed
  once per round, in an interleaved order, over --repeats rounds after a warm-up call, and
  the median is kept: the models are measured side by side under the same machine load, so
  their ratios are meaningful even on a shared machine;
- peak memory of the compiled forward and training step (XLA's memory analysis:
  arguments + outputs + temporaries - aliased buffers);
then trains each model with `byteflax.train` for the same budget (--train_steps steps of the
config's batch on the fortunes task, examples cut to --train_max_length bytes,
warm-up shortened to a tenth of the steps) and reports test and validation ROC AUC.

Writes <out>/encoders.json (everything) and <out>/encoders.png (throughput vs length), and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import tasks  # pylint: disable=unused-import  (registers the SeqIO tasks)
from byteflax import qrnn
from byteflax import train
from configs import byteqrnn_toxicity
from configs import transformer_toxicity

# Display name -> its default config; ByteQRNN's without distillation, like the others.
CONFIGS = {
    "ByteQRNN": lambda: byteqrnn_toxicity.get_config("fortunes,scratch"),
    "ByteTransformer": lambda: transformer_toxicity.get_config("transformer,fortunes"),
    "ByteFunnelTransformer": lambda: transformer_toxicity.get_config("funnel,fortunes"),
    "raw-bytes transformer": lambda: transformer_toxicity.get_config("raw,fortunes"),
}
# The ratio the GBST encoders exist for: GBST transformer vs the same transformer on bytes.
RATIO = ("ByteTransformer", "raw-bytes transformer")


def peak_bytes(compiled) -> int:
  """Arguments + outputs + temporaries - buffers the outputs alias (donated inputs)."""
  memory = compiled.memory_analysis()
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
             + memory.temp_size_in_bytes - memory.alias_size_in_bytes)


def _time_call(run, seconds: list[float]) -> None:
  start = time.perf_counter()
  jax.block_until_ready(run())
  seconds.append(time.perf_counter() - start)


class Case:
  """One model at one length: compiled forward and training step, their costs and timings."""

  def __init__(self, trainer: train.Trainer, state, length: int, batch_size: int):
    self.length, self.batch_size = length, batch_size
    rng = np.random.default_rng(length)
    ids = rng.integers(3, 259, size=(batch_size, length)).astype(np.int32)
    ids[:, -1] = 1  # EOS, as the input pipeline ends every example.
    self.batch = {"inputs": ids,
                  "labels": rng.integers(0, 2, (batch_size, len(trainer.label_names))
                                         ).astype(np.float32),
                  "weights": np.ones(batch_size, np.float32)}
    self.trainer, self.state = trainer, state
    apply = trainer.model.apply
    forward = jax.jit(lambda params, ids: apply({"params": params}, ids))
    with trainer.sharding_context():
      compiled = forward.lower(state.params, jnp.asarray(ids)).compile()
      train_compiled = trainer.train_step.lower(state, trainer.device_batch(self.batch)
                                                ).compile()
    self.flops = float(compiled.cost_analysis()["flops"])
    self.forward_peak = peak_bytes(compiled)
    self.train_peak = peak_bytes(train_compiled)
    self._forward = lambda: compiled(self.state.params, ids)
    self.forward_times, self.train_times = [], []
    self.warm_up()

  def _train(self):
    self.state, metrics = self.trainer.run_train_step(self.state, self.batch)
    return metrics["loss"]

  def warm_up(self):
    jax.block_until_ready(self._forward())
    jax.block_until_ready(self._train())

  def time_once(self):
    _time_call(self._forward, self.forward_times)
    _time_call(self._train, self.train_times)

  def summary(self) -> dict[str, float]:
    real_bytes = self.batch_size * self.length
    return {
        "length": self.length,
        "forward_gflops": self.flops / 1e9,
        "inference_bytes_per_s": real_bytes / statistics.median(self.forward_times),
        "train_bytes_per_s": real_bytes / statistics.median(self.train_times),
        "forward_peak_mib": self.forward_peak / 2**20,
        "train_peak_mib": self.train_peak / 2**20,
        "forward_seconds": self.forward_times,
        "train_seconds": self.train_times,
    }


def measure_speed(configs: dict[str, ml_collections.ConfigDict], lengths: list[int],
                  batch_size: int, repeats: int) -> dict[str, dict]:
  """Parameters, FLOPs, memory and interleaved throughput timings for every model."""
  cases, params = {}, {}
  for name, config in configs.items():
    trainer = train.Trainer(config)
    state = trainer.init_state()
    params[name] = train.count_params(state.params)
    for length in lengths:
      print(f"compiling {name} at {length} bytes", flush=True)
      # Each case trains its own copy: train_step donates (consumes) the state it is given.
      cases[name, length] = Case(trainer, jax.tree.map(jnp.copy, state), length, batch_size)
  for round_index in range(repeats):
    print(f"timing round {round_index + 1}/{repeats}", flush=True)
    order = list(cases.values())
    # Alternate the direction so no model is always timed right after the same neighbour.
    for case in order if round_index % 2 == 0 else reversed(order):
      case.time_once()
  return {name: {"params": params[name],
                 "by_length": [cases[name, length].summary() for length in lengths]}
          for name in configs}


def measure_auc(name: str, config: ml_collections.ConfigDict, steps: int, max_length: int,
                workdir: str) -> dict[str, float]:
  """Trains `steps` steps from scratch in workdir, then evaluates on validation and test."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.total_steps = steps
  config.data.max_length = max_length
  config.optim.warmup_steps = max(steps // 10, 1)
  config.checkpoint.every_steps = steps
  for evaluation in config.evals.values():
    evaluation.update(every_steps=0, every_epochs=0.0)  # Only at the end.
  shutil.rmtree(workdir, ignore_errors=True)
  print(f"training {name} for {steps} steps in {workdir}", flush=True)
  start = time.perf_counter()
  report = train.train_and_evaluate(config, workdir)
  return {"steps": steps, "batch_size": config.data.batch_size, "max_length": max_length,
          "test_auc": report["test"]["auc"], "validation_auc": report["validation"]["auc"],
          "train_and_eval_seconds": time.perf_counter() - start}


def format_table(results: dict[str, dict]) -> str:
  header = ("| model | params | bytes | forward GFLOPs | inference bytes/s | train bytes/s "
            "| forward peak MiB | train peak MiB |")
  rows = [header, "|---" * 8 + "|"]
  for name, result in results.items():
    for row in result["by_length"]:
      rows.append(
          f"| {name} | {result['params']:,} | {row['length']} | {row['forward_gflops']:.2f} "
          f"| {row['inference_bytes_per_s']:,.0f} | {row['train_bytes_per_s']:,.0f} "
          f"| {row['forward_peak_mib']:.0f} | {row['train_peak_mib']:.0f} |")
  return "\n".join(rows)


def plot(results: dict[str, dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional: the "bench" extra)
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(1, 2, figsize=(11, 4.2), sharex=True)
  for (kind, title), ax in zip((("inference", "inference"), ("train", "training")), axes):
    for name, result in results.items():
      rows = result["by_length"]
      ax.plot([r["length"] for r in rows], [r[f"{kind}_bytes_per_s"] for r in rows],
              marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="input length (bytes)",
           ylabel="bytes / s", title=f"{title} throughput")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks([r["length"] for r in rows], [str(r["length"]) for r in rows])
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def write_report(out: str, results: dict[str, dict], lengths: list[int], batch_size: int,
                 repeats: int) -> dict:
  """Writes <out>/encoders.json and <out>/encoders.png; returns the report."""
  report = {"device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(),
            "batch_size": batch_size, "repeats": repeats, "models": results}
  if all(name in results for name in RATIO) and 1024 in lengths:
    at_1024 = [results[name]["by_length"][lengths.index(1024)] for name in RATIO]
    report["gbst_vs_raw_at_1024"] = {
        f"{kind}_throughput_ratio": at_1024[0][f"{kind}_bytes_per_s"]
                                    / at_1024[1][f"{kind}_bytes_per_s"]
        for kind in ("inference", "train")}
  with open(os.path.join(out, "encoders.json"), "w") as f:
    json.dump(report, f, indent=2)
  plot(results, os.path.join(out, "encoders.png"))
  return report


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="/tmp/encoders", help="Directory for JSON and PNG.")
  parser.add_argument("--models", default=",".join(CONFIGS),
                      help=f"Comma-separated subset of {list(CONFIGS)}.")
  parser.add_argument("--lengths", default="256,512,1024,2048")
  parser.add_argument("--batch_size", type=int, default=8, help="Batch of the speed runs.")
  parser.add_argument("--repeats", type=int, default=3, help="Timed rounds per case.")
  parser.add_argument("--train_steps", type=int, default=300,
                      help="Training budget per model for the AUC column.")
  parser.add_argument("--train_max_length", type=int, default=512,
                      help="Bytes kept per training / eval example (the configs keep 1024; "
                      "512 keeps the raw-bytes transformer's budget affordable on CPU).")
  parser.add_argument("--skip_training", action="store_true", help="Speed columns only.")
  parser.add_argument("--qrnn_scans", default="",
                      help="Comma-separated byteflax.qrnn.SCANS: one ByteQRNN row per way "
                      "of evaluating its recurrence (default: the model's, auto).")
  args = parser.parse_args()

  names = args.models.split(",")
  unknown = set(names) - set(CONFIGS)
  if unknown:
    parser.error(f"Unknown models {sorted(unknown)}; choose from {list(CONFIGS)}.")
  configs = {name: CONFIGS[name]() for name in names}
  if args.qrnn_scans:
    scans = args.qrnn_scans.split(",")
    if "ByteQRNN" not in configs:
      parser.error("--qrnn_scans gives ByteQRNN rows; add ByteQRNN to --models.")
    if set(scans) - set(qrnn.SCANS):
      parser.error(f"Unknown --qrnn_scans {sorted(set(scans) - set(qrnn.SCANS))}; "
                   f"choose from {list(qrnn.SCANS)}.")
    qrnn_config = configs.pop("ByteQRNN")
    for scan in scans:
      configs[f"ByteQRNN ({scan} scan)"] = ml_collections.ConfigDict(qrnn_config.to_dict())
      configs[f"ByteQRNN ({scan} scan)"].model.qrnn_scan = scan
  lengths = [int(length) for length in args.lengths.split(",")]
  os.makedirs(args.out, exist_ok=True)

  results = measure_speed(configs, lengths, args.batch_size, args.repeats)
  # Saved before training too, so the speed columns survive an interrupted training phase.
  report = write_report(args.out, results, lengths, args.batch_size, args.repeats)
  if not args.skip_training:
    for name, config in configs.items():
      workdir = os.path.join(args.out, "train", name.replace(" ", "_"))
      results[name]["training"] = measure_auc(name, config, args.train_steps,
                                              args.train_max_length, workdir)
    report = write_report(args.out, results, lengths, args.batch_size, args.repeats)

  print(format_table(results))
  for name, result in results.items():
    if "training" in result:
      t = result["training"]
      print(f"{name}: test ROC AUC {t['test_auc']:.4f} (validation {t['validation_auc']:.4f}) "
            f"after {t['steps']} steps of {t['batch_size']}, {t['train_and_eval_seconds']:.0f} s")
  for key, value in report.get("gbst_vs_raw_at_1024", {}).items():
    print(f"{RATIO[0]} / {RATIO[1]} at 1024 bytes, {key}: {value:.2f}x")
  print(f"wrote {args.out}/encoders.json and {args.out}/encoders.png")


if __name__ == "__main__":
  main()
