"""Matryoshka representations: prefixes of the pooled vector classify through the head's
first rows; nested losses train them together."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byteflax import models
from byteflax import step
from tests import utils

_MODEL = dict(embed_dim=32, qrnn_features=16, qrnn_layers=1, matryoshka_dims=(4, 8, 16),
              dropout_rate=0.0, zoneout=0.0)  # Pooled width 32 (bidirectional).


def model_and_inputs():
  model = models.build_model("byte_qrnn", 2, _MODEL)
  ids = np.random.default_rng(0).integers(3, 259, size=(6, 40)).astype(np.int32)
  return model, nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), ids)), ids


def test_each_prefix_reads_only_its_rows_of_the_head():
  model, variables, ids = model_and_inputs()
  every = model.apply(variables, ids, all_dims=True)
  assert every.shape == (4, 6, 2)
  np.testing.assert_array_equal(every[-1], model.apply(variables, ids))
  for index, dims in enumerate((4, 8, 16)):
    at_dims = model.clone(representation_dims=dims)
    np.testing.assert_array_equal(at_dims.apply(variables, ids), every[index])
    # Rows past `dims` of the head's kernel do not matter; row dims - 1 does.
    params = jax.tree.map(lambda x: x, variables["params"])
    kernel = params["head"]["kernel"]
    params["head"]["kernel"] = kernel.at[dims:].set(100.0)
    np.testing.assert_allclose(at_dims.apply({"params": params}, ids), every[index],
                               atol=1e-6)
    params["head"]["kernel"] = kernel.at[dims - 1].add(1.0)
    assert np.abs(at_dims.apply({"params": params}, ids) - every[index]).max() > 1e-3


def test_bad_dims_are_clear_errors():
  _, variables, ids = model_and_inputs()
  with pytest.raises(ValueError, match=r"matryoshka_dims must be in \[1, 32\)"):
    models.build_model("byte_qrnn", 2, dict(_MODEL, matryoshka_dims=(8, 32))).apply(
        variables, ids, all_dims=True)
  with pytest.raises(ValueError, match="at least 1"):
    models.build_model("byte_qrnn", 2, dict(_MODEL, representation_dims=0)).apply(
        variables, ids)


def test_nested_loss_is_the_mean_of_the_prefixes_losses():
  model, variables, ids = model_and_inputs()
  labels = (np.arange(6)[:, None] % 2 == np.array([[0, 1]])).astype(np.float32)
  batch = {"inputs": jnp.asarray(ids), "labels": jnp.asarray(labels),
           "weights": jnp.ones(6)}


  state = step.TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 tx=optax.sgd(0.0), rng=jax.random.PRNGKey(0),
                                 quant_stats={})
  settings = step.output_settings(type("Config", (dict,), {})(), model)
  assert settings == {"output_loss_weights": (1.0,) * 4, "outputs": "all_dims"}
  _, metrics = step.train_step(state, batch, utils.LabelsObjective(), **settings)
  every = model.apply(variables, ids, all_dims=True)
  expected = np.mean([optax.sigmoid_binary_cross_entropy(l, labels).mean() for l in every])
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


@pytest.mark.slow
def test_cli_trains_nested_dims_and_the_benchmark_reads_every_prefix(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = ["--config=configs/byteqrnn_toxicity.py:smoke", f"--workdir={tmp_path}",
            "--config.model.matryoshka_dims=(8, 16)"]
  subprocess.run([sys.executable, "-m", "byteflax.main", *config], cwd=repo, check=True,
                 capture_output=True)
  subprocess.run([sys.executable, "-m", "benchmarks.matryoshka", *config,
                  f"--out={tmp_path / 'bench'}"], cwd=repo, check=True, capture_output=True)
  with open(tmp_path / "bench" / "matryoshka.json") as f:
    rows = json.load(f)["rows"]
  with open(tmp_path / "eval.json") as f:
    test_auc = json.load(f)["test"]["auc"]
  assert [row["dims"] for row in rows] == [8, 16, "all"]
  assert rows[-1]["test_roc_auc"] == pytest.approx(test_auc, abs=1e-6)
