r"""Generates text with a trained encoder-decoder: beam search, greedy decoding or sampling.

  python -m byteflax.generate --workdir=/tmp/pretrain \
      --input="Whenever you find yourself on the side of the <extra_id_0>, pause." \
      [--beam_size=4] [--max_length=64] [--alpha=0.6] [--num_return=1] \
      [--temperature=0] [--seed=0] [--scorer=float|uint8]
  # The same search over an export of byteflax.export_seq2seq, in the LiteRT interpreter:
  python -m byteflax.generate --tflite=/tmp/pretrain/export[/seq2seq_int8.tflite] \
      --input="..." [the same options]

The run in --workdir generates with its own config.json (or --config, the config it was
trained with, same overrides); its newest checkpoint is restored through
`train.load_variables`. --input may be repeated (one batch).
Beam search with --beam_size > 1; --beam_size=1 decodes greedily, or samples from
softmax(logits / T) with --temperature=T > 0. --scorer=uint8 scores beams as the on-device
op does (`beam_search.Uint8Scorer`).

Span-corruption models (configs/pretrain_fortunes.py) were trained to fill the spans that
sentinels replace: write `<extra_id_N>` in the input where the N-th span (from 0) is
missing, and the output lists each sentinel followed by the bytes the model puts there,
e.g. `<extra_id_0>majority`. The sentinels are ids 258, 257, ... (bytes 0xFF, 0xFE, ...,
which never occur in UTF-8; tasks/pretraining.py).
"""

from __future__ import annotations

import functools
import os
import re

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

import tasks  # pylint: disable=unused-import  (registers the SeqIO tasks)
from byteflax import beam_search
from byteflax import cli
from byteflax import export
from byteflax import export_seq2seq
from byteflax import input_pipeline
from byteflax import seq2seq
from byteflax import splitter
from byteflax import train
from tasks import pretraining

# Bytes 0xF5-0xFF never occur in UTF-8, so ids 258 down to 248 are unambiguous sentinels.
NUM_SENTINELS = 11
FIRST_SENTINEL = pretraining.first_sentinel_id()
_SENTINEL_MARKER = re.compile(r"<extra_id_(\d+)>")
# Ids no target holds: generation masks them (PAD is only the decoder's BOS).
NEVER_GENERATED = (splitter.PAD_ID, splitter.UNK_ID)


def encode_input(text: str, max_length: int) -> np.ndarray:
  """Text with `<extra_id_N>` markers -> int32 ids [n <= max_length], ending in EOS."""
  ids, end = [], 0
  for marker in _SENTINEL_MARKER.finditer(text):
    index = int(marker.group(1))
    if index >= NUM_SENTINELS:
      raise ValueError(f"{marker.group(0)}: sentinels go up to <extra_id_"
                       f"{NUM_SENTINELS - 1}>.")
    ids.extend(splitter.ByteSplitter(add_eos=False).encode(text[end:marker.start()]))
    ids.append(FIRST_SENTINEL - index)
    end = marker.end()
  ids.extend(splitter.ByteSplitter(add_eos=False).encode(text[end:]))
  if len(ids) >= max_length:
    raise ValueError(f"The input has {len(ids)} ids; the model reads at most "
                     f"{max_length - 1} plus EOS (config.data.max_length).")
  return np.asarray(ids + [splitter.EOS_ID], np.int32)


def format_output(ids: np.ndarray) -> str:
  """Generated ids -> text up to EOS, sentinel ids written as `<extra_id_N>`."""
  ids = np.asarray(ids).reshape(-1)
  end = np.flatnonzero(ids == splitter.EOS_ID)
  ids = ids[:end[0]] if end.size else ids
  is_sentinel = ids > FIRST_SENTINEL - NUM_SENTINELS
  pieces, start = [], 0
  for position in np.flatnonzero(is_sentinel):
    pieces.append(splitter.ByteSplitter.decode(ids[start:position]))
    pieces.append(f"<extra_id_{FIRST_SENTINEL - int(ids[position])}>")
    start = position + 1
  pieces.append(splitter.ByteSplitter.decode(ids[start:]))
  return "".join(pieces)


