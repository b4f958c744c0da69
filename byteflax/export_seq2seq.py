r"""Exports a trained encoder-decoder to TFLite: `encode` and `decode_step` signatures.

  python -m byteflax.export_seq2seq --workdir=/tmp/pretrain_corpus \
      --out=/tmp/pretrain_corpus/export [--rows=1,4] [--cache_length=64] [--config=...]

(the run's own config.json unless --config is given) writes `seq2seq_float.tflite`,
`seq2seq_int8.tflite` (int8 weights, dynamically quantized matmuls: `export.INT8`) and
`manifest.json` into --out; `python -m byteflax.generate --tflite=<out>` searches over
them (beam search, greedy or sampling, float or uint8 scores). Same path as the
classifiers' export (jax2tf graph mode -> TFLiteConverter).

On-device contract (signatures sharing one copy of the weights):
- `encode_<n>`, one per input length n (the training length buckets): `ids` int32
  `[1, n]` (the byte splitter of `byteflax.export`, sentinels as ids 258, 257, ...) ->
  `encoded` float32 `[1, m, d]` and `encoded_mask` bool `[1, m]`, m = n / the GBST
  downsample rate.
- `decode_step_<n>_rows_<r>`: one decoder step for r rows (beams) of one input of length
  n: `token` int32 `[r]` at `position` int32 `[]` (BOS = 0 at position 0), `encoded` /
  `encoded_mask` as `encode_<n>` gave them (`[1, ...]`, shared by the rows), and the state
  `cache_<i>` -> `logits` float32 `[r, 259]` and the new state `cache_<i>`. The state is
  the decoder's `init_cache` flattened (jax.tree order), zeros before position 0; a beam
  search reorders it by gathering rows. With the MAtt decoder it is one `[r, dim]` running
  sum per layer: its size and a step's cost do not depend on the position, so the model
  never grows. A causal decoder's state is its KV cache of `cache_length` positions
  (`[r, cache_length, heads, head_dim]` keys and values per layer), which bounds the
  output length.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import json

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

import byteflax
from byteflax import cli
from byteflax import export
from byteflax import input_pipeline
from byteflax import quant
from byteflax import seq2seq
from byteflax import splitter
from byteflax import train

FILES = {export.FLOAT32: "seq2seq_float.tflite", export.INT8: "seq2seq_int8.tflite"}
MANIFEST_FILE = "manifest.json"


def encode_key(length: int) -> str:
  return f"encode_{length}"


def decode_key(length: int, rows: int) -> str:
  return f"decode_step_{length}_rows_{rows}"


def cache_key(index: int) -> str:
  return f"cache_{index}"


def inference_model(model: seq2seq.EncoderDecoder, model_config: ml_collections.ConfigDict
                    ) -> seq2seq.EncoderDecoder:
  """The encoder-decoder without fake quantization, its encoder in the TFLite form of its
  classifier (`export.EXPORT_OVERRIDES`); model_config is the run's config.model."""
  encoder_name = model_config.encoder_name
  export.check_exportable(ml_collections.ConfigDict(
      dict(model_name=encoder_name, model=model_config.encoder)))
  return model.clone(
      encoder=model.encoder.clone(quant=quant.QuantConfig(),
                                  **export.EXPORT_OVERRIDES[encoder_name]),
      decoder=model.decoder.clone(quant=quant.QuantConfig()))


