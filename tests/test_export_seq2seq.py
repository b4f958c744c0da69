"""Encoder-decoder export: `encode` / `decode_step` signatures match JAX; search over LiteRT."""

import functools
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byteflax import beam_search
from byteflax import export
from byteflax import export_seq2seq
from byteflax import generate
from byteflax import seq2seq
from byteflax import splitter
from configs import byteqrnn_toxicity
from configs import pretrain_fortunes

LENGTHS, ROWS, CACHE_LENGTH = (32, 64), (1, 3), 16


@functools.cache
def exported(kind: str, quantization: str = export.FLOAT32):
  """(JAX model, params, path of its TFLite file) for a random smoke encoder-decoder."""
  config = pretrain_fortunes.get_config("smoke" + (",causal" if kind == "causal" else ""))
  model = export_seq2seq.inference_model(seq2seq.build_encoder_decoder(config.model),
                                         config.model)
  ids = jnp.full((1, LENGTHS[0]), splitter.NUM_SPECIAL_IDS, jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids, ids[:, :8])["params"]
  path = tempfile.mkdtemp() + f"/{kind}_{quantization}.tflite"
  with open(path, "wb") as f:
    f.write(export_seq2seq.convert(model, params, LENGTHS, ROWS, CACHE_LENGTH, quantization))
  return model, params, path


def text_ids(text: str) -> np.ndarray:
  return generate.encode_input(text, LENGTHS[-1])[None]


@pytest.mark.parametrize("kind", ["matt", "causal"])
def test_encode_and_decode_steps_match_jax(kind):
  """Each signature length and row count; a state carried through several steps."""
  model, params, path = exported(kind)
  tflite = export_seq2seq.TFLiteEncoderDecoder(path)
  assert tflite.lengths == list(LENGTHS) and tflite.rows == list(ROWS)
  assert tflite.max_positions == (CACHE_LENGTH if kind == "causal" else None)
  variables = {"params": params}
  # Jitted: one compile per shape instead of one per operation (4x faster on CPU).
  encode = jax.jit(lambda ids: model.apply(variables, ids, method=model.encode))
  decode_step = jax.jit(lambda *args: model.apply(variables, *args, method=model.decode_step))
  rng = np.random.default_rng(0)
  for text, length in (("short <extra_id_0> text", 32), ("x" * 40 + "<extra_id_0>.", 64)):
    ids = text_ids(text)
    signature_length, encoded, mask = tflite.encode(ids)
    assert signature_length == length
    jax_encoded, jax_mask = encode(export.cut_ids(ids, length))
    np.testing.assert_allclose(encoded, jax_encoded, atol=1e-4)
    np.testing.assert_array_equal(mask, jax_mask)
    for rows in ROWS:
      cache = tflite.init_cache(length, rows)
      jax_cache = model.apply(variables, rows, CACHE_LENGTH, method=model.init_cache)
      for position in range(4):
        tokens = (np.zeros(rows, np.int32) if position == 0 else
                  rng.integers(3, splitter.VOCAB_SIZE, rows).astype(np.int32))
        logits, cache = tflite.decode_step(length, tokens, position, cache, encoded, mask)
        jax_logits, jax_cache = decode_step(
            jnp.asarray(tokens), jnp.int32(position), jax_cache,
            *beam_search.repeat_beams((jax_encoded, jax_mask), rows))
        np.testing.assert_allclose(logits, jax_logits, atol=1e-4)
        for leaf, jax_leaf in zip(cache, jax.tree.leaves(jax_cache)):
          np.testing.assert_allclose(leaf, jax_leaf, atol=1e-4)


@pytest.mark.slow
def test_int8_decode_step_tracks_jax():
  model, params, path = exported("matt", export.INT8)
  tflite = export_seq2seq.TFLiteEncoderDecoder(path)
  ids = text_ids("an int8 <extra_id_0> test")
  length, encoded, mask = tflite.encode(ids)
  jax_encoded, jax_mask = model.apply({"params": params}, export.cut_ids(ids, length),
                                      method=model.encode)
  logits, _ = tflite.decode_step(length, np.zeros(3, np.int32), 0, tflite.init_cache(length, 3),
                                 encoded, mask)
  jax_logits, _ = model.apply(
      {"params": params}, jnp.zeros(3, jnp.int32), 0,
      model.apply({"params": params}, 3, CACHE_LENGTH, method=model.init_cache),
      *beam_search.repeat_beams((jax_encoded, jax_mask), 3), method=model.decode_step)
  assert np.corrcoef(logits.ravel(), np.ravel(jax_logits))[0, 1] > 0.99


@pytest.mark.parametrize("kind,beam_size,scorer", [
    ("matt", 3, beam_search.FloatScorer()),
    pytest.param("matt", 3, beam_search.Uint8Scorer(), marks=pytest.mark.slow),
    ("matt", 1, beam_search.FloatScorer()),
    pytest.param("causal", 3, beam_search.FloatScorer(), marks=pytest.mark.slow),
], ids=["matt-beam-float", "matt-beam-uint8", "matt-greedy", "causal-beam-float"])
def test_search_over_litert_equals_jax_search(kind, beam_size, scorer):
  model, params, path = exported(kind)
  tflite = export_seq2seq.TFLiteEncoderDecoder(path)
  search = functools.partial(generate.generate, model, max_length=CACHE_LENGTH,
                             beam_size=beam_size, num_return=beam_size, scorer=scorer,
                             banned_ids=generate.NEVER_GENERATED)
  for text in ("The <extra_id_0> jumps.", "Another, longer input to encode: yes"):
    ids = text_ids(text)
    expected = search({"params": params}, jnp.asarray(export.cut_ids(
        ids, next(n for n in LENGTHS if n >= ids.shape[1]))))
    result = generate.generate_tflite(tflite, ids, max_length=CACHE_LENGTH,
                                      beam_size=beam_size, num_return=beam_size,
                                      scorer=scorer)
    np.testing.assert_array_equal(result.sequences, expected.sequences)
    np.testing.assert_allclose(result.scores, expected.scores, atol=1e-3)


def test_clear_errors(tmp_path):
  _, _, path = exported("causal")
  tflite = export_seq2seq.TFLiteEncoderDecoder(path)
  with pytest.raises(ValueError, match="exceeds the 16 positions"):
    generate.generate_tflite(tflite, text_ids("x"), max_length=17, beam_size=3)
  with pytest.raises(ValueError, match=r"decodes \[1, 3\] rows .* not 4"):
    generate.generate_tflite(tflite, text_ids("x"), max_length=8, beam_size=4)
  with pytest.raises(ValueError, match="reads at most 64"):
    tflite.encode(np.full((1, 65), 5, np.int32))
  with pytest.raises(export.UnexportableConfigError, match="encoder-decoders"):
    export_seq2seq.export_encoder_decoder(byteqrnn_toxicity.get_config("smoke"),
                                          str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match="export_seq2seq"):
    generate.tflite_path(str(tmp_path))
