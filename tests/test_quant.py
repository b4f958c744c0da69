"""Fake quantization: error bounds, straight-through gradients, EMA ranges, model wiring."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from byteflax import models
from byteflax import quant
from byteflax import train
from configs import byteqrnn_toxicity

_ON = quant.QuantConfig(enabled=True)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("lo,hi", [(-1.0, 3.0), (0.2, 5.0), (-7.0, -0.5), (-0.01, 0.02)])
def test_fake_quant_error_is_at_most_half_a_step_inside_the_range(symmetric, lo, hi):
  x = np.random.default_rng(0).uniform(lo, hi, size=10_000).astype(np.float32)
  y = np.asarray(quant.fake_quant(x, lo, hi, bits=8, symmetric=symmetric))
  scale, zero_point = map(np.asarray, quant.scale_and_zero_point(
      np.float32(lo), np.float32(hi), 8, symmetric))
  assert np.max(np.abs(y - x)) <= scale / 2 * (1 + 1e-5)
  # y lies on the integer grid and uses at most 255 / 256 levels.
  levels = np.round(y / scale + zero_point)
  np.testing.assert_allclose(y, (levels - zero_point) * scale, atol=1e-6)
  assert len(np.unique(levels)) <= (255 if symmetric else 256)
  # 0 is exact (the range is widened to contain it).
  assert float(quant.fake_quant(np.float32(0.0), lo, hi, bits=8, symmetric=symmetric)) == 0.0


def test_fake_quant_clips_outside_the_range_and_its_gradient_is_clipped_identity():
  x = jnp.linspace(-3.0, 3.0, 61)
  fq = lambda v: quant.fake_quant(v, -1.0, 2.0, bits=8, symmetric=False)
  y = fq(x)
  scale, zero_point = quant.scale_and_zero_point(-1.0, 2.0, 8, symmetric=False)
  range_lo, range_hi = (0 - zero_point) * scale, (255 - zero_point) * scale
  np.testing.assert_allclose(y[x < -1.2], range_lo)
  np.testing.assert_allclose(y[x > 2.2], range_hi)
  grad = jax.grad(lambda v: jnp.sum(fq(v)))(x)
  inside = (x >= range_lo) & (x <= range_hi)
  np.testing.assert_array_equal(grad, np.where(inside, 1.0, 0.0))
  assert 0 < int(inside.sum()) < x.size


def test_weight_quantization_is_per_output_channel_symmetric_with_identity_gradient():
  rng = np.random.default_rng(1)
  # Channels with very different magnitudes: a per-tensor scale would zero the small one.
  w = rng.normal(size=(16, 3)).astype(np.float32) * np.array([1e-3, 1.0, 100.0], np.float32)
  wq = np.asarray(quant.quantize_weight(w, _ON, channel_axes=(-1,)))
  steps = np.max(np.abs(w), axis=0) / 127
  assert np.all(np.abs(wq - w) <= steps / 2 * (1 + 1e-5))
  np.testing.assert_allclose(np.round(wq / steps), wq / steps, atol=1e-3)
  per_tensor = np.asarray(quant.quantize_weight(
      w, quant.QuantConfig(enabled=True, weight_per_channel=False), channel_axes=(-1,)))
  assert np.all(per_tensor[:, 0] == 0) and not np.all(wq[:, 0] == 0)
  grad = jax.grad(lambda v: jnp.sum(quant.quantize_weight(v, _ON, (-1,)) * 3.0))(w)
  np.testing.assert_array_equal(grad, np.full_like(w, 3.0))
  np.testing.assert_array_equal(quant.quantize_weight(w, quant.QuantConfig(), (-1,)), w)


def test_activation_ranges_follow_an_ema_in_training_and_are_frozen_otherwise():
  config = quant.QuantConfig(enabled=True, ema_decay=0.9)
  layer = quant.ActQuant(config)
  x1 = jnp.array([-1.0, 0.5, 2.0])
  x2 = jnp.array([-3.0, 0.0, 4.0])
  stats = layer.init(jax.random.PRNGKey(0), x1)
  assert int(stats["quant_stats"]["count"]) == 0  # init does not count as a batch.
  _, stats = layer.apply(stats, x1, mutable=["quant_stats"])
  assert (float(stats["quant_stats"]["min"]), float(stats["quant_stats"]["max"])) == (-1, 2)
  _, stats = layer.apply(stats, x2, mutable=["quant_stats"])
  np.testing.assert_allclose(stats["quant_stats"]["min"], 0.9 * -1 + 0.1 * -3)
  np.testing.assert_allclose(stats["quant_stats"]["max"], 0.9 * 2 + 0.1 * 4)
  assert int(stats["quant_stats"]["count"]) == 2
  # Eval: the collection is immutable, so the stored range is used as is.
  frozen = layer.apply(stats, jnp.array([-100.0, 100.0]))
  np.testing.assert_allclose(frozen, [stats["quant_stats"]["min"], stats["quant_stats"]["max"]],
                             rtol=1e-2)


def test_activation_quantization_waits_for_start_step_updates():
  layer = quant.ActQuant(quant.QuantConfig(enabled=True, start_step=2))
  x = jnp.linspace(-1.0, 1.0, 1001)
  stats = layer.init(jax.random.PRNGKey(0), x)
  outputs = []
  for _ in range(3):
    y, stats = layer.apply(stats, x, mutable=["quant_stats"])
    outputs.append(y)
  np.testing.assert_array_equal(outputs[0], x)
  np.testing.assert_array_equal(outputs[1], x)
  assert 0 < np.max(np.abs(outputs[2] - x)) <= 2.0 / 255


def test_quant_config_errors():
  with pytest.raises(ValueError, match="unknown keys"):
    quant.QuantConfig.from_config({"enabled": True, "bitz": 8})
  with pytest.raises(ValueError, match="bits"):
    quant.QuantConfig(bits=1)
  assert quant.QuantConfig.from_config(
      byteqrnn_toxicity.get_config().quant) == quant.QuantConfig()


def _smoke_model(quant_config):
  return models.build_model(
      "byte_qrnn", 2, {"embed_dim": 16, "qrnn_layers": 1, "qrnn_features": 8},
      quant=quant_config)


def _ids():
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 259, size=(4, 48)).astype(np.int32)
  ids[np.arange(48)[None, :] >= np.array([[48], [30], [7], [1]])] = 0
  return ids


def test_quantized_model_has_the_float_params_and_a_range_for_every_matmul_input():
  ids = _ids()
  float_model, quant_model = _smoke_model(quant.QuantConfig()), _smoke_model(_ON)
  float_vars = jax.eval_shape(float_model.init, jax.random.PRNGKey(0), ids)
  quant_vars = jax.jit(quant_model.init)(jax.random.PRNGKey(0), ids)
  assert set(float_vars) == {"params"}
  assert (jax.tree.map(jnp.shape, float_vars["params"])
          == jax.tree.map(jnp.shape, quant_vars["params"]))
  float_vars = {"params": quant_vars["params"]}  # So a float checkpoint loads as is.
  ranges = {"/".join(str(k.key) for k in path[:-1])
            for path, _ in jax.tree_util.tree_leaves_with_path(quant_vars["quant_stats"])}
  assert ranges == {
      "gbst/conv/input_quant",
      "gbst/score/QuantDotGeneral_0/lhs",
      "encoder/layer_0_fwd/conv/QuantConvGeneral_0/lhs",
      "encoder/layer_0_bwd/conv/QuantConvGeneral_0/lhs",
      "pool/score/QuantDotGeneral_0/lhs",
      "head/QuantDotGeneral_0/lhs",
  }
  reference = jax.jit(float_model.apply)(float_vars, ids)
  apply = jax.jit(quant_model.apply)
  # Before any range update only the weights are rounded.
  weights_only = apply(quant_vars, ids)
  # One training-mode pass fills the ranges; the fake-quantized logits stay near float ones.
  _, stats = jax.jit(lambda v: quant_model.apply(v, ids, mutable=["quant_stats"]))(quant_vars)
  quantized = apply({"params": quant_vars["params"], **stats}, ids)
  for logits in (weights_only, quantized):
    assert 0 < np.max(np.abs(np.asarray(logits) - reference)) < 0.1
  assert not np.array_equal(weights_only, quantized)


def test_build_model_refuses_quantization_for_models_without_it():

  class NoQuant(nn.Module):
    num_labels: int = 1

    def __call__(self, ids):
      return ids

  models.MODELS["no_quant_test"] = NoQuant
  try:
    assert isinstance(models.build_model("no_quant_test", 1, {}), NoQuant)
    with pytest.raises(ValueError, match="no quantized form"):
      models.build_model("no_quant_test", 1, {}, quant=_ON)
  finally:
    del models.MODELS["no_quant_test"]
  with pytest.raises(ValueError, match="config.model has keys"):
    models.build_model("byte_qrnn", 1, {"quant": {}})


def test_train_step_updates_ranges_eval_step_reads_them_and_checkpoints_keep_them(tmp_path):
  config = byteqrnn_toxicity.get_config("smoke")
  config.quant.enabled = True
  trainer = train.Trainer(config)
  state = trainer.init_state()
  rng = np.random.default_rng(0)
  batch = {"inputs": _ids()[np.arange(16) % 4],
           "labels": rng.integers(0, 2, (16, 1)).astype(np.float32),
           "weights": np.ones(16, np.float32)}
  counts = lambda s: {int(c) for c in jax.tree.leaves(s.quant_stats) if c.dtype == jnp.int32}
  assert counts(state) == {0}
  for _ in range(2):
    state, _ = trainer.run_train_step(state, batch)
  # The shared GBST scorer runs once per block size, so it counts 4 updates per step.
  assert counts(state) == {2, 8}
  with trainer.sharding_context():
    probs = trainer.eval_step(state, trainer.device_batch(batch))["probs"]
    again = trainer.eval_step(state, trainer.device_batch(batch))["probs"]
  # eval_step applies the model with quant_stats immutable: same ranges, same outputs.
  np.testing.assert_array_equal(probs, again)
  manager = train.checkpoint_manager(str(tmp_path), config)
  manager.save(2, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  restored = train.restore_latest(manager, trainer)
  jax.tree.map(np.testing.assert_array_equal, restored.quant_stats, state.quant_stats)
