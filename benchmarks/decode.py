r"""Decoding benchmark: MAtt vs KV-cache decoder steps, cache memory, float vs uint8 beams.

  pip install -e ".[bench]"
  python -m benchmarks.decode --out=benchmarks/results [--workdir=/tmp/pretrain]

The model is configs/pretrain_fortunes.py's encoder-decoder (ByteQRNN encoder; 2 decoder
layers of width 128, 4 heads, MLP 256) with decoder.attention_kind "matt" or "causal", at
random parameters (no timing depends on their values). Encoder outputs come from
--input_bytes random bytes (all real). It measures:

1. Per-step decode latency vs position p (--positions): one jitted `decode_step` per cache
   size, run --steps times in a `lax.fori_loop` (the way `beam_search` runs it: inside one
   XLA loop, no host dispatch per step; cache donated and updated in place) and divided by
   --steps. The KV cache is allocated for exactly p + 1 positions and the step at p attends
   over all of them: the cost of step p in a decoder that keeps only the filled prefix. (A
   cache preallocated for the maximum length costs the same at every position, since its
   masked attention reads the whole buffer.) MAtt's state has no length. Every (kind, rows,
   p) case is timed once per round, over --rounds rounds in alternating order after a
   warm-up call, and the median is kept, so all cases see the same machine load; the goal
   ratios are medians of per-round ratios (`goals`). Rows: 1 (greedy) and --beam_size (one
   input's beams).
2. Cache bytes per sequence: the leaves of `init_cache(1, p)` (float32).
3. Beam search wall time, float vs uint8 scorer: `generate.generate` jitted end to end
   (encode + search), one input, --beam_size beams, --max_length steps (EOS banned so every
   search runs all steps and the two scorers do the same decoder work); interleaved rounds,
   median. Also the search alone over a constant-logits decoder, the scorers' own cost.
4. With --workdir (a trained pretraining run of the same config): how often the uint8
   search's top sequence equals the float search's on --agreement_examples validation
   inputs of the run's task, and the float log-prob the uint8 choice gives up.
5. The exported decoder (`byteflax.export_seq2seq`, float32 and int8) in the LiteRT
   interpreter, one thread: per-step latency vs position, as in 1 (`measure_tflite_steps`).
6. With --export (an export of the --workdir run): how often beam search over each exported
   file returns the JAX search's top sequence, float and uint8 scorers, one input at a time.

--parts picks jax (1-4) and / or tflite (5-6); e.g. the TFLite sections alone:
  python -m benchmarks.decode --parts tflite --out=benchmarks/results/decode_tflite \
      --workdir=/tmp/pretrain_corpus --export=/tmp/pretrain_corpus/export

Writes <out>/decode.json and <out>/decode.png and prints tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import tasks  # pylint: disable=unused-import  (registers the SeqIO tasks)
from byteflax import beam_search
from byteflax import export_seq2seq
from byteflax import generate
from byteflax import input_pipeline
from byteflax import seq2seq
from byteflax import splitter
from byteflax import train
from configs import pretrain_fortunes

KINDS = ("matt", "causal")
SCORERS = {"float": beam_search.FloatScorer(), "uint8": beam_search.Uint8Scorer()}


def build(kind: str, input_bytes: int):
  """(model, random variables, encoder inputs [1, input_bytes]) for one decoder kind."""
  config = pretrain_fortunes.get_config("causal" if kind == "causal" else None)
  model = seq2seq.build_encoder_decoder(config.model)
  inputs = np.random.default_rng(0).integers(3, 259, size=(1, input_bytes)).astype(np.int32)
  inputs[:, -1] = splitter.EOS_ID
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), inputs, inputs[:, :8])
  return model, variables, jnp.asarray(inputs)


def init_cache_shapes(model, variables, rows: int, length: int):
  return jax.eval_shape(lambda: model.apply(variables, rows, length, method=model.init_cache))


def tree_bytes(tree) -> int:
  return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)))


def _timed(run) -> float:
  start = time.perf_counter()
  jax.block_until_ready(run())
  return time.perf_counter() - start


class StepCase:
  """`steps` decode steps at one position, for one kind and number of rows."""

  def __init__(self, model, variables, inputs, rows: int, position: int, steps: int,
               compiled_loops: dict):
    self.rows, self.position, self.steps, self.times = rows, position, steps, []
    encoded, mask = jax.jit(functools.partial(model.apply, method=model.encode))(
        variables, inputs)
    self.encoded, self.mask = beam_search.repeat_beams((encoded, mask), rows)
    shapes = init_cache_shapes(model, variables, rows, position + 1)
    keys = jax.random.split(jax.random.PRNGKey(position), len(jax.tree.leaves(shapes)))
    leaves = [jax.random.normal(k, s.shape, s.dtype)
              for k, s in zip(keys, jax.tree.leaves(shapes))]
    self.cache = jax.tree.unflatten(jax.tree.structure(shapes), leaves)
    self.cache_bytes_per_row = tree_bytes(self.cache) // rows
    self.variables = variables
    self.loop = compiled_loops.setdefault(id(model), self._step_loop(model, steps))
    self.time_once()  # Warm-up: compiles this cache size.
    self.times.clear()

  @staticmethod
  def _step_loop(model, steps: int):
    def run(variables, cache, encoded, mask, position):
      def body(_, carry):
        tokens, cache = carry
        logits, cache = model.apply(variables, tokens, position, cache, encoded, mask,
                                    method=model.decode_step)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache
      tokens = jnp.full((encoded.shape[0],), splitter.NUM_SPECIAL_IDS, jnp.int32)
      return jax.lax.fori_loop(0, steps, body, (tokens, cache))
    return jax.jit(run, donate_argnums=1)

  def time_once(self):
    def run():
      tokens, self.cache = self.loop(self.variables, self.cache, self.encoded, self.mask,
                                     jnp.int32(self.position))
      return tokens
    self.times.append(_timed(run) / self.steps)

  def summary(self) -> dict:
    return {"rows": self.rows, "position": self.position,
            "step_ms": 1000 * statistics.median(self.times),
            "step_ms_all": [1000 * t for t in self.times]}


def measure_steps(models, positions, rows_list, steps, rounds) -> dict[str, list[dict]]:
  compiled, cases = {}, {}
  for kind, (model, variables, inputs) in models.items():
    for rows in rows_list:
      for position in positions:
        print(f"compiling {kind} decode step, rows {rows}, position {position}", flush=True)
        cases[kind, rows, position] = StepCase(model, variables, inputs, rows, position,
                                               steps, compiled)
  for round_index in range(rounds):
    order = list(cases.values())
    for case in order if round_index % 2 == 0 else reversed(order):
      case.time_once()
  return {kind: [cases[kind, rows, p].summary() for rows in rows_list for p in positions]
          for kind in models}


def cache_bytes(models, positions) -> dict[str, list[int]]:
  return {kind: [tree_bytes(init_cache_shapes(model, variables, 1, p)) for p in positions]
          for kind, (model, variables, _) in models.items()}


def measure_beam_search(models, beam_size, max_length, rounds) -> dict:
  """Median seconds of whole searches, float vs uint8: the model's and a constant decoder."""
  banned = generate.NEVER_GENERATED + (splitter.EOS_ID,)
  runs = {}
  for kind, (model, variables, inputs) in models.items():
    for name, scorer in SCORERS.items():
      search = jax.jit(functools.partial(
          generate.generate, model, max_length=max_length, beam_size=beam_size,
          scorer=scorer, banned_ids=banned))
      runs[f"{kind} decoder", name] = functools.partial(search, variables, inputs)
  logits = jax.random.normal(jax.random.PRNGKey(0), (splitter.VOCAB_SIZE,))
  constant = lambda tokens, position, cache: (
      jnp.broadcast_to(logits.at[splitter.EOS_ID].set(-jnp.inf),
                       (tokens.shape[0], splitter.VOCAB_SIZE)), cache)
  for name, scorer in SCORERS.items():
    search = jax.jit(lambda cache, scorer=scorer: beam_search.beam_search(
        constant, cache, batch_size=1, beam_size=beam_size, max_length=max_length,
        scorer=scorer))
    runs["search only (constant logits)", name] = functools.partial(
        search, jnp.zeros((beam_size, 1)))
  print("compiling beam searches", flush=True)
  times = {key: [] for key in runs}
  for run in runs.values():
    jax.block_until_ready(run())
  for round_index in range(rounds):
    order = list(runs)
    for key in order if round_index % 2 == 0 else reversed(order):
      times[key].append(_timed(runs[key]))
  return {decoder: {name: 1000 * statistics.median(times[decoder, name])
                    for name in SCORERS} for decoder, _ in runs}