def ban(logits: jax.Array, banned_ids: tuple[int, ...]) -> jax.Array:
  """logits [rows, vocab] with the banned ids at -inf (never generated)."""
  return logits.at[:, banned_ids].set(-jnp.inf)


def make_step_fn(model: seq2seq.EncoderDecoder, variables, encoded: jax.Array,
                 encoded_mask: jax.Array, banned_ids: tuple[int, ...] = NEVER_GENERATED
                 ) -> beam_search.StepFn:
  """The decoder step over rows of encoder outputs [rows, m, d] (`beam_search.StepFn`);
  `banned_ids` get logit -inf."""
  def step_fn(tokens, position, cache):
    logits, cache = model.apply(variables, tokens, position, cache, encoded, encoded_mask,
                                method=model.decode_step)
    return ban(logits, banned_ids), cache
  return step_fn


def search(step_fn: beam_search.StepFn, cache, *, batch_size: int, max_length: int,
           beam_size: int = 4, num_return: int = 1, alpha: float = 0.6,
           temperature: float = 0.0,
           scorer: beam_search.FloatScorer | beam_search.Uint8Scorer = (
               beam_search.FloatScorer()),
           rng: jax.Array | None = None) -> beam_search.Hypotheses:
  """Any decoder step -> Hypotheses [batch, num_return, max_length].

  beam_size > 1: beam search (temperature must be 0: the model's own scores), the cache's
  leaves [batch * beam_size, ...]; beam_size = 1: greedy (temperature 0) or sampling
  (temperature > 0, with rng).
  """
  if beam_size > 1 and temperature > 0:
    raise ValueError("Sampling (temperature > 0) draws one sequence: use beam_size=1.")
  if beam_size > 1:
    return beam_search.beam_search(step_fn, cache, batch_size=batch_size,
                                   beam_size=beam_size, max_length=max_length, alpha=alpha,
                                   num_return=num_return, scorer=scorer)
  if num_return != 1:
    raise ValueError(f"Greedy decoding and sampling return one sequence, not {num_return}.")
  sequences, log_probs = beam_search.sample(step_fn, cache, batch_size=batch_size,
                                            max_length=max_length, rng=rng,
                                            temperature=temperature, scorer=scorer)
  return beam_search.Hypotheses(sequences[:, None], log_probs[:, None], log_probs[:, None])


def generate(model: seq2seq.EncoderDecoder, variables, inputs: jax.Array, *,
             max_length: int, beam_size: int = 4, num_return: int = 1, alpha: float = 0.6,
             temperature: float = 0.0,
             scorer: beam_search.FloatScorer | beam_search.Uint8Scorer = (
                 beam_search.FloatScorer()),
             rng: jax.Array | None = None,
             banned_ids: tuple[int, ...] = NEVER_GENERATED) -> beam_search.Hypotheses:
  """Decodes inputs [batch, n] int32 -> Hypotheses [batch, num_return, max_length].

  See `search` for beam_size, temperature and rng; banned_ids are never generated. Jit it
  with everything but variables, inputs and rng static.
  """
  encoded, encoded_mask = model.apply(variables, inputs, method=model.encode)
  encoded, encoded_mask = beam_search.repeat_beams((encoded, encoded_mask), beam_size)
  batch_size = inputs.shape[0]
  cache = model.apply(variables, batch_size * beam_size, max_length, method=model.init_cache)
  return search(make_step_fn(model, variables, encoded, encoded_mask, banned_ids), cache,
                batch_size=batch_size, max_length=max_length, beam_size=beam_size,
                num_return=num_return, alpha=alpha, temperature=temperature, scorer=scorer,
                rng=rng)