def convert(model: seq2seq.EncoderDecoder, params, lengths: Sequence[int],
            rows: Sequence[int], cache_length: int,
            quantization: str = export.FLOAT32) -> bytes:
  """A TFLite flatbuffer with `encode_<n>` and `decode_step_<n>_rows_<r>` signatures.

  Args:
    model: an inference model (`inference_model`).
    params: its params.
    lengths: encoder input lengths n.
    rows: decoder batch sizes r (beams of one input; 1 for greedy decoding or sampling).
    cache_length: positions a causal decoder's KV cache holds (MAtt's state has none).
    quantization: export.FLOAT32 or export.INT8 (int8 weights, dynamic-range matmuls).
  """
  if quantization not in FILES:
    raise ValueError(f"quantization must be one of {list(FILES)}, got {quantization!r}.")
  variables = {"params": params}

  def encode(ids):
    encoded, mask = model.apply(variables, ids, method=model.encode)
    return {"encoded": encoded, "encoded_mask": mask}

  def decode_step(token, position, encoded, encoded_mask, *leaves):
    row_count = token.shape[0]
    structure = jax.tree.structure(cache_shapes(model, params, row_count, cache_length))
    # Each row (beam) reads the same encoder outputs: copies, concatenated, because TFLite
    # runs a broadcast (BROADCAST_TO) ~10x slower than a copy (docs/export.md, GBST).
    repeat = lambda x: jnp.concatenate([x] * row_count)
    logits, cache = model.apply(variables, token, position,
                                jax.tree.unflatten(structure, leaves), repeat(encoded),
                                repeat(encoded_mask), method=model.decode_step)
    return {"logits": logits,
            **{cache_key(i): leaf for i, leaf in enumerate(jax.tree.leaves(cache))}}

  tf_encode, tf_decode_step = export.to_tf(encode), export.to_tf(decode_step)
  signatures = {}
  for length in lengths:
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    signatures[encode_key(length)] = tf_encode.get_concrete_function(
        tf.TensorSpec(ids.shape, tf.int32, name="ids"))
    encoded, mask = jax.eval_shape(functools.partial(model.apply, method=model.encode),
                                   variables, ids)
    for row_count in rows:
      leaves = jax.tree.leaves(cache_shapes(model, params, row_count, cache_length))
      signatures[decode_key(length, row_count)] = tf_decode_step.get_concrete_function(
          tf.TensorSpec((row_count,), tf.int32, name="token"),
          tf.TensorSpec((), tf.int32, name="position"),
          tf.TensorSpec(encoded.shape, tf.float32, name="encoded"),
          tf.TensorSpec(mask.shape, tf.bool, name="encoded_mask"),
          *(tf.TensorSpec(leaf.shape, tf.float32, name=cache_key(i))
            for i, leaf in enumerate(leaves)))
  return export.to_tflite({"encode": tf_encode, "decode_step": tf_decode_step}, signatures,
                          quantization)


def cache_shapes(model: seq2seq.EncoderDecoder, params, rows: int, cache_length: int):
  """The decoder state's shapes for `rows` rows (jax.ShapeDtypeStruct leaves)."""
  return jax.eval_shape(lambda: model.apply({"params": params}, rows, cache_length,
                                            method=model.init_cache))


