"""Early-exit ByteQRNN: exits, the confidence rule, thresholds from validation, staged and
TFLite inference, joint training."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byteflax import early_exit
from byteflax import export
from byteflax import models
from byteflax import step
from tests import utils
from configs import byteqrnn_toxicity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODEL = dict(embed_dim=32, qrnn_features=16, qrnn_layers=3, early_exit=True,
              qrnn_scan="doubling")


@functools.cache
def trained_like(shared_exit_head: bool = False):
  """(model, variables, ids [24, 64]) with heads scaled up so that exits disagree and
  logits spread over several units, as a trained model's do."""
  model = models.build_model("byte_qrnn", 2, dict(_MODEL, shared_exit_head=shared_exit_head))
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 259, size=(24, 64)).astype(np.int32)
  for row, used in enumerate(rng.integers(5, 64, size=24)):
    ids[row, used:] = 0
    ids[row, used - 1] = 1
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), ids)
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p * 30 if "head" in str(path) else p, variables["params"])
  return model, {"params": params}, ids


@pytest.mark.parametrize("shared", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["per-exit-heads", "shared-head"])
def test_exits_depths_and_stages_agree_with_the_full_model(shared):
  model, variables, ids = trained_like(shared)
  names = set(variables["params"])
  assert ({"pool_exit_0", "head_exit_1"} <= names) != shared and {"pool", "head"} <= names
  every = model.apply(variables, ids, all_exits=True)
  assert every.shape == (3, 24, 2)
  np.testing.assert_array_equal(every[-1], model.apply(variables, ids))
  logits, encodings = model.apply(variables, ids, depth=1, with_encodings=True)
  np.testing.assert_array_equal(logits, every[0])
  for depth in (2, 3):
    np.testing.assert_array_equal(model.apply(variables, ids, depth=depth),
                                  every[depth - 1])
    logits, encodings = model.apply(variables, None, depth=depth,
                                    resume=(*encodings, depth - 1), with_encodings=True)
    np.testing.assert_allclose(logits, every[depth - 1], atol=1e-5)
  # The last exit's params are the plain model's: it loads them and computes the same.
  plain = models.build_model("byte_qrnn", 2, dict(_MODEL, early_exit=False))
  plain_params = {k: variables["params"][k] for k in ("embed", "gbst", "encoder", "pool",
                                                        "head")}
  np.testing.assert_array_equal(plain.apply({"params": plain_params}, ids), every[-1])


def test_rule_at_the_extremes_and_staged_inference():
  model, variables, ids = trained_like()
  every = np.asarray(model.apply(variables, ids, all_exits=True))
  never, exits = early_exit.apply_rule(every, 1.0)
  np.testing.assert_array_equal(never, every[-1])  # No early exit: the full model.
  assert np.all(exits == 3)
  always, exits = early_exit.apply_rule(every, 0.5)
  np.testing.assert_array_equal(always, every[0])
  assert np.all(exits == 1)
  threshold = float(np.median(early_exit.confidence(every[0])))
  expected, expected_exits = early_exit.apply_rule(every, threshold)
  assert 0 < np.mean(expected_exits == 1) < 1 and set(expected_exits) > {1}
  logits, exits = early_exit.staged_predict(model, variables, ids, threshold)
  np.testing.assert_array_equal(exits, expected_exits)
  np.testing.assert_allclose(logits, expected, atol=1e-5)
  for threshold in (0.5, 1.0):
    logits, exits = early_exit.staged_predict(model, variables, ids, threshold)
    np.testing.assert_allclose(logits, early_exit.apply_rule(every, threshold)[0],
                               atol=1e-5)


def test_threshold_is_the_fewest_layers_within_tolerance_on_validation():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, size=(400, 1))
  # Exit 1 is noisy, exit 2 good, exit 3 best: more confident exits are more often right.
  exit_logits = np.stack([(2 * labels - 1) * scale + rng.normal(0, noise, (400, 1))
                          for scale, noise in ((1.0, 2.0), (2.0, 1.5), (3.0, 1.0))])
  rows = early_exit.sweep(exit_logits, labels, early_exit.default_thresholds(exit_logits))
  full = early_exit.mean_auc(labels, exit_logits[-1])
  assert rows[-1]["threshold"] == 1.0 and rows[-1]["roc_auc"] == full
  assert rows[-1]["mean_layers"] == 3 and rows[0]["mean_layers"] < 1.2
  for tolerance in (0.0, 0.01, 0.05, 1.0):
    chosen = early_exit.choose_threshold(rows, full, tolerance)
    assert chosen["roc_auc"] >= full - tolerance
    assert all(row["mean_layers"] >= chosen["mean_layers"] for row in rows
               if row["roc_auc"] >= full - tolerance)
  assert early_exit.choose_threshold(rows, full, 1.0)["mean_layers"] == min(
      row["mean_layers"] for row in rows)


def test_joint_loss_is_the_weighted_mean_of_the_exits_losses():
  _, variables, ids = trained_like()
  # No dropout or zoneout: the training step's logits are the deterministic ones.
  model = models.build_model("byte_qrnn", 2, dict(_MODEL, dropout_rate=0.0, zoneout=0.0))
  labels = (np.arange(24)[:, None] % 2 == np.array([[0, 1]])).astype(np.float32)
  batch = {"inputs": jnp.asarray(ids), "labels": jnp.asarray(labels),
           "weights": jnp.ones(24)}


  tx = optax.sgd(0.0)
  state = step.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 rng=jax.random.PRNGKey(0), quant_stats={})
  weights = (1.0, 2.0, 3.0)
  _, metrics = step.train_step(state, batch, utils.LabelsObjective(),
                               output_loss_weights=weights, outputs="all_exits")
  every = model.apply(variables, ids, all_exits=True)
  per_exit = [float(optax.sigmoid_binary_cross_entropy(l, labels).mean()) for l in every]
  np.testing.assert_allclose(metrics["loss"], np.dot(weights, per_exit) / 6, rtol=1e-5)