def float_scores(model, variables, inputs: np.ndarray, sequences: np.ndarray,
                 alpha: float = 0.6) -> np.ndarray:
  """Length-penalized float32 scores [b] of sequences [b, length] (up to their EOS) given
  inputs [b, n], by teacher forcing: the float search's own measure."""
  logits = jax.jit(model.apply)(variables, inputs, sequences)
  log_probs = jax.nn.log_softmax(
      logits.at[..., generate.NEVER_GENERATED].set(-jnp.inf), axis=-1)
  is_eos = sequences == splitter.EOS_ID
  up_to_eos = np.cumsum(is_eos, axis=1) - is_eos == 0
  per_id = np.take_along_axis(np.asarray(log_probs), sequences[..., None], axis=-1)[..., 0]
  return np.where(up_to_eos, per_id, 0.0).sum(axis=1) / np.asarray(
      beam_search.length_penalty(jnp.asarray(up_to_eos.sum(1)), alpha))


def measure_agreement(workdir: str, beam_size: int, max_length: int, examples: int) -> dict:
  """uint8 vs float top sequences of a trained run on its task's validation inputs."""
  config = train.run_config(workdir)  # As it was trained: its task, model and lengths.
  model, variables, step = generate.load_model(config, workdir)
  inputs = generate.pad_inputs(validation_inputs(config.data.task, config, examples),
                               config.data)
  results = {}
  for name, scorer in SCORERS.items():
    search = jax.jit(functools.partial(generate.generate, model, max_length=max_length,
                                       beam_size=beam_size, scorer=scorer))
    results[name] = jax.device_get(search(variables, inputs))
  same = np.all(results["float"].sequences[:, 0] == results["uint8"].sequences[:, 0], axis=1)
  regret = results["float"].scores[:, 0] - float_scores(
      model, variables, inputs, results["uint8"].sequences[:, 0])
  return {"workdir": workdir, "checkpoint_step": step, "examples": len(inputs),
          "same_top_sequence": float(same.mean()),
          "mismatches": int((~same).sum()),
          # Float score of the float search's top sequence minus that of the uint8 one.
          "score_regret_of_mismatches": sorted(float(r) for r in regret[~same])}


