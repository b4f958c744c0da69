"""Slow end-to-end checks through the CLI and on the real installed corpora."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tasks import fortunes

pytestmark = pytest.mark.slow

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  result = subprocess.run([sys.executable, "-m", "byteflax.main", *args], cwd=_REPO,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _metric_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.readlines()


def test_cli_trains_resumes_without_retraining_and_evaluates(tmp_path):
  config = "--config=configs/byteqrnn_toxicity.py:smoke"
  first = _main(config, f"--workdir={tmp_path}")
  assert "test ROC AUC:" in first.stdout
  with open(tmp_path / "eval.json") as f:
    report = json.load(f)
  assert report["step"] == 40 and report["task"] == "fortunes_offensive_en"
  assert 0.0 <= report["test"]["auc"] <= 1.0
  # Test's F1 at the threshold chosen on validation (validation is evaluated first).
  assert 0.0 <= report["test"]["f1_at_threshold"] <= report["test"]["f1"]
  assert "f1_at_threshold" not in report["validation"]
  assert report["test"]["num_examples"] == 1714  # 10% of the 17,147 English examples.
  lines = _metric_lines(tmp_path)
  assert any("train/bytes_per_sec" in line for line in lines)
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))

  second = _main(config, f"--workdir={tmp_path}")
  assert "Training already finished" in second.stderr
  # Only the final evals were appended: no training step ran again.
  new_lines = _metric_lines(tmp_path)[len(lines):]
  assert new_lines and not any("train/loss" in line for line in new_lines)
  assert f"test ROC AUC: {report['test']['auc']:.4f}" in second.stdout

  evaluated = _main(config, f"--workdir={tmp_path}", "--mode=eval")
  assert f"test ROC AUC: {report['test']['auc']:.4f}" in evaluated.stdout
  with_own_config = _main(f"--workdir={tmp_path}", "--mode=eval")  # Its config.json.
  assert f"test ROC AUC: {report['test']['auc']:.4f}" in with_own_config.stdout


def test_cli_trains_on_a_user_jsonl_file(tmp_path):
  texts = [("you absolute idiot, shut up", 1), ("what a lovely sunny day", 0),
           ("idiot moron fool", 1), ("the train leaves at noon", 0)]
  for split, copies in (("train", 30), ("test", 5)):
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      for i in range(copies):
        for text, label in texts:
          f.write(json.dumps({"text": f"{text} {i}", "label": label}) + "\n")
  _main("--config=configs/byteqrnn_toxicity.py:smoke", f"--workdir={tmp_path / 'run'}",
        f"--config.data.train_path={tmp_path / 'train.jsonl'}",
        f"--config.data.test_path={tmp_path / 'test.jsonl'}")
  with open(tmp_path / "run" / "eval.json") as f:
    report = json.load(f)
  assert report["task"].startswith("file_")
  assert report["test"]["num_examples"] == 20


def test_default_command_trains_on_a_messy_user_csv(tmp_path):
  """The README's default command (distilling; budget from the data) on a CSV as real
  files are: exact duplicates, long texts equal in their first 1,023 bytes (the same byte
  ids once cut to max_length), an invalid UTF-8 byte, an empty text, CRLF line ends."""
  rng = np.random.default_rng(0)
  words = ["apple", "river", "stone", "cloud", "green", "quiet", "table", "music"]
  rows = []
  for i in range(300):
    toxic = int(rng.random() < 0.4)
    rows.append((" ".join(rng.choice(words, size=rng.integers(3, 12))) + f" {i}"
                 + (" idiot" if toxic else ""), toxic))
  rows += rows[:20]  # Exact duplicates.
  prefix = "x" * 1023
  rows += [(prefix + " idiot" * 10, 1), (prefix + " calm" * 10, 0), (prefix, 1)]
  rows += [("", 0)]
  data = b"text,label\r\n" + b"".join(
      f'"{text}",{label}\r\n'.encode() for text, label in rows)
  data += b'"caf\xe9 idiot",1\r\n'  # Latin-1, not UTF-8.
  path = tmp_path / "messy.csv"
  path.write_bytes(data)
  result = _main("--config=configs/byteqrnn_toxicity.py", f"--workdir={tmp_path / 'run'}",
                 f"--config.data.train_path={path}")
  assert "messy.csv, line 326, column 5: invalid UTF-8 byte 0xe9" in result.stderr
  assert "have the same byte ids as another" in result.stderr
  assert "Training budget: 5 epochs of" in result.stderr
  # The default command fine-tunes the shipped pretrained encoder, on users' files too.
  assert "Initialised ['embed', 'encoder', 'gbst'] from" in result.stderr
  assert "byteqrnn_corpus.npz" in result.stderr
  with open(tmp_path / "run" / "eval.json") as f:
    report = json.load(f)
  assert report["task"].startswith("file_") and report["test"]["num_examples"] == 32
  # 260 training examples: 5 epochs at batch 32 = 45 steps.
  assert report["step"] == 45
  assert report["test"]["auc"] > 0.5


def test_real_multilingual_corpus_is_decoded_and_complete():
  try:
    examples = fortunes.load_offensive_examples(("en", "es", "it"))
  except FileNotFoundError as error:
    pytest.fail(f"Debian fortunes missing (.ci/run installs them): {error}")
  assert len(examples) == 38_777
  positives = sum(label for _, label in examples)
  assert 0.12 < positives / len(examples) < 0.13
  spanish_offensive = fortunes.load_offensive_examples(("es",))
  offensive_text = " ".join(t for t, label in spanish_offensive if label).lower()
  # ROT13-decoded Spanish reads as Spanish: "que" is among its most common words, while
  # its ROT13 form "dhr" is not a Spanish word at all.
  assert offensive_text.count(" que ") > 20 * max(offensive_text.count(" dhr "), 1)


@pytest.mark.parametrize("model", ["transformer", "funnel", "raw"])
def test_cli_trains_every_transformer_config(tmp_path, model):
  _main(f"--config=configs/transformer_toxicity.py:{model},smoke", f"--workdir={tmp_path}")
  with open(tmp_path / "eval.json") as f:
    report = json.load(f)
  assert report["step"] == 40 and 0.0 <= report["test"]["auc"] <= 1.0


def test_encoder_benchmark_writes_its_table_json_and_plot(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.encoders", f"--out={tmp_path}", "--lengths=64,128",
       "--repeats=1", "--skip_training", "--models=ByteTransformer,raw-bytes transformer"],
      cwd=_REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "encoders.json") as f:
    report = json.load(f)
  rows = report["models"]["ByteTransformer"]["by_length"]
  assert [row["length"] for row in rows] == [64, 128]
  assert all(row["forward_gflops"] > 0 and row["train_bytes_per_s"] > 0 for row in rows)
  assert os.path.getsize(tmp_path / "encoders.png") > 0
  assert "| ByteTransformer |" in result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--models=ByteTransformer", "--qrnn_scans=sequential"], "add ByteQRNN to --models"),
    (["--models=ByteQRNN", "--qrnn_scans=sequental"], "Unknown --qrnn_scans ['sequental']"),
])
def test_encoder_benchmark_refuses_qrnn_scans_it_cannot_run(flags, message):
  result = subprocess.run([sys.executable, "-m", "benchmarks.encoders", *flags], cwd=_REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
