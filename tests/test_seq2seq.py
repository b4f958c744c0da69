"""Encoder-decoder: teacher forcing equals step-by-step decoding, for both decoder kinds."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byteflax import models
from byteflax import quant as quant_lib
from byteflax import seq2seq

ENCODER = {"embed_dim": 32, "qrnn_features": 16, "qrnn_layers": 1}
DECODER = {"dim": 32, "num_heads": 2, "mlp_dim": 64, "num_layers": 2}


def _model(kind, quant=quant_lib.QuantConfig(), encoder_name="byte_qrnn", encoder=None):
  return seq2seq.build_encoder_decoder(
      {"encoder_name": encoder_name, "encoder": encoder or ENCODER,
       "decoder": {**DECODER, "attention_kind": kind}}, quant)


def _batch(seed=0, targets_length=9):
  rng = np.random.default_rng(seed)
  inputs = rng.integers(3, 259, (3, 24)).astype(np.int32)
  inputs[1, 15:] = 0  # A padded row.
  targets = rng.integers(1, 259, (3, targets_length)).astype(np.int32)
  return jnp.asarray(inputs), jnp.asarray(targets)


def _init(model, inputs, targets):
  # Jitted: one compile instead of one per operation (eager init took 25 s of CPU).
  return jax.jit(model.init)(jax.random.PRNGKey(0), inputs, targets)


def _step_by_step(model, variables, inputs, targets):
  encoded, encoded_mask = jax.jit(lambda ids: model.apply(variables, ids, method="encode"))(
      inputs)
  cache = model.apply(variables, inputs.shape[0], targets.shape[1], method="init_cache")
  step = jax.jit(lambda token, position, cache: model.apply(
      variables, token, position, cache, encoded, encoded_mask, method="decode_step"))
  decoder_inputs = seq2seq.shift_right(targets)
  logits = []
  for position in range(targets.shape[1]):
    step_logits, cache = step(decoder_inputs[:, position], jnp.int32(position), cache)
    logits.append(step_logits)
  return jnp.stack(logits, axis=1), cache


@pytest.mark.parametrize("kind", ["causal", "matt"])
@pytest.mark.parametrize("quantized", [False, True])
def test_teacher_forcing_equals_step_by_step(kind, quantized):
  quant = quant_lib.QuantConfig(enabled=quantized)
  model = _model(kind, quant)
  inputs, targets = _batch()
  variables = _init(model, inputs, targets)
  if quantized:  # Non-trivial activation ranges, as after training.
    _, updates = jax.jit(lambda v: model.apply(v, inputs, targets,
                                               mutable=[quant_lib.COLLECTION]))(variables)
    variables = {**variables, **updates}
  parallel = jax.jit(model.apply)(variables, inputs, targets)
  assert parallel.shape == (3, 9, 259) and parallel.dtype == jnp.float32
  stepped, _ = _step_by_step(model, variables, inputs, targets)
  if not quantized:
    np.testing.assert_allclose(stepped, parallel, atol=2e-5, rtol=1e-5)
    return
  # The two forms round floats differently (matmuls of 1 vs t rows, softmax over max_length
  # vs t keys); a value sitting on a boundary of the 8-bit grid can then move one grid step,
  # and that step propagates. Most logits are bit-equal; bound the rest.
  error = np.abs(np.asarray(stepped) - np.asarray(parallel))
  assert np.mean(error) < 1e-2 and np.max(error) < 0.05 * np.abs(parallel).max()


@pytest.mark.parametrize("kind", ["causal", "matt"])
def test_cache_leaves_lead_with_batch_and_matt_state_is_fixed_size(kind):
  model = _model(kind)
  inputs, targets = _batch()
  variables = _init(model, inputs, targets)
  for max_length in (8, 64):
    cache = model.apply(variables, 5, max_length, method="init_cache")
    shapes = [leaf.shape for leaf in jax.tree.leaves(cache)]
    assert len(shapes) == DECODER["num_layers"] * (2 if kind == "causal" else 1)
    assert all(shape[0] == 5 for shape in shapes)
    if kind == "matt":
      assert all(shape == (5, DECODER["dim"]) for shape in shapes)
    else:
      assert all(shape == (5, max_length, 2, 16) for shape in shapes)


@pytest.mark.parametrize("kind", ["causal", "matt"])
def test_decoder_is_causal_and_ignores_input_padding(kind):
  model = _model(kind)
  inputs, targets = _batch()
  variables = _init(model, inputs, targets)
  apply = jax.jit(model.apply)
  logits = apply(variables, inputs, targets)
  changed = apply(variables, inputs, targets.at[:, 5:].set(7))
  # Later targets must not change earlier logits.
  np.testing.assert_allclose(changed[:, :6], logits[:, :6], atol=1e-5)
  assert np.abs(changed[:, 6:] - logits[:, 6:]).max() > 1e-3
  longer = jnp.pad(inputs, ((0, 0), (0, 8)))  # More padding: same logits.
  np.testing.assert_allclose(apply(variables, longer, targets), logits, atol=1e-5)


@pytest.mark.parametrize("encoder_name,encoder", [
    ("byte_qrnn", ENCODER),
    ("byte_transformer", {"embed_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 32}),
])
def test_encoder_params_have_the_classifiers_names(encoder_name, encoder):
  model = _model("matt", encoder_name=encoder_name, encoder=encoder)
  inputs, targets = _batch()
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs, targets)["params"]
  classifier = models.build_model(encoder_name, 1, encoder)
  classifier_params = jax.eval_shape(classifier.init, jax.random.PRNGKey(0), inputs)["params"]
  shapes = lambda tree: jax.tree.map(lambda leaf: leaf.shape,
                                     flax.traverse_util.flatten_dict(tree))
  expected = {k: v for k, v in shapes(classifier_params).items() if k[0] not in ("pool", "head")}
  assert shapes(params["encoder"]) == expected
  assert set(params) == {"encoder", "decoder"}


def test_shift_right_starts_with_bos():
  shifted = seq2seq.shift_right(jnp.array([[5, 6, 7], [8, 1, 0]]))
  np.testing.assert_array_equal(shifted, [[0, 5, 6], [0, 8, 1]])


def test_bad_configs_name_the_problem():
  with pytest.raises(ValueError, match="attention_kind 'linear'"):
    _model("linear").init(jax.random.PRNGKey(0), *_batch())
  with pytest.raises(ValueError, match="does not take"):
    seq2seq.build_encoder_decoder({"encoder_name": "byte_qrnn", "encoder": ENCODER,
                                   "decoder": {"layers": 2}})
  with pytest.raises(ValueError, match="needs exactly the keys"):
    seq2seq.build_encoder_decoder({"encoder_name": "byte_qrnn", "encoder": ENCODER})