def generate_tflite(model: export_seq2seq.TFLiteEncoderDecoder, ids: np.ndarray, *,
                    max_length: int, beam_size: int = 4, num_return: int = 1,
                    alpha: float = 0.6, temperature: float = 0.0,
                    scorer: beam_search.FloatScorer | beam_search.Uint8Scorer = (
                        beam_search.FloatScorer()),
                    rng: jax.Array | None = None,
                    banned_ids: tuple[int, ...] = NEVER_GENERATED
                    ) -> beam_search.Hypotheses:
  """`generate` over an exported model: ids [1, n] (one input) -> Hypotheses
  [1, num_return, max_length].

  The same search (`search`) drives the exported `decode_step` signature of beam_size rows,
  called from the search loop through `jax.pure_callback` once per step. The search is
  compiled once per model, input length and options, not once per input.
  """
  if model.max_positions is not None and max_length > model.max_positions:
    raise ValueError(f"max_length {max_length} exceeds the {model.max_positions} positions "
                     "of the exported KV cache; export again with a larger --cache_length.")
  length, encoded, encoded_mask = model.encode(ids)
  cache = model.init_cache(length, beam_size)
  run = _tflite_search(model, length, tuple(leaf.shape for leaf in cache), max_length,
                       beam_size, num_return, alpha, temperature, scorer, banned_ids)
  return run(cache, encoded, encoded_mask,
             jax.random.PRNGKey(0) if rng is None else rng)


@functools.lru_cache(maxsize=64)
def _tflite_search(model: export_seq2seq.TFLiteEncoderDecoder, length: int,
                   cache_shapes: tuple[tuple[int, ...], ...], max_length: int,
                   beam_size: int, num_return: int, alpha: float, temperature: float,
                   scorer, banned_ids: tuple[int, ...]):
  """The jitted search of `generate_tflite` (cache, encoded, encoded_mask, rng) -> Hypotheses;
  the encoder outputs reach the interpreter as callback operands."""
  shapes = (jax.ShapeDtypeStruct((beam_size, splitter.VOCAB_SIZE), jnp.float32),
            [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in cache_shapes])

  def host_step(tokens, position, encoded, encoded_mask, *leaves):
    return model.decode_step(length, tokens, position, list(leaves), encoded, encoded_mask)

  def run(cache, encoded, encoded_mask, rng):
    def step_fn(tokens, position, cache):
      logits, cache = jax.pure_callback(host_step, shapes, tokens, position, encoded,
                                        encoded_mask, *cache)
      return ban(logits, banned_ids), cache

    return search(step_fn, cache, batch_size=1, max_length=max_length, beam_size=beam_size,
                  num_return=num_return, alpha=alpha, temperature=temperature, scorer=scorer,
                  rng=rng if temperature > 0 else None)

  return jax.jit(run)


def load_model(config: ml_collections.ConfigDict, workdir: str
               ) -> tuple[seq2seq.EncoderDecoder, dict, int]:
  """(model, variables, step) of the newest checkpoint of an encoder-decoder run."""
  if config.model_name != seq2seq.MODEL_NAME:
    raise ValueError(
        f"config.model_name is {config.model_name!r}, which does not generate text; "
        f"generation needs an encoder-decoder ({seq2seq.MODEL_NAME!r}, e.g. "
        "configs/pretrain_fortunes.py).")
  trainer = train.Trainer(config, training=False)
  variables, step = train.load_variables(workdir, trainer)
  return trainer.model, variables, step


def pad_inputs(ids: list[np.ndarray], data: ml_collections.ConfigDict) -> np.ndarray:
  """Right-pads to the smallest training length bucket that fits them all: [batch, n]."""
  longest = max(len(i) for i in ids)
  length = next(b for b in input_pipeline.bucket_boundaries(data) if b >= longest)
  padded = np.full((len(ids), length), splitter.PAD_ID, np.int32)
  for row, row_ids in enumerate(ids):
    padded[row, :len(row_ids)] = row_ids
  return padded