def test_output_settings():
  config = byteqrnn_toxicity.get_config("early_exit")
  model = models.build_model("byte_qrnn", 1, config.model)
  assert step.output_settings(config, model) == {"output_loss_weights": (1.0, 2.0, 3.0),
                                                 "outputs": "all_exits"}
  config.exit_loss_weights = (1, 1, 1)
  assert step.output_settings(config, model)["output_loss_weights"] == (1.0, 1.0, 1.0)
  config.exit_loss_weights = (1, 1)
  with pytest.raises(ValueError, match="needs 3 non-negative weights"):
    step.output_settings(config, model)
  plain = byteqrnn_toxicity.get_config()
  assert step.output_settings(plain, models.build_model("byte_qrnn", 1, plain.model)) == {}
  plain.exit_loss_weights = (1, 2, 3)
  with pytest.raises(ValueError, match="model has one exit"):
    step.output_settings(plain, models.build_model("byte_qrnn", 1, plain.model))
  nested = byteqrnn_toxicity.get_config()
  nested.model.matryoshka_dims = (16, 64)
  assert step.output_settings(nested, models.build_model("byte_qrnn", 1, nested.model)) == {
      "output_loss_weights": (1.0, 1.0, 1.0), "outputs": "all_dims"}
  nested.model.early_exit = True
  with pytest.raises(ValueError, match="one at a time"):
    step.output_settings(nested, models.build_model("byte_qrnn", 1, nested.model))


def test_exported_chain_matches_jax(tmp_path):
  model, variables, ids = trained_like()
  every = np.asarray(model.apply(variables, ids, all_exits=True))
  threshold = float(np.median(early_exit.confidence(every[0])))
  expected, expected_exits = early_exit.apply_rule(every, threshold)
  for quantization in early_exit.FILES:
    path = tmp_path / early_exit.FILES[quantization]
    path.write_bytes(early_exit.convert(model, variables["params"], [32, 64], quantization))
    exported = early_exit.TFLiteEarlyExit(str(path), threshold)
    assert exported.lengths == [32, 64] and exported.num_exits == 3
    results = [exported(row[None]) for row in ids]
    logits = np.concatenate([r[0] for r in results])
    exits = np.array([r[1] for r in results])
    if quantization == export.FLOAT32:
      np.testing.assert_array_equal(exits, expected_exits)
      np.testing.assert_allclose(logits, expected, atol=1e-3)
      for row in ids[:3]:  # Every exit reachable on demand.
        for depth in (1, 2, 3):
          chained = early_exit.TFLiteEarlyExit(str(path), 1.0)(row[None], max_exit=depth)
          assert chained[1] == depth
          np.testing.assert_allclose(
              chained[0], model.apply(variables, export.cut_ids(row[None], 64), depth=depth),
              atol=1e-3)
    else:
      # int8 weights: an exit decision can flip near the threshold; logits track JAX.
      assert np.mean(exits == expected_exits) > 0.8
      same = exits == expected_exits
      assert np.corrcoef(logits[same].ravel(), expected[same].ravel())[0, 1] > 0.99


@pytest.mark.slow
def test_cli_trains_chooses_and_exports(tmp_path):
  config = ["--config=configs/byteqrnn_toxicity.py:smoke,early_exit",
            "--config.model.qrnn_layers=2", f"--workdir={tmp_path}"]
  subprocess.run([sys.executable, "-m", "byteflax.main", *config], cwd=REPO, check=True,
                 capture_output=True)
  # Without --config: the run's own config.json (its 2 layers and smoke sizes).
  subprocess.run([sys.executable, "-m", "byteflax.early_exit", f"--workdir={tmp_path}",
                  "--export"], cwd=REPO, check=True, capture_output=True)
  with open(tmp_path / early_exit.REPORT_FILE) as f:
    report = json.load(f)
  assert len(report["per_exit_roc_auc"]["validation"]) == 2
  chosen = report["chosen"]
  assert chosen["validation"]["roc_auc"] >= report["per_exit_roc_auc"]["validation"][-1] - (
      report["tolerance"])
  assert chosen["test"]["threshold"] == chosen["threshold"]
  assert sorted(os.listdir(tmp_path / early_exit.EXPORT_DIR)) == sorted(
      early_exit.FILES.values())
  subprocess.run([sys.executable, "-m", "benchmarks.early_exit", *config,
                  f"--out={tmp_path / 'bench'}", "--texts=10", "--warmup=2",
                  "--layer_targets=1.0,2.0"], cwd=REPO, check=True, capture_output=True)
  with open(tmp_path / "bench" / "early_exit.json") as f:
    rows = json.load(f)["rows"]
  assert any(row["chosen"] for row in rows) and all(row["mean_ms"] > 0 for row in rows)
  means = [row["validation_mean_layers"] for row in rows]
  assert means == sorted(set(means))


def test_the_benchmark_times_one_threshold_per_mean_depth():
  from benchmarks import early_exit as benchmark  # pylint: disable=g-import-not-at-top
  sweep = [{"threshold": t, "mean_layers": layers}
           for t, layers in ((0.5, 1.0), (0.9, 1.5), (0.99999, 3.0), (1.0, 3.0))]
  report = {"sweep": {"validation": sweep}, "chosen": {"threshold": 0.9}}
  timed = benchmark.timed_thresholds(report, targets=[1.0, 3.0])
  # t = 1 and 0.99999 send every text to the last exit: one of them is timed.
  assert [row["threshold"] for row in timed] == [0.5, 0.9, 1.0]
