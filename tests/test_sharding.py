"""Sharded training equals single-device training, and parameters are really sharded.

The meshes need 8 devices; this pytest process already started JAX with one, so the
training runs in a subprocess (tests/sharded_training.py) on 8 host-platform CPU devices.
Tolerance: losses agree to rtol 1e-5 (measured differences are ~2e-7, float32 reduction
order: data-parallel gradients are summed across devices in a different order).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RTOL = 1e-5
_ALL_MESHES = ("8,1", "4,2", "2,4")


def _train_on_meshes(models, meshes):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "tests.sharded_training", ",".join(models), "1,1", *meshes],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _check(results, model):
  runs = results[model]
  single = runs.pop("1,1")
  for mesh, run in runs.items():
    np.testing.assert_allclose(run["losses"], single["losses"], rtol=_RTOL,
                               err_msg=f"{model} on mesh (data, model) = ({mesh})")
    # Adam's moments are laid out exactly like the parameters they track.
    assert run["mu"] == run["params"] and run["nu"] == run["params"]
    split = {path for path, spec in run["params"].items() if "model" in spec}
    model_size = int(mesh.split(",")[1])
    if model_size > 1:
      assert split, f"{model} on ({mesh}): no parameter is split over 'model'"
    # Parameters are never split over "data" (pure data parallelism replicates them).
    assert not any("data" in spec for spec in run["params"].values())
  return split


def test_byte_qrnn_sharded_equals_single_device():
  results = _train_on_meshes(["byte_qrnn"], ["2,4"])
  split = _check(results, "byte_qrnn")
  # QRNN gate convs ("hidden" output features) and the head's input are split.
  assert "['encoder']['layer_0_fwd']['conv']['kernel']" in split
  assert "['head']['kernel']" in split


@pytest.mark.slow
def test_every_model_and_mesh_sharded_equals_single_device():
  results = _train_on_meshes(["byte_qrnn", "byte_transformer", "encoder_decoder"],
                             _ALL_MESHES)
  _check(results, "byte_qrnn")
  split = _check(results, "encoder_decoder")
  # The pretrained encoder is split as the classifier's is, and so is the MAtt decoder.
  assert "['encoder']['encoder']['layer_0_fwd']['conv']['kernel']" in split
  assert any(path.startswith("['decoder']") for path in split)
  split = _check(results, "byte_transformer")
  for kernel in ("['attention']['query']['kernel']", "['attention']['out']['kernel']",
                 "['mlp']['wi']['kernel']", "['mlp']['wo']['kernel']"):
    assert f"['encoder']['layer_0']{kernel}" in split
