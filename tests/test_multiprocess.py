"""Two JAX processes on this machine (CPU, gloo collectives) train as one job.

Each process reads its own slice of the data (seqio ShardInfo), and hosts pad to a common
batch length and batch count; the evaluation both report must be the one a single process
computes from the same checkpoint, i.e. over every test example exactly once. Classification
and span-corruption pretraining both.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests import test_pretraining
from tests import test_train

pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENV = dict(os.environ, JAX_PLATFORMS="cpu")

toy_data = test_train.toy_data


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_in_two_processes_then_in_one(args, workdir):
  """Trains with `args` as two processes, then evaluates the checkpoint in one.

  Returns (the two processes' stdouts, their eval.json, the single process's eval.json).
  """
  coordinator = f"--coordinator_address=localhost:{_free_port()}"
  processes = [subprocess.Popen(
      [*args, "--distributed", coordinator, "--num_processes=2", f"--process_id={i}"],
      cwd=_REPO, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  assert "'data': 2" in outputs[0][1]  # One global mesh over both processes' devices.
  with open(workdir / "eval.json") as f:
    distributed = json.load(f)
  single = subprocess.run([*args, "--mode=eval"], cwd=_REPO, env=_ENV, capture_output=True,
                          text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  with open(workdir / "eval.json") as f:
    reference = json.load(f)
  assert distributed["step"] == reference["step"] == 10
  return [stdout for stdout, _ in outputs], distributed, reference


def test_two_processes_train_and_evaluate_like_one(toy_data, tmp_path):
  args = [sys.executable, "-m", "byteflax.main", "--config=configs/byteqrnn_toxicity.py:smoke",
          f"--workdir={tmp_path}", f"--config.data.train_path={toy_data / 'train.csv'}",
          f"--config.data.test_path={toy_data / 'test.csv'}", "--config.total_steps=10",
          "--config.checkpoint.every_steps=5", "--config.evals.validation.every_steps=0"]
  stdouts, distributed, reference = _train_in_two_processes_then_in_one(args, tmp_path)
  # Both processes computed the same metrics (each prints them).
  auc_lines = [[line for line in stdout.splitlines() if "ROC AUC" in line]
               for stdout in stdouts]
  assert auc_lines[0] and auc_lines[0] == auc_lines[1]
  for split in ("test", "validation"):
    for key in ("auc", "accuracy", "f1", "loss"):
      assert distributed[split][key] == pytest.approx(reference[split][key], abs=1e-6)


def test_two_processes_pretrain_and_evaluate_like_one(tmp_path):
  # Documents of 1-120 words (up to ~700 bytes) over buckets of 64 bytes at most: each host
  # sees its own mix of lengths and of batch counts, which the lockstep must reconcile.
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  (corpus / "text.txt").write_text("\n".join(test_pretraining.documents(300)) + "\n",
                                   encoding="utf-8")
  workdir = tmp_path / "run"
  args = [sys.executable, "-m", "byteflax.main", "--config=configs/pretrain_fortunes.py:smoke",
          f"--workdir={workdir}", f"--config.data.train_path={corpus / '*.txt'}",
          "--config.data.length_buckets=(32,64)", "--config.total_steps=10",
          "--config.checkpoint.every_steps=5", "--config.evals.validation.every_steps=0"]
  _, distributed, reference = _train_in_two_processes_then_in_one(args, workdir)
  assert distributed["validation"]["loss"] > 0
  for key in ("loss", "accuracy"):
    assert distributed["validation"][key] == pytest.approx(reference["validation"][key],
                                                           abs=1e-6)