def measure_tflite_steps(positions, input_bytes, beam_size, rounds, calls) -> dict:
  """Per-step latency of the exported `decode_step` in the LiteRT interpreter, one thread.

  Each kind is exported (`export_seq2seq.convert`, float32 and int8) with one encode length
  (input_bytes) and rows 1 and beam_size; the causal decoder once per position p with a KV
  cache of exactly p + 1 positions (as in `measure_steps`), MAtt once. A timing is the mean
  of `calls` signature calls on a random state at position p, Python's call overhead
  included, as an app calling the interpreter pays it; rounds alternate the order of all
  cases and the median is kept.
  """
  rows_list = [1, beam_size]
  cases = {}
  with tempfile.TemporaryDirectory() as directory:
    for kind in KINDS:
      model, variables, inputs = build(kind, input_bytes)
      config = pretrain_fortunes.get_config("causal" if kind == "causal" else None)
      inference = export_seq2seq.inference_model(model, config.model)
      for quantization in export_seq2seq.FILES:
        for position in positions:
          if kind == "causal" or position == positions[0]:
            print(f"exporting {kind} {quantization}, cache of {position + 1}", flush=True)
            path = os.path.join(directory, f"{kind}_{quantization}_{position}.tflite")
            with open(path, "wb") as f:
              f.write(export_seq2seq.convert(inference, variables["params"], [input_bytes],
                                             rows_list, position + 1, quantization))
            exported = export_seq2seq.TFLiteEncoderDecoder(path)
            length, encoded, mask = exported.encode(np.asarray(inputs))
          for rows in rows_list:
            rng = np.random.default_rng(position)
            cache = [rng.normal(size=leaf.shape).astype(np.float32)
                     for leaf in exported.init_cache(length, rows)]
            tokens = np.full((rows,), splitter.NUM_SPECIAL_IDS, np.int32)
            cases[kind, quantization, rows, position] = functools.partial(
                exported.decode_step, length, tokens, position, cache, encoded, mask)
    for case in cases.values():
      case()  # Warm-up: allocates the signature's tensors.
    times = {key: [] for key in cases}
    for round_index in range(rounds):
      order = list(cases)
      for key in order if round_index % 2 == 0 else reversed(order):
        start = time.perf_counter()
        for _ in range(calls):
          cases[key]()
        times[key].append((time.perf_counter() - start) / calls)
  steps = {quantization: {kind: [
      {"rows": rows, "position": p,
       "step_ms": 1000 * statistics.median(times[kind, quantization, rows, p]),
       "step_ms_all": [1000 * t for t in times[kind, quantization, rows, p]]}
      for rows in rows_list for p in positions] for kind in KINDS}
      for quantization in export_seq2seq.FILES}
  return {"steps": steps, "rows": rows_list,
          "goals": {quantization: {f"rows_{r}": goals(kinds, r) for r in rows_list}
                    for quantization, kinds in steps.items()}}


