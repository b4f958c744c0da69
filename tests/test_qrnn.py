"""Tests for byteflax.qrnn."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byteflax.qrnn import QRNNEncoder, QRNNLayer, linear_recurrence
from tests import utils

DIM = 3
FEATURES = 4


def naive_linear_recurrence(forget, update, reverse=False):
  """Sequential reference for `linear_recurrence`."""
  forget, update = np.asarray(forget), np.asarray(update)
  state = np.zeros_like(update)
  c = np.zeros_like(update[:, 0])
  steps = range(update.shape[1])
  for t in reversed(steps) if reverse else steps:
    c = forget[:, t] * c + (1 - forget[:, t]) * update[:, t]
    state[:, t] = c
  return state


def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


def _naive_qrnn(x, mask, kernel, bias, pooling, reverse):
  """Per-timestep numpy QRNN layer with the same gate convolution."""
  batch, length, _ = x.shape
  width = kernel.shape[0]
  features = kernel.shape[-1] // (len(pooling) + 1)
  x = np.where(mask[..., None], x, 0.0)
  out = np.zeros((batch, length, features), np.float32)
  steps = range(length - 1, -1, -1) if reverse else range(length)
  for n in range(batch):
    c = np.zeros(features, np.float32)
    for t in steps:
      if not mask[n, t]:
        continue  # Pads carry the state and output 0.
      gates = bias.copy()
      for j in range(width):
        source = t + j if reverse else t - (width - 1) + j
        if 0 <= source < length:
          gates = gates + x[n, source] @ kernel[j]
      z = np.tanh(gates[:features])
      f = _sigmoid(gates[features: 2 * features])
      c = f * c + (1 - f) * z
      out[n, t] = c * _sigmoid(gates[2 * features:]) if pooling == "fo" else c
  return out


def _ragged_inputs(lengths, length, seed=0):
  return utils.ragged_inputs(lengths, length, DIM, seed)


def _jit_apply(model, deterministic=True):
  """Returns a jitted `(variables, x, mask, rng) -> numpy output` function."""

  @jax.jit
  def apply(variables, x, mask, rng):
    return model.apply(
        variables, x, mask, deterministic=deterministic, rngs={"dropout": rng}
    )

  return lambda variables, x, mask, rng=jax.random.PRNGKey(0): np.asarray(
      apply(variables, x, mask, rng)
  )


def _apply(model, variables, x, mask):
  return _jit_apply(model)(variables, x, mask)


def _init(model, x, mask):
  init = jax.jit(functools.partial(model.init, deterministic=True))
  return init(jax.random.PRNGKey(0), x, mask)


@pytest.mark.parametrize("scan", ["associative", "sequential", "doubling", "auto"])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_recurrence_matches_naive(reverse, scan):
  key_f, key_z = jax.random.split(jax.random.PRNGKey(0))
  forget = jax.random.uniform(key_f, (2, 13, 3))
  update = jax.random.normal(key_z, (2, 13, 3))
  np.testing.assert_allclose(
      np.asarray(jax.jit(linear_recurrence, static_argnums=(2, 3))(
          forget, update, reverse, scan)),
      naive_linear_recurrence(forget, update, reverse),
      atol=1e-5,
  )


@pytest.mark.parametrize("reverse", [False, True])
def test_sequential_and_associative_scans_have_equal_gradients(reverse):
  key_f, key_z, key_w = jax.random.split(jax.random.PRNGKey(1), 3)
  forget = jax.random.uniform(key_f, (2, 11, 3))
  update = jax.random.normal(key_z, (2, 11, 3))
  weights = jax.random.normal(key_w, (2, 11, 3))  # A loss that reads every state.

  def gradients(scan):
    loss = lambda f, z: jnp.sum(weights * linear_recurrence(f, z, reverse, scan))
    return jax.grad(loss, argnums=(0, 1))(forget, update)

  for sequential, associative in zip(gradients("sequential"), gradients("associative")):
    np.testing.assert_allclose(sequential, associative, atol=1e-5)


def test_scan_methods_agree_on_an_encoder():
  x, mask = utils.ragged_inputs([40, 17, 1], 40, 6)
  encoder = QRNNEncoder(num_layers=2, features=5)
  variables = _init(encoder, x, mask)
  outputs = [encoder.clone(scan=scan).apply(variables, x, mask, deterministic=True)
             for scan in ("associative", "sequential", "doubling")]
  np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
  np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-5)
  with pytest.raises(ValueError, match="scan must be one of"):
    linear_recurrence(x, x, scan="parallel")


@pytest.mark.parametrize("pooling", ["f", "fo"])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_matches_naive(pooling, reverse):
  x, mask = _ragged_inputs([9, 6, 1], 9)
  model = QRNNLayer(features=FEATURES, kernel_size=3, pooling=pooling, reverse=reverse)
  variables = _init(model, x, mask)
  params = nn.meta.unbox(variables)["params"]
  # Random bias so every gate's bias is exercised.
  params["conv"]["bias"] = jax.random.normal(
      jax.random.PRNGKey(1), params["conv"]["bias"].shape
  )
  y = _apply(model, {"params": params}, x, mask)
  y_ref = _naive_qrnn(
      x, mask, np.asarray(params["conv"]["kernel"]), np.asarray(params["conv"]["bias"]),
      pooling, reverse,
  )
  assert y.shape == (3, 9, FEATURES)
  np.testing.assert_allclose(y, y_ref, atol=1e-5)


def test_encoder_padding_invariance():
  lengths = [7, 5, 2, 0]
  model = QRNNEncoder(num_layers=2, features=FEATURES, bidirectional=True)
  x, mask = _ragged_inputs(lengths, 7)
  x_long, mask_long = _ragged_inputs(lengths, 12, seed=1)
  x_long[:, :7] = np.where(mask[..., None], x, x_long[:, :7])
  x_long[-1, -1] = [np.nan, np.inf, -np.inf]  # Pads must be masked, not multiplied by 0.
  variables = _init(model, x, mask)
  apply = _jit_apply(model)
  y = apply(variables, x, mask)
  y_long = apply(variables, x_long, mask_long)
  assert y.shape == (4, 7, model.output_features)
  np.testing.assert_allclose(y_long[:, :7][mask], y[mask], atol=1e-6)
  assert np.all(y[~mask] == 0.0)
  assert np.all(y_long[~mask_long] == 0.0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_output_features(bidirectional):
  x, mask = _ragged_inputs([5, 3], 5)
  model = QRNNEncoder(num_layers=2, features=FEATURES, bidirectional=bidirectional)
  y = _apply(model, _init(model, x, mask), x, mask)
  assert model.output_features == FEATURES * (2 if bidirectional else 1)
  assert y.shape == (2, 5, model.output_features)


@pytest.mark.parametrize(
    "dropout_rate,zoneout", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.3)]
)
def test_stochasticity_only_in_training_with_nonzero_rates(dropout_rate, zoneout):
  x, mask = _ragged_inputs([8, 5], 8)
  model = QRNNEncoder(
      num_layers=2, features=FEATURES, dropout_rate=dropout_rate, zoneout=zoneout
  )
  variables = _init(model, x, mask)
  evaluate, train = _jit_apply(model), _jit_apply(model, deterministic=False)
  eval_a = evaluate(variables, x, mask, jax.random.PRNGKey(1))
  eval_b = evaluate(variables, x, mask, jax.random.PRNGKey(2))
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a = train(variables, x, mask, jax.random.PRNGKey(1))
  train_b = train(variables, x, mask, jax.random.PRNGKey(2))
  assert np.all(train_a[~mask] == 0.0)
  if dropout_rate or zoneout:
    assert not np.allclose(train_a, train_b)
    assert not np.allclose(train_a, eval_a)
  else:
    np.testing.assert_array_equal(train_a, eval_a)
    np.testing.assert_array_equal(train_a, train_b)


def test_zoneout_inference_is_training_expectation():
  # With one step, c = (1 - f) z is linear in the sampled gate, so the mean over samples
  # of the training output must match the deterministic output.
  x, mask = _ragged_inputs([1], 1)
  model = QRNNLayer(features=FEATURES, zoneout=0.4)
  variables = _init(model, x, mask)
  train = jax.vmap(
      lambda rng: model.apply(
          variables, x, mask, deterministic=False, rngs={"dropout": rng}
      )
  )
  samples = jax.jit(train)(jax.random.split(jax.random.PRNGKey(1), 4000))
  np.testing.assert_allclose(
      np.asarray(samples.mean(axis=0)), _apply(model, variables, x, mask), atol=0.01
  )


def test_invalid_pooling_raises():
  x, mask = _ragged_inputs([4], 4)
  with pytest.raises(ValueError, match="pooling"):
    QRNNLayer(features=FEATURES, pooling="ifo").init(
        jax.random.PRNGKey(0), x, mask, deterministic=True
    )
  with pytest.raises(ValueError, match="pooling"):
    QRNNEncoder(features=FEATURES, pooling="o").init(
        jax.random.PRNGKey(0), x, mask, deterministic=True
    )


def test_params_are_logically_partitioned():
  x, mask = _ragged_inputs([4], 4)
  model = QRNNEncoder(num_layers=2, features=FEATURES)
  params = flax.traverse_util.flatten_dict(_init(model, x, mask)["params"], sep="/")
  assert sorted(params) == sorted(
      f"layer_{i}_{d}/conv/{p}" for i in range(2) for d in ("fwd", "bwd")
      for p in ("kernel", "bias")
  )
  assert params["layer_1_bwd/conv/kernel"].names == ("conv_window", "embed", "hidden")
  assert params["layer_1_bwd/conv/kernel"].value.shape == (3, 2 * FEATURES, 3 * FEATURES)
  assert params["layer_0_fwd/conv/bias"].names == ("hidden",)


def test_gradients_finite():
  x, mask = _ragged_inputs([6, 3, 0], 6)
  model = QRNNEncoder(num_layers=2, features=FEATURES, dropout_rate=0.1, zoneout=0.1)
  variables = _init(model, x, mask)

  def loss(variables, x):
    y = model.apply(
        variables, x, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)}
    )
    return jnp.sum(y**2)

  grads_params, grads_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(
      variables, jnp.asarray(x)
  )
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(grads_params))
  assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
  grads_x = np.asarray(grads_x)
  assert np.all(np.isfinite(grads_x)) and np.any(grads_x != 0)
  # Pad inputs are ignored, so they get zero gradient.
  assert np.all(grads_x[~mask] == 0.0)