class TFLiteEncoderDecoder:
  """An exported encoder-decoder in the LiteRT interpreter: the `encode` and
  `decode_step` signatures of one file, by input length and rows."""

  def __init__(self, path: str, num_threads: int = 1):
    from ai_edge_litert import interpreter as litert  # Heavy; only needed here.
    self.interpreter = litert.Interpreter(model_path=path, num_threads=num_threads)
    keys = self.interpreter.get_signature_list()
    self.lengths = sorted(int(k.split("_")[1]) for k in keys if k.startswith("encode_"))
    self.rows = sorted({int(k.rsplit("_", 1)[1]) for k in keys if k.startswith("decode_")})
    self._runners = {key: self.interpreter.get_signature_runner(key) for key in keys}
    # A causal decoder's KV cache leaves are [rows, positions, heads, head_dim]; MAtt's
    # running sums [rows, dim] have no positions (any output length).
    leaves = self.init_cache(self.lengths[0], self.rows[0])
    self.max_positions = next((leaf.shape[1] for leaf in leaves if leaf.ndim == 4), None)

  def encode(self, ids: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """ids `[1, width]` int32 right-padded with 0 -> (the signature length n it ran at,
    encoded `[1, m, d]`, encoded_mask `[1, m]`)."""
    used = int((np.asarray(ids) != splitter.PAD_ID).sum())
    length = next((n for n in self.lengths if n >= used), None)
    if length is None:
      raise ValueError(f"The input has {used} ids; the exported encoder reads at most "
                       f"{self.lengths[-1]}.")
    outputs = self._runners[encode_key(length)](
        ids=export.cut_ids(np.asarray(ids, np.int32)[:, :used], length))
    return length, outputs["encoded"], outputs["encoded_mask"]

  def init_cache(self, length: int, rows: int) -> list[np.ndarray]:
    """Zero decoder state for `rows` rows of an input encoded at `length`."""
    details = self._runners[self._decode_key(length, rows)].get_input_details()
    count = sum(name.startswith("cache_") for name in details)
    return [np.zeros(details[cache_key(i)]["shape"], np.float32) for i in range(count)]

  def decode_step(self, length: int, tokens: np.ndarray, position, cache: list[np.ndarray],
                  encoded: np.ndarray, encoded_mask: np.ndarray
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One step for rows of one input: tokens `[rows]` -> (logits `[rows, 259]`, cache)."""
    runner = self._runners[self._decode_key(length, len(tokens))]
    outputs = runner(token=np.asarray(tokens, np.int32),
                     position=np.asarray(position, np.int32), encoded=encoded,
                     encoded_mask=encoded_mask,
                     **{cache_key(i): np.asarray(leaf) for i, leaf in enumerate(cache)})
    return outputs["logits"], [outputs[cache_key(i)] for i in range(len(cache))]

  def _decode_key(self, length: int, rows: int) -> str:
    if rows not in self.rows:
      raise ValueError(f"The export decodes {self.rows} rows (beams) at a time, not {rows}; "
                       f"export again with --rows={rows}.")
    return decode_key(length, rows)


def export_encoder_decoder(config: ml_collections.ConfigDict, workdir: str, out_dir: str,
                           rows: Sequence[int] = (1, 4), cache_length: int = 64) -> dict:
  """Writes `FILES` and the manifest for the newest checkpoint in workdir; returns it."""
  if config.model_name != seq2seq.MODEL_NAME:
    raise export.UnexportableConfigError(
        f"config.model_name is {config.model_name!r}; byteflax.export_seq2seq exports "
        f"encoder-decoders ({seq2seq.MODEL_NAME!r}); export classifiers with "
        "byteflax.export.")
  trainer = train.Trainer(config, training=False)
  model = inference_model(trainer.model, config.model)
  variables, step = train.load_variables(workdir, trainer, collections=("params",))
  params = jax.device_get(variables["params"])
  lengths = input_pipeline.bucket_boundaries(config.data)
  rows = sorted(set(rows))
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  sizes = {}
  for quantization, filename in FILES.items():
    flatbuffer = convert(model, params, lengths, rows, cache_length, quantization)
    (out / filename).write_bytes(flatbuffer)
    sizes[filename] = len(flatbuffer)
    logging.info("Wrote %s (%d bytes).", filename, len(flatbuffer))
  leaves = jax.tree.leaves(cache_shapes(model, params, 1, cache_length))
  manifest = {
      "byteflax_version": byteflax.__version__,
      "model_name": config.model_name,
      "checkpoint_step": step,
      "num_params": train.count_params(params),
      "attention_kind": config.model.decoder.attention_kind,
      "signatures": {"encode": [encode_key(n) for n in lengths],
                     "decode_step": [decode_key(n, r) for n in lengths for r in rows]},
      "max_input_length": lengths[-1],
      "rows": rows,
      "cache": {cache_key(i): list(leaf.shape[1:]) for i, leaf in enumerate(leaves)},
      "cache_length": (cache_length if config.model.decoder.attention_kind == "causal"
                       else None),
      "vocab_size": splitter.VOCAB_SIZE, "bos_id": seq2seq.BOS_ID,
      "eos_id": splitter.EOS_ID,
      "files": {name: {"bytes": size, "quantization": quantization}
                for (quantization, name), size in zip(FILES.items(), sizes.values())},
      "config": json.loads(config.to_json_best_effort()),
  }
  (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
  return manifest


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "The config the run in --workdir was trained with; default: the "
      "run's own config.json.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Run whose newest checkpoint is exported.")
  out = flags.DEFINE_string("out", None, "Directory for the .tflite files and manifest.json.")
  rows = flags.DEFINE_list("rows", ["1", "4"],
                           "Decoder batch sizes to export: beam sizes (1: greedy, sampling).")
  cache_length = flags.DEFINE_integer(
      "cache_length", 64, "Causal decoders: positions the KV cache holds (the longest "
      "output). MAtt's state has no length.")
  flags.mark_flags_as_required(["workdir", "out"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    manifest = export_encoder_decoder(train.run_config(workdir.value, config.value),
                                      workdir.value, out.value, [int(r) for r in rows.value],
                                      cache_length.value)
    print(json.dumps({"out": out.value, **{name: file["bytes"] for name, file in
                                           manifest["files"].items()}}, indent=2))

  app.run(run)


if __name__ == "__main__":
  main()
