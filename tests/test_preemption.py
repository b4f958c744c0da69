"""Real training processes killed mid-run (SIGKILL) or preempted (SIGTERM), then restarted.

Each restarted run must end exactly where an uninterrupted run ends: the same per-step
losses after the restart (rtol 1e-5) and the same test metrics. (Corrupt-checkpoint and NaN
handling are tested in tests/test_train.py.)
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from byteflax import train
from tests import test_train

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TOTAL_STEPS = 60
_OVERRIDES = {"total_steps": _TOTAL_STEPS, "log_every_steps": 1,
              "checkpoint.every_steps": 5, "evals.validation.every_steps": 0}

toy_data = test_train.toy_data


def _command(toy_data, workdir):
  flags = [f"--config.{key}={value}" for key, value in _OVERRIDES.items()]
  return [sys.executable, "-m", "byteflax.main",
          "--config=configs/byteqrnn_toxicity.py:smoke", f"--workdir={workdir}",
          f"--config.data.train_path={toy_data / 'train.csv'}",
          f"--config.data.test_path={toy_data / 'test.csv'}", *flags]


def _logged_steps(workdir) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for line in f if "train/loss" in line)


def _checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _start_and_signal(toy_data, workdir, signum, after_steps):
  """Starts a CLI training run and sends `signum` once it has logged `after_steps` steps."""
  process = subprocess.Popen(_command(toy_data, workdir), cwd=_REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 300
  while _logged_steps(workdir) < after_steps:
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "training made no progress"
    time.sleep(0.05)
  process.send_signal(signum)
  stdout, stderr = process.communicate(timeout=300)
  return process.returncode, stdout, stderr


def _restart(toy_data, workdir):
  result = subprocess.run(_command(toy_data, workdir), cwd=_REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "eval.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def uninterrupted(toy_data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  report = train.train_and_evaluate(test_train._config(toy_data, **_OVERRIDES), str(workdir))
  return test_train._losses(workdir), report


def _assert_continues_exactly(workdir, resumed_from, report, uninterrupted):
  straight_losses, straight_report = uninterrupted
  # metrics.jsonl holds both runs' lines; the restart's are the last ones for each step.
  losses = test_train._losses(workdir)
  steps = range(resumed_from + 1, _TOTAL_STEPS + 1)
  np.testing.assert_allclose([losses[s] for s in steps], [straight_losses[s] for s in steps],
                             rtol=1e-5)
  assert report["step"] == _TOTAL_STEPS
  for key in ("auc", "accuracy", "f1", "loss"):
    assert report["test"][key] == pytest.approx(straight_report["test"][key], abs=1e-6)


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_equals_uninterrupted(toy_data, tmp_path, uninterrupted):
  returncode, _, _ = _start_and_signal(toy_data, tmp_path, signal.SIGKILL, after_steps=12)
  assert returncode == -signal.SIGKILL
  saved, logged_before = _checkpoint_steps(tmp_path), _logged_steps(tmp_path)
  assert saved and saved[-1] < _TOTAL_STEPS, saved
  report = _restart(toy_data, tmp_path)
  # The restart resumed from a checkpoint of the killed run (the newest complete one; a
  # write cut short by the kill is skipped), not from scratch.
  resumed_from = _TOTAL_STEPS - (_logged_steps(tmp_path) - logged_before)
  assert resumed_from in saved, (resumed_from, saved)
  _assert_continues_exactly(tmp_path, resumed_from, report, uninterrupted)


@pytest.mark.slow
def test_sigterm_saves_at_the_current_step_and_exits_cleanly(toy_data, tmp_path,
                                                             uninterrupted):
  returncode, stdout, stderr = _start_and_signal(toy_data, tmp_path, signal.SIGTERM,
                                                 after_steps=12)
  assert returncode == 0, stderr[-3000:]
  assert "Preempted at step" in stdout
  stopped_at = _logged_steps(tmp_path)
  assert 12 <= stopped_at < _TOTAL_STEPS
  # A checkpoint at exactly the interrupted step, off the every-5-steps schedule or not.
  assert _checkpoint_steps(tmp_path)[-1] == stopped_at
  assert "Preempted: checkpoint saved at step" in stderr
  assert not os.path.exists(tmp_path / "eval.json")
  report = _restart(toy_data, tmp_path)
  _assert_continues_exactly(tmp_path, stopped_at, report, uninterrupted)


def test_preemption_notice_catches_sigterm_only_while_active():
  previous = signal.getsignal(signal.SIGTERM)
  with train.PreemptionNotice() as notice:
    assert not notice.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert notice.should_stop(1)
  assert signal.getsignal(signal.SIGTERM) is previous
