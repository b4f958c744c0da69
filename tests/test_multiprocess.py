"""Two JAX processes on this machine (CPU, gloo collectives) train as one job.

Each process reads its own slice of the data (seqio ShardInfo), and hosts pad to a common
batch length and batch count; the evaluation both report must be the one a single process
computes from the same checkpoint, i.e. over every test example exactly once.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests import test_train

pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

toy_data = test_train.toy_data


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_and_evaluate_like_one(toy_data, tmp_path):
  args = [sys.executable, "-m", "byteflax.main", "--config=configs/byteqrnn_toxicity.py:smoke",
          f"--workdir={tmp_path}", f"--config.data.train_path={toy_data / 'train.csv'}",
          f"--config.data.test_path={toy_data / 'test.csv'}", "--config.total_steps=10",
          "--config.checkpoint.every_steps=5", "--config.evals.validation.every_steps=0"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  coordinator = f"--coordinator_address=localhost:{_free_port()}"
  processes = [subprocess.Popen(
      [*args, "--distributed", coordinator, "--num_processes=2", f"--process_id={i}"],
      cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  assert "'data': 2" in outputs[0][1]  # One global mesh over both processes' devices.
  with open(tmp_path / "eval.json") as f:
    distributed = json.load(f)
  # Both processes computed the same metrics (each prints them).
  auc_lines = [[line for line in stdout.splitlines() if "ROC AUC" in line]
               for stdout, _ in outputs]
  assert auc_lines[0] and auc_lines[0] == auc_lines[1]

  single = subprocess.run([*args, "--mode=eval"], cwd=_REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  with open(tmp_path / "eval.json") as f:
    reference = json.load(f)
  assert distributed["step"] == reference["step"] == 10
  for split in ("test", "validation"):
    for key in ("auc", "accuracy", "f1", "loss"):
      assert distributed[split][key] == pytest.approx(reference[split][key], abs=1e-6)