def validation_inputs(task_name: str, config, examples: int) -> list[np.ndarray]:
  """The first `examples` validation inputs of a pretraining task, without padding."""
  batches = input_pipeline.seq2seq_batches(task_name, "validation", config.data, train=False)
  inputs = []
  for batch in batches:
    inputs.extend(row[row != splitter.PAD_ID] for row in batch["inputs"][batch["weights"] > 0])
    if len(inputs) >= examples:
      break
  return inputs[:examples]


def measure_tflite_agreement(export_dir: str, workdir: str, beam_size: int, max_length: int,
                             examples: int) -> dict:
  """How often beam search over the exported files returns the JAX search's top sequence.

  One input at a time, as on a device: JAX `generate.generate` on the checkpoint the export
  came from, each input padded to its smallest training length (`generate.pad_inputs`, as
  the CLI does) vs `generate.generate_tflite` on each file, same scorer.
  """
  with open(os.path.join(export_dir, export_seq2seq.MANIFEST_FILE)) as f:
    config = ml_collections.ConfigDict(json.load(f)["config"])
  trainer = train.Trainer(config)
  model = trainer.model
  variables, step = train.load_variables(workdir, trainer)
  inputs = validation_inputs(trainer.task_name, config, examples)
  files = {name: export_seq2seq.TFLiteEncoderDecoder(os.path.join(export_dir, name))
           for name in export_seq2seq.FILES.values()}
  same = {(name, scorer): [] for name in files for scorer in SCORERS}
  regrets = {key: [] for key in same}
  for scorer_name, scorer in SCORERS.items():
    search = jax.jit(functools.partial(generate.generate, model, max_length=max_length,
                                       beam_size=beam_size, scorer=scorer))
    for ids in inputs:
      padded = generate.pad_inputs([ids], config.data)
      reference = jax.device_get(search(variables, padded)).sequences[0, :1]
      for name, exported in files.items():
        chosen = np.asarray(generate.generate_tflite(
            exported, ids[None], max_length=max_length, beam_size=beam_size,
            scorer=scorer).sequences[0, :1])
        same[name, scorer_name].append(bool(np.array_equal(reference, chosen)))
        if not same[name, scorer_name][-1]:
          scores = float_scores(model, variables, np.repeat(padded, 2, axis=0),
                                np.concatenate([reference, chosen]))
          regrets[name, scorer_name].append(float(scores[0] - scores[1]))
  return {"export": export_dir, "workdir": workdir, "checkpoint_step": step,
          "examples": len(inputs), "beam_size": beam_size, "max_length": max_length,
          "same_top_sequence": {f"{name} ({scorer})": float(np.mean(matches))
                                for (name, scorer), matches in same.items()},
          # Float score (teacher forcing, length-penalized) of the JAX search's choice
          # minus that of the exported file's, where they differ: > 0, the file did worse.
          "float_score_regret_of_mismatches": {
              f"{name} ({scorer})": sorted(regret)
              for (name, scorer), regret in regrets.items()}}