def tflite_path(path: str) -> str:
  """--tflite: an export directory (its float file) or one .tflite file of it."""
  if os.path.isdir(path):
    path = os.path.join(path, export_seq2seq.FILES[export.FLOAT32])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--tflite: no file {path}; write it with python -m "
                            "byteflax.export_seq2seq.")
  return path


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "The config the run in --workdir was trained with; default: the "
      "run's own config.json.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Run whose newest checkpoint generates.")
  tflite = flags.DEFINE_string(
      "tflite", None, "Instead of --workdir: an export of "
      "byteflax.export_seq2seq (a directory: its float file; or one of its .tflite files), "
      "run in the LiteRT interpreter.")
  inputs = flags.DEFINE_multi_string(
      "input", None, "Input text; <extra_id_N> marks the N-th missing span. Repeatable.")
  beam_size = flags.DEFINE_integer("beam_size", 4, "Beams; 1 = greedy or sampling.")
  max_length = flags.DEFINE_integer("max_length", 64, "Most ids generated, EOS included.")
  alpha = flags.DEFINE_float("alpha", 0.6, "Length-penalty exponent (GNMT); 0 = none.")
  num_return = flags.DEFINE_integer("num_return", 1, "Hypotheses printed per input.")
  temperature = flags.DEFINE_float(
      "temperature", 0.0, "With --beam_size=1: sample at this temperature (0 = greedy).")
  seed = flags.DEFINE_integer("seed", 0, "Sampling seed.")
  scorer = flags.DEFINE_enum("scorer", "float", sorted(beam_search.SCORERS),
                             "float32 log-probs, or uint8 codes with int32 sums.")
  flags.mark_flags_as_required(["input"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if (tflite.value is None) == (workdir.value is None):
      raise app.UsageError("Pass --workdir (a checkpoint), or --tflite (an export), not both.")
    if tflite.value is not None and config.value is not None:
      raise app.UsageError("--config goes with --workdir; an export carries its own.")
    if not flags.FLAGS["verbosity"].present:
      # Only the generated text on a terminal: orbax logs dozens of lines per restore.
      logging.set_verbosity(logging.WARNING)
    options = dict(max_length=max_length.value, beam_size=beam_size.value,
                   num_return=num_return.value, alpha=alpha.value,
                   temperature=temperature.value,
                   scorer=beam_search.make_scorer(scorer.value),
                   rng=jax.random.PRNGKey(seed.value))
    if tflite.value:
      path = tflite_path(tflite.value)
      model = export_seq2seq.TFLiteEncoderDecoder(path)
      results = [jax.device_get(generate_tflite(
          model, encode_input(text, model.lengths[-1])[None], **options))
                 for text in inputs.value]
      print(f"{path}: {'MAtt' if model.max_positions is None else 'causal'} decoder, "
            "LiteRT interpreter")
    else:
      run_config = train.run_config(workdir.value, config.value)
      trained, variables, step = load_model(run_config, workdir.value)
      ids = [encode_input(text, run_config.data.max_length) for text in inputs.value]
      rng = options.pop("rng")
      decode = jax.jit(functools.partial(generate, trained, **options))
      result = jax.device_get(decode(variables, pad_inputs(ids, run_config.data), rng=rng))
      results = [beam_search.Hypotheses(*(field[i:i + 1] for field in result))
                 for i in range(len(ids))]
      print(f"checkpoint step {step}, {run_config.model.decoder.attention_kind} decoder")
    for text, result in zip(inputs.value, results):
      print(f"input: {text}")
      for rank, (sequence, score) in enumerate(zip(result.sequences[0], result.scores[0]),
                                               1):
        print(f"  {rank}. [{score:.3f}] {format_output(sequence)}")

  app.run(run)


if __name__ == "__main__":
  main()
