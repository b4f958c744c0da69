"""Tests for byteflax.transformer and the classifiers built on the shared skeleton."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byteflax import models
from byteflax import partitioning
from byteflax import pooling
from byteflax import quant
from byteflax import transformer
from configs import transformer_toxicity
from tests import utils

DIM = 8
HEADS = 2


def _encoder(**kwargs):
  return transformer.TransformerEncoder(num_heads=HEADS, mlp_dim=16, **kwargs)


def _encode(model, x, mask, variables=None):
  """Encodes with the given variables (or fresh ones) -> (variables, y, y_mask)."""
  if variables is None:
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x, mask, deterministic=True)
  y, y_mask = jax.jit(lambda v, x, m: model.apply(v, x, m, deterministic=True))(
      variables, x, mask)
  return variables, np.asarray(y), np.asarray(y_mask)


def _naive_attention(params, queries, keys, key_mask, query_positions, key_positions):
  """Per-example, per-head numpy attention with rotary angles computed pair by pair."""
  head_dim = DIM // HEADS
  half = head_dim // 2
  freqs = 10_000.0 ** (-np.arange(half) / half)

  def project(name, x):  # -> [length, heads, head_dim]
    y = x @ params[name]["kernel"] + params[name]["bias"]
    return y.reshape(len(x), HEADS, head_dim)

  def rotate(v, position):  # v: [head_dim]
    out = np.empty_like(v)
    for i in range(half):
      c, s = np.cos(position * freqs[i]), np.sin(position * freqs[i])
      out[i] = v[i] * c - v[i + half] * s
      out[i + half] = v[i + half] * c + v[i] * s
    return out

  batch, query_length, _ = queries.shape
  out = np.zeros((batch, query_length, HEADS, head_dim))
  for n in range(batch):
    q, k, v = (project("query", queries[n]), project("key", keys[n]),
               project("value", keys[n]))
    real = np.flatnonzero(key_mask[n])
    for h in range(HEADS):
      for i in range(query_length):
        qi = rotate(q[i, h], query_positions[i]) / np.sqrt(head_dim)
        scores = np.array([qi @ rotate(k[j, h], key_positions[j]) for j in real])
        weights = np.exp(scores - scores.max())
        out[n, i, h] = (weights / weights.sum()) @ v[real, h]
  return out.reshape(batch, query_length, DIM) @ params["out"]["kernel"] + params["out"]["bias"]


def test_attention_matches_naive_reference_with_masks_and_pooled_queries():
  keys, key_mask = utils.ragged_inputs([7, 4, 1], 7, DIM)
  queries = np.random.default_rng(1).normal(size=(3, 4, DIM)).astype(np.float32)
  query_positions = transformer.window_centres(4, 2)
  key_positions = transformer.window_centres(7, 1)
  model = transformer.MultiHeadAttention(HEADS, DIM // HEADS)
  variables = model.init(jax.random.PRNGKey(0), queries, keys, key_mask, query_positions,
                         key_positions)
  got = model.apply(variables, queries, keys, key_mask, query_positions, key_positions)
  params = jax.tree.map(np.asarray, nn.meta.unbox(variables["params"]))
  want = _naive_attention(params, queries, keys, key_mask, np.asarray(query_positions),
                          np.asarray(key_positions))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_rotary_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(0)
  q, k = rng.normal(size=(2, 1, 1, 1, 8)).astype(np.float32)

  def score(query_position, key_position):
    rotated_q = transformer.apply_rotary(q, jnp.array([query_position]))
    rotated_k = transformer.apply_rotary(k, jnp.array([key_position]))
    return float(jnp.sum(rotated_q * rotated_k))

  assert score(3.5, 1.0) == pytest.approx(score(12.5, 10.0), rel=1e-4)
  assert score(3.5, 1.0) != pytest.approx(score(3.5, 2.0), rel=1e-3)


def test_window_centres():
  np.testing.assert_array_equal(transformer.window_centres(3, 1), [0, 1, 2])
  np.testing.assert_array_equal(transformer.window_centres(3, 4), [1.5, 5.5, 9.5])


@pytest.mark.parametrize("kind", ["mean", "max"])
def test_pool_windows_reads_real_positions_only(kind):
  x, mask = utils.ragged_inputs([5, 2, 0], 5, 3)
  pooled, pooled_mask = pooling.pool_windows(jnp.asarray(x), jnp.asarray(mask), 2, kind)
  reduce = np.mean if kind == "mean" else np.max
  np.testing.assert_array_equal(pooled_mask, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
  for n, j in zip(*np.nonzero(pooled_mask)):
    window = x[n, 2 * j:2 * j + 2][mask[n, 2 * j:2 * j + 2]]
    np.testing.assert_allclose(pooled[n, j], reduce(window, axis=0), rtol=1e-6)
  assert np.all(np.asarray(pooled)[~np.asarray(pooled_mask)] == 0.0)


@pytest.mark.parametrize("block_layers,stride,kind", [
    ((2,), 2, "mean"),
    ((1, 1, 1), 2, "mean"),
    ((1, 1), 3, "max"),
])
def test_encoder_lengths_masks_and_padding_invariance(block_layers, stride, kind):
  lengths = [9, 6, 3, 1, 0]
  model = _encoder(block_layers=block_layers, pool_stride=stride, pool_kind=kind)
  x, mask = utils.ragged_inputs(lengths, 9, DIM)
  variables, y, y_mask = _encode(model, x, mask)
  # Block by block: ceil(9 / stride), then ceil of that / stride, ...
  out_length = 9
  for _ in block_layers[1:]:
    out_length = -(-out_length // stride)
  total_stride = stride ** (len(block_layers) - 1)
  assert y.shape == (len(lengths), out_length, DIM)
  expected_mask = np.arange(out_length)[None, :] * total_stride < np.array(lengths)[:, None]
  np.testing.assert_array_equal(y_mask, expected_mask)
  assert np.all(y[~y_mask] == 0.0)
  assert np.all(np.isfinite(y))
  # Padding to 16 (different garbage at the pads) never changes the real positions.
  longer_x, longer_mask = utils.ragged_inputs(lengths, 16, DIM, seed=3)
  longer_x[:, :9] = np.where(mask[..., None], x, longer_x[:, :9])
  _, longer_y, longer_y_mask = _encode(model, longer_x, longer_mask, variables)
  np.testing.assert_array_equal(longer_y_mask[:, :out_length], y_mask)
  np.testing.assert_allclose(longer_y[:, :out_length][y_mask], y[y_mask], rtol=1e-5,
                             atol=1e-5)


def test_bad_head_split_is_a_clear_error():
  x, mask = utils.ragged_inputs([3], 3, DIM)
  with pytest.raises(ValueError, match="heads of even width"):
    transformer.TransformerEncoder(num_heads=8, mlp_dim=4).init(
        jax.random.PRNGKey(0), x, mask, deterministic=True)


_SMALL = {
    "byte_qrnn": {"embed_dim": 16, "qrnn_layers": 1, "qrnn_features": 8},
    "byte_transformer": {"embed_dim": 16, "num_layers": 2, "num_heads": 2, "mlp_dim": 32,
                         "mlp_activation": "geglu"},
    "byte_funnel_transformer": {"embed_dim": 16, "block_layers": (1, 1), "num_heads": 2,
                                "mlp_dim": 32, "pool_kind": "max"},
    "raw_byte_transformer": {"embed_dim": 16, "num_layers": 2, "num_heads": 2, "mlp_dim": 32},
}


def _ragged_ids(length, seed=0):
  ids = np.random.default_rng(seed).integers(3, 259, size=(4, length)).astype(np.int32)
  ids[np.arange(length)[None, :] >= np.array([[24], [13], [5], [0]])] = 0
  return ids


def test_every_model_is_registered_and_tested():
  assert set(models.MODELS) == set(_SMALL)


@pytest.mark.parametrize("name", sorted(_SMALL))
def test_classifier_padding_invariance_and_finite_grads(name):
  model = models.build_model(name, 3, _SMALL[name])
  ids = _ragged_ids(24)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids)["params"]

  @jax.jit
  def logits_and_grads(params, ids):
    loss = lambda p: jnp.sum(model.apply({"params": p}, ids) ** 2)
    return model.apply({"params": params}, ids), jax.grad(loss)(params)

  logits, grads = logits_and_grads(params, ids)
  assert logits.shape == (4, 3)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  # Every encoder parameter is reached (the pooling scorer's bias is not: softmax ignores
  # a shift of all scores).
  assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads["encoder"]))
  longer_logits, _ = logits_and_grads(params, np.pad(ids, ((0, 0), (0, 16))))
  np.testing.assert_allclose(longer_logits, logits, rtol=1e-5, atol=1e-5)


def test_funnel_has_the_transformer_params_and_fewer_flops():
  ids = _ragged_ids(64)
  plain = models.build_model("byte_transformer", 1, {"num_layers": 4})
  funnel = models.build_model("byte_funnel_transformer", 1, {"block_layers": (2, 2)})
  abstract = [jax.eval_shape(m.init, jax.random.PRNGKey(0), ids) for m in (plain, funnel)]
  assert jax.tree.map(np.shape, abstract[0]) == jax.tree.map(np.shape, abstract[1])
  flops = [jax.jit(m.apply).lower(abstract[0], ids).compile().cost_analysis()["flops"]
           for m in (plain, funnel)]
  assert flops[1] < flops[0]


def test_quantized_transformer_tracks_a_range_for_every_matmul_operand():
  model = models.build_model("byte_transformer", 1, _SMALL["byte_transformer"],
                             quant=quant.QuantConfig(enabled=True))
  ids = _ragged_ids(24)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), ids)
  names = {"/".join(str(k.key) for k in path[:-1])
           for path, _ in jax.tree_util.tree_leaves_with_path(variables["quant_stats"])}
  layer = {name.split("/", 2)[2] for name in names if name.startswith("encoder/layer_0/")}
  assert layer == {
      "attention/query/QuantDotGeneral_0/lhs", "attention/key/QuantDotGeneral_0/lhs",
      "attention/value/QuantDotGeneral_0/lhs", "attention/out/QuantDotGeneral_0/lhs",
      "attention/query_quant", "attention/key_quant", "attention/probs_quant",
      "attention/value_quant", "mlp/wi/QuantDotGeneral_0/lhs",
      "mlp/wi_linear/QuantDotGeneral_0/lhs", "mlp/wo/QuantDotGeneral_0/lhs",
  }
  # One range update, then a forward pass with every operand fake-quantized.
  logits = jax.jit(lambda v: model.apply(
      {"params": v["params"], **model.apply(v, ids, mutable=["quant_stats"])[1]}, ids))(
          variables)
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", sorted(_SMALL))
def test_every_param_has_a_sharding_from_the_rules_table(name):
  model = models.build_model(name, 3, _SMALL[name])
  mesh = partitioning.make_mesh({"data": -1})
  with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), _ragged_ids(24))
    shardings = partitioning.logical_to_sharding(abstract["params"], mesh)
  # Wide feature axes (QRNN hidden, attention heads, MLP hidden) go to the "model" axis.
  assert any("model" in s.spec for s in jax.tree.leaves(shardings))


@pytest.mark.parametrize("arg, task", [("transformer", "toxic_comments_en"),
                                       ("funnel,fortunes", "fortunes_offensive_en"),
                                       ("raw,civil_comments", "civil_comments"),
                                       ("funnel,smoke", "fortunes_offensive_en")])
def test_transformer_configs_build_their_registered_model(arg, task):
  config = transformer_toxicity.get_config(arg)
  model = models.build_model(config.model_name, 1, config.model)
  assert model.use_gbst == (not arg.startswith("raw"))
  assert config.data.task == task
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), _ragged_ids(24))
  assert jax.tree.leaves(shapes)


def test_transformer_config_rejects_unknown_arguments():
  for arg in ("transfomer", "funnel,smokey"):
    with pytest.raises(ValueError, match="Unknown config argument"):
      transformer_toxicity.get_config(arg)