def plot(report: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top  (optional: the "bench" extra)
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, (latency, memory) = pyplot.subplots(1, 2, figsize=(11, 4.2))
  positions = report["positions"]
  for kind, rows in report["steps"].items():
    for row_count in report["rows"]:
      ms = [r["step_ms"] for r in rows if r["rows"] == row_count]
      rows_label = "1 row" if row_count == 1 else f"{row_count} rows (beams)"
      latency.plot(positions, ms, marker="o", label=f"{kind}, {rows_label}")
  latency.set(xscale="log", yscale="log", xlabel="position decoded",
              ylabel="ms per decode step", title="decode step latency")
  for kind, sizes in report["cache_bytes_per_sequence"].items():
    memory.plot(positions, [s / 1024 for s in sizes], marker="o", label=kind)
  memory.set(xscale="log", yscale="log", xlabel="sequence length",
             ylabel="KiB per sequence", title="decoder cache per sequence")
  for ax in (latency, memory):
    ax.set_xticks(positions, [str(p) for p in positions])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(True, alpha=0.3)
    ax.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def format_tables(report: dict) -> str:
  lines = ["| decoder | rows | " + " | ".join(f"p={p}" for p in report["positions"])
           + " | cache KiB/seq at p=" + str(report["positions"][-1]) + " |",
           "|---" * (len(report["positions"]) + 3) + "|"]
  for kind, rows in report["steps"].items():
    for row_count in report["rows"]:
      ms = [f"{r['step_ms']:.3f} ms" for r in rows if r["rows"] == row_count]
      lines.append(f"| {kind} | {row_count} | " + " | ".join(ms)
                   + f" | {report['cache_bytes_per_sequence'][kind][-1] / 1024:,.1f} |")
  lines += ["", "| beam search (ms) | float | uint8 |", "|---|---|---|"]
  for decoder, times in report["beam_search_ms"].items():
    lines.append(f"| {decoder} | {times['float']:.1f} | {times['uint8']:.1f} |")
  lines += ["", "goals: " + json.dumps(report["goals"])]
  return "\n".join(lines)


def goals(steps: dict, rows: int) -> dict:
  """The issue's two ratios, as the median over rounds of each round's ratio (both cases
  timed within the same round, so slow drifts of the machine's load cancel), and as the
  ratio of the medians."""
  times = {(kind, r["position"]): np.asarray(r["step_ms_all"]) for kind, rs in steps.items()
           for r in rs if r["rows"] == rows}
  ratios = {"matt_1024_over_16": (("matt", 1024), ("matt", 16)),
            "causal_over_matt_at_1024": (("causal", 1024), ("matt", 1024))}
  result = {"rows": rows}
  for name, (top, bottom) in ratios.items():
    result[name] = float(np.median(times[top] / times[bottom]))
    result[name + "_of_medians"] = float(np.median(times[top]) / np.median(times[bottom]))
  return result


def format_tflite_table(tflite: dict) -> str:
  positions = sorted({r["position"] for r in tflite["steps"]["float32"]["matt"]})
  lines = ["| TFLite decode_step (one thread) | rows | "
           + " | ".join(f"p={p}" for p in positions) + " |",
           "|---" * (len(positions) + 2) + "|"]
  for quantization, kinds in tflite["steps"].items():
    for kind, rows in kinds.items():
      for row_count in tflite["rows"]:
        ms = [f"{r['step_ms']:.3f} ms" for r in rows if r["rows"] == row_count]
        lines.append(f"| {kind} {quantization} | {row_count} | " + " | ".join(ms) + " |")
  return "\n".join(lines + ["", "TFLite goals: " + json.dumps(tflite["goals"])])


PARTS = ("jax", "tflite")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="benchmarks/results")
  parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                      help="jax: sections 1-4; tflite: sections 5-6.")
  parser.add_argument("--positions", type=int, nargs="+", default=[16, 64, 256, 1024, 2048])
  parser.add_argument("--input_bytes", type=int, default=256)
  parser.add_argument("--beam_size", type=int, default=4)
  parser.add_argument("--steps", type=int, default=64, help="Decode steps per timing.")
  parser.add_argument("--rounds", type=int, default=40)
  parser.add_argument("--tflite_calls", type=int, default=20,
                      help="TFLite decode_step calls per timing.")
  parser.add_argument("--max_length", type=int, default=64, help="Beam search steps.")
  parser.add_argument("--workdir", default=None,
                      help="A trained encoder-decoder run (e.g. configs/pretrain_fortunes.py): "
                           "uint8 agreement; "
                           "with --export, the run that export came from.")
  parser.add_argument("--export", default=None,
                      help="An export of --workdir by byteflax.export_seq2seq: TFLite vs "
                           "JAX beam search agreement.")
  parser.add_argument("--agreement_examples", type=int, default=200)
  args = parser.parse_args()
  if 1024 not in args.positions or 16 not in args.positions:
    parser.error("--positions must include 16 and 1024 (the goals compare them).")
  if args.export and not args.workdir:
    parser.error("--export needs the --workdir of the run it was exported from.")

  report = {"device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(),
            "config": "configs/pretrain_fortunes.py (matt) / :causal", "args": vars(args),
            "positions": args.positions}
  if "jax" in args.parts:
    models = {kind: build(kind, args.input_bytes) for kind in KINDS}
    rows = [1, args.beam_size]
    steps = measure_steps(models, args.positions, rows, args.steps, args.rounds)
    report.update(
        rows=rows, steps=steps, cache_bytes_per_sequence=cache_bytes(models, args.positions),
        beam_search_ms=measure_beam_search(models, args.beam_size, args.max_length,
                                           args.rounds),
        goals={f"rows_{r}": goals(steps, r) for r in rows})
    if args.workdir and not args.export:
      report["uint8_agreement"] = measure_agreement(
          args.workdir, args.beam_size, args.max_length, args.agreement_examples)
  os.makedirs(args.out, exist_ok=True)

  def save():  # After each long part, so that a later failure loses nothing measured.
    with open(os.path.join(args.out, "decode.json"), "w") as f:
      json.dump(report, f, indent=2)

  save()
  if "tflite" in args.parts:
    report["tflite"] = measure_tflite_steps(args.positions, args.input_bytes,
                                            args.beam_size, args.rounds, args.tflite_calls)
    save()
    print(format_tflite_table(report["tflite"]), flush=True)
    if args.export:
      report["tflite_agreement"] = measure_tflite_agreement(
          args.export, args.workdir, args.beam_size, args.max_length,
          args.agreement_examples)
      save()
  if "jax" in args.parts:
    plot(report, os.path.join(args.out, "decode.png"))
    print(format_tables(report))
  if "uint8_agreement" in report:
    print("uint8 agreement:", json.dumps(report["uint8_agreement"]))
  if "tflite_agreement" in report:
    print("TFLite agreement:", json.dumps(report["tflite_agreement"]))


if __name__ == "__main__":
  main()
