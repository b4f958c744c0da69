"""Tests for byteflax.gbst."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byteflax import gbst
from byteflax.gbst import GBST
from byteflax.gbst import DepthwiseConv1D
from tests import utils

DIM = 4


def _ragged_inputs(lengths, length, seed=0):
  return utils.ragged_inputs(lengths, length, DIM, seed)


def _init_apply(model, x, mask):
  # jit: compiling one program is much cheaper than eager per-op compilation per shape.
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x, mask)
  y, y_mask = jax.jit(model.apply)(variables, x, mask)
  return variables, np.asarray(y), np.asarray(y_mask)


def _naive_gbst(x, mask, kernel, bias, max_block_size, rate):
  """Per-position numpy GBST without convolution or calibration."""
  batch, length, dim = x.shape
  latent = np.zeros_like(x)
  for n in range(batch):
    for t in range(length):
      cands, scores = [], []
      for b in range(1, max_block_size + 1):
        start = (t // b) * b
        idx = [i for i in range(start, min(start + b, length)) if mask[n, i]]
        cand = x[n, idx].mean(axis=0) if idx else np.zeros(dim, np.float32)
        cands.append(cand)
        scores.append(cand @ kernel[:, 0] + bias[0])
      w = np.exp(np.array(scores) - max(scores))
      latent[n, t] = (w / w.sum()) @ np.stack(cands)
  out_len = -(-length // rate)
  y = np.zeros((batch, out_len, dim), np.float32)
  y_mask = np.zeros((batch, out_len), bool)
  for n in range(batch):
    for j in range(out_len):
      idx = [i for i in range(j * rate, min((j + 1) * rate, length)) if mask[n, i]]
      if idx:
        y[n, j] = latent[n, idx].mean(axis=0)
        y_mask[n, j] = True
  return y, y_mask


@pytest.mark.parametrize(
    "length,max_block_size,rate", [(8, 4, 2), (7, 4, 2), (10, 3, 3), (5, 2, 1), (9, 4, 4)]
)
def test_shapes_and_pooled_mask(length, max_block_size, rate):
  lengths = [length, max(length - 3, 1), 1, 0]
  x, mask = _ragged_inputs(lengths, length)
  model = GBST(max_block_size=max_block_size, downsample_rate=rate)
  _, y, y_mask = _init_apply(model, x, mask)
  out_len = -(-length // rate)
  assert y.shape == (len(lengths), out_len, DIM)
  expected_mask = np.arange(out_len)[None, :] * rate < np.asarray(lengths)[:, None]
  np.testing.assert_array_equal(y_mask, expected_mask)
  assert np.all(y[~y_mask] == 0.0)
  assert np.all(np.isfinite(y))


@pytest.mark.parametrize("conv_kernel_size,calibration", [(0, False), (5, True), (4, False)])
def test_padding_invariance(conv_kernel_size, calibration):
  lengths = [9, 6, 3, 1]
  model = GBST(
      max_block_size=4,
      downsample_rate=2,
      conv_kernel_size=conv_kernel_size,
      score_calibration=calibration,
  )
  x, mask = _ragged_inputs(lengths, 9)
  x_long, mask_long = _ragged_inputs(lengths, 16)
  x_long[:, :9] = np.where(mask[..., None], x, x_long[:, :9])
  x_long[-1, -1, :3] = [np.nan, np.inf, -np.inf]  # Pads must be masked, not multiplied by 0.
  variables, y, y_mask = _init_apply(model, x, mask)
  y_long, y_mask_long = jax.jit(model.apply)(variables, x_long, mask_long)
  y_long, y_mask_long = np.asarray(y_long), np.asarray(y_mask_long)
  np.testing.assert_array_equal(y_mask_long[:, : y.shape[1]], y_mask)
  assert not y_mask_long[:, y.shape[1]:].any()
  np.testing.assert_allclose(y_long[:, : y.shape[1]], y, atol=1e-6, rtol=1e-6)
  assert np.all(y_long[~y_mask_long] == 0.0)


def test_identity_with_single_block_and_no_downsampling():
  lengths = [6, 4]
  x, mask = _ragged_inputs(lengths, 6)
  model = GBST(max_block_size=1, downsample_rate=1, conv_kernel_size=0)
  _, y, y_mask = _init_apply(model, x, mask)
  np.testing.assert_array_equal(y_mask, mask)
  np.testing.assert_allclose(y[mask], x[mask], atol=1e-6)
  assert np.all(y[~mask] == 0.0)


@pytest.mark.parametrize("length,max_block_size,rate", [(11, 4, 2), (9, 3, 3)])
def test_matches_naive_reference(length, max_block_size, rate):
  lengths = [length, 7, 2]
  x, mask = _ragged_inputs(lengths, length, seed=1)
  model = GBST(max_block_size=max_block_size, downsample_rate=rate, conv_kernel_size=0)
  variables, y, y_mask = _init_apply(model, x, mask)
  params = nn.meta.unbox(variables)["params"]
  # Non-zero bias so the test also covers the bias path.
  params["score"]["bias"] = jnp.array([0.3])
  y, y_mask = jax.jit(model.apply)({"params": params}, x, mask)
  y_ref, y_mask_ref = _naive_gbst(
      x, mask, np.asarray(params["score"]["kernel"]), np.asarray(params["score"]["bias"]),
      max_block_size, rate,
  )
  np.testing.assert_array_equal(np.asarray(y_mask), y_mask_ref)
  np.testing.assert_allclose(np.asarray(y), y_ref, atol=1e-5)


def test_score_calibration_changes_result():
  x, mask = _ragged_inputs([8, 5], 8)
  plain = GBST(conv_kernel_size=0)
  calibrated = GBST(conv_kernel_size=0, score_calibration=True)
  variables, y_plain, _ = _init_apply(plain, x, mask)
  # Same parameters: calibration adds none.
  y_cal, _ = jax.jit(calibrated.apply)(variables, x, mask)
  assert np.all(np.isfinite(y_cal))
  assert not np.allclose(np.asarray(y_cal), y_plain, atol=1e-4)


def test_params_are_logically_partitioned():
  x, mask = _ragged_inputs([8], 8)
  variables = jax.jit(GBST().init)(jax.random.PRNGKey(0), x, mask)
  params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  names = {path: leaf.names for path, leaf in params.items()}
  assert names == {
      "conv/kernel": ("conv_window", "embed"),
      "conv/bias": ("embed",),
      "score/kernel": ("embed", "score"),
      "score/bias": ("score",),
  }


@pytest.mark.parametrize("kernel_size", [1, 4, 5])
def test_depthwise_conv_matches_grouped_lax_conv(kernel_size):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 6))
  conv = DepthwiseConv1D(kernel_size)
  variables = conv.init(jax.random.PRNGKey(1), x)
  params = nn.meta.unbox(variables)["params"]
  params = {**params, "bias": jax.random.normal(jax.random.PRNGKey(2), (6,))}
  left = (kernel_size - 1) // 2
  expected = jax.lax.conv_general_dilated(
      x, params["kernel"][:, None, :], (1,), [(left, kernel_size - 1 - left)],
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=6) + params["bias"]
  np.testing.assert_allclose(conv.apply({"params": params}, x), expected, atol=1e-5)


def test_depthwise_conv_init_scale_matches_nn_conv():
  x = jnp.zeros((1, 8, 256))
  ours = nn.meta.unbox(DepthwiseConv1D(5).init(jax.random.PRNGKey(0), x))["params"]["kernel"]
  grouped = nn.Conv(256, (5,), feature_group_count=256).init(
      jax.random.PRNGKey(0), x)["params"]["kernel"]
  assert float(ours.std()) == pytest.approx(float(grouped.std()), rel=0.1)


def test_gradients_finite():
  x, mask = _ragged_inputs([8, 5, 0], 8)
  model = GBST(score_calibration=True)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x, mask)

  def loss(variables, x):
    y, _ = model.apply(variables, x, mask)
    return jnp.sum(y**2)

  grads_params, grads_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, jnp.asarray(x))
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(grads_params))
  assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
  assert np.all(np.isfinite(grads_x))
  assert np.any(np.asarray(grads_x) != 0)
  # Pad inputs are ignored, so they get zero gradient.
  assert np.all(np.asarray(grads_x)[~mask] == 0.0)


@pytest.mark.parametrize("block_size", [1, 2, 3, 4])
def test_block_helpers_equal_a_repeat_cut_to_length(block_size):
  length = 10  # Not a multiple of 3 or 4: the last window is partial.
  windows = -(-length // block_size)
  blocks = jax.random.normal(jax.random.PRNGKey(0), (2, windows, 5))
  weights = jax.random.uniform(jax.random.PRNGKey(1), (2, length))
  repeated = jnp.repeat(blocks, block_size, axis=1)[:, :length]
  np.testing.assert_array_equal(gbst.upsample(blocks, block_size, length), repeated)
  np.testing.assert_allclose(gbst.weigh_blocks(blocks, weights, block_size),
                             weights[..., None] * repeated, rtol=1e-6)
