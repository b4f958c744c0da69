"""The command lines print an error the user can fix as one line, without a traceback."""

import os
import subprocess
import sys

import pytest

from benchmarks import tfidf_baseline
from byteflax import cli
from tests import utils


def test_an_input_error_exits_with_its_message_and_notes():
  @cli.clean_input_errors
  def main(path):
    error = cli.InputError(f"{path}, line 3: no text")
    error.add_note("A note added on the way up.")
    raise error

  with pytest.raises(SystemExit) as exited:
    main("train.csv")
  assert exited.value.code == "Error: train.csv, line 3: no text\nA note added on the way up."


def test_other_errors_keep_their_traceback_and_results_pass_through():
  @cli.clean_input_errors
  def main(fail):
    if fail:
      raise ValueError("a bug")
    return 42

  assert main(False) == 42
  with pytest.raises(ValueError, match="a bug"):
    main(True)


def test_tfidf_baseline_stops_on_a_bad_data_file_with_its_message(tmp_path):
  data = utils.write_file(tmp_path / "train.csv", "body,label\nhello,1\n")
  with pytest.raises(SystemExit) as exited:
    tfidf_baseline.main([f"--train_path={data}"])
  assert str(exited.value.code).startswith(f"Error: {data}, line 1: header has no column")


def test_main_says_a_workdir_without_a_checkpoint_is_not_a_model(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "byteflax.main", "--config=configs/byteqrnn_toxicity.py:smoke",
       f"--workdir={tmp_path}", "--mode=eval"],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.rstrip().splitlines()[-1] == (
      f"Error: No checkpoint under {tmp_path}/checkpoints; train first (--mode=train).")
