"""Model card (byteflax.report) and the baseline comparison (benchmarks/compare.py)."""

import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from byteflax import cli
from byteflax import machine
from byteflax import report
from configs import byteqrnn_toxicity
from tests import utils

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_threshold_table_counts_by_hand():
  labels = np.array([1, 1, 0, 0, 0, 1])
  probs = np.array([0.9, 0.4, 0.6, 0.2, 0.1, 0.7])
  rows = {r["threshold"]: r for r in report.threshold_table(labels, probs, (0.5, 0.95))}
  # >= 0.5 flags 0.9, 0.6, 0.7: two of three right, two of three positives found.
  assert rows[0.5]["precision"] == pytest.approx(2 / 3)
  assert rows[0.5]["recall"] == pytest.approx(2 / 3)
  assert rows[0.5]["f1"] == pytest.approx(2 / 3)
  assert rows[0.5]["flagged"] == pytest.approx(0.5)
  assert np.isnan(rows[0.95]["precision"]) and rows[0.95]["recall"] == 0
  assert rows[0.95]["f1"] == 0


def test_reliability_bins_and_calibration_error():
  labels = np.array([0, 0, 1, 1, 1, 0])
  probs = np.array([0.05, 0.15, 0.12, 0.95, 0.91, 0.99])
  bins, ece = report.reliability_bins(labels, probs, bins=2)
  assert [(b["count"], b["observed"]) for b in bins] == [(3, pytest.approx(1 / 3)),
                                                           (3, pytest.approx(2 / 3))]
  expected = (3 * abs(np.mean([0.05, 0.15, 0.12]) - 1 / 3)
              + 3 * abs(np.mean([0.95, 0.91, 0.99]) - 2 / 3)) / 6
  assert ece == pytest.approx(expected)
  assert report.reliability_bins(np.array([1.0]), np.array([1.0]))[0][0]["high"] == 1.0


def test_data_description_names_the_files_columns_and_positive_class():
  data = byteqrnn_toxicity.get_config().data
  data.update(train_path="/d/spam.csv", test_path="/d/test.csv", text_key="v2",
              label_keys=("v1",), positive_label="spam")
  config = ml_collections.ConfigDict({"data": data.to_dict()})
  assert report._data_description(config, "file_x") == (
      "Files (train `/d/spam.csv`; validation: 10% of the training file's distinct texts "
      "(seed 0); test `/d/test.csv`); text `v2`, labels `v1` (1 where `spam`, else 0).")
  del config.data.positive_label  # A run from before the field: labels as they were.
  assert report._data_description(config, "file_x").endswith("labels `v1`.")


@pytest.mark.slow
def test_cli_train_export_then_model_card_and_comparison(tmp_path):
  """A toy run through the commands of docs/model_card.md and docs/results.md."""
  utils.write_toy_jsonl(tmp_path, numbered=True)
  flags = ["--config=configs/byteqrnn_toxicity.py:smoke",
           f"--config.data.train_path={tmp_path / 'train.jsonl'}",
           f"--config.data.test_path={tmp_path / 'test.jsonl'}",
           "--config.optim.learning_rate=0.01", "--config.total_steps=60"]
  run_dir, export_dir, results = tmp_path / "run", tmp_path / "export", tmp_path / "results"

  def run(*args):
    result = subprocess.run([sys.executable, *args], cwd=_REPO, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout

  run("-m", "byteflax.main", *flags, f"--workdir={run_dir}")
  # Without --config, export reads the run's own config.json (its data files included).
  run("-m", "byteflax.export", f"--workdir={run_dir}", f"--out={export_dir}")

  run("-m", "byteflax.report", f"--workdir={run_dir}", f"--export_dir={export_dir}",
      "--latency_runs=10")
  card_dir = run_dir / "model_card"
  with open(card_dir / "model_card.md") as f:
    card = f.read()
  with open(run_dir / "eval.json") as f:
    test_metrics = json.load(f)["test"]
  test_auc = test_metrics["auc"]
  # The card's AUC is recomputed from the checkpoint: it must equal eval.json's.
  assert f"ROC AUC {test_auc:.4f} on 120 examples" in card
  assert card.startswith("# Model card: byte_qrnn on train.jsonl\n")
  assert (f"Files (train `{tmp_path / 'train.jsonl'}`; validation: 10% of the training "
          f"file's distinct texts (seed 0); test `{tmp_path / 'test.jsonl'}`); text `text`, "
          "labels `label`.") in card
  assert "seed 0) on the splits above. Check" in card  # Nothing about the fortunes' labels.
  assert f"on the machine that wrote this card ({machine.describe()['cpu']}; " in card
  for section in ("## Data", "## Metrics", "(best F1)", "expected calibration error",
                  "model_int8.tflite", "| train | 360 |", "| test | 120 |"):
    assert section in card, section
  for png in ("training.png", "thresholds.png", "reliability.png"):
    assert f"]({png})" in card and os.path.getsize(card_dir / png) > 1000

  # Two runs of one model (as seeds are) get a row each, named by their workdirs.
  run_copy = shutil.copytree(run_dir, tmp_path / "run_copy")
  table = run("-m", "benchmarks.compare", *flags, f"--export_dir={export_dir}",
              f"--runs={run_dir},{run_copy}", "--baselines=tfidf_char,minilm", "--latency_runs=10",
              f"--results_dir={results}")
  with open(results / "compare.json") as f:
    comparison = json.load(f)
  rows = {row["name"]: row for row in comparison["rows"]}
  assert set(rows) == {"byte_qrnn TFLite int8", "byte_qrnn TFLite int8_full",
                       "byte_qrnn TFLite float32", f"byte_qrnn (JAX) {run_dir}",
                       f"byte_qrnn (JAX) {run_copy}", "TF-IDF char n-grams + LR",
                       "all-MiniLM-L6-v2 frozen + LR"}
  assert comparison["examples"] == {"train": 360, "validation": 40, "test": 120}
  # The float TFLite file and the JAX run are one model on the same test texts.
  assert rows["byte_qrnn TFLite float32"]["auc"] == pytest.approx(test_auc, abs=1e-3)
  assert rows[f"byte_qrnn (JAX) {run_dir}"]["auc"] == pytest.approx(test_auc, abs=1e-3)
  assert rows[f"byte_qrnn (JAX) {run_copy}"]["auc"] == rows[f"byte_qrnn (JAX) {run_dir}"]["auc"]
  # Its F1 at the threshold chosen on validation is the trainer's, computed apart.
  assert rows[f"byte_qrnn (JAX) {run_dir}"]["f1_at_threshold"] == pytest.approx(
      test_metrics["f1_at_threshold"], abs=1e-3)
  assert rows["byte_qrnn TFLite int8"]["bytes"] == os.path.getsize(
      export_dir / "model_int8.tflite")
  assert rows["all-MiniLM-L6-v2 frozen + LR"]["params"] > 22_000_000
  for row in rows.values():
    assert row["latency_ms"] > 0 and 0.5 <= row["auc"] <= 1
    assert 0 < row["pr_auc"] <= 1 and 0 <= row["auc_perturbed"] <= 1
    assert 0 < row["f1_at_threshold"] <= 1
    assert row["bytes_vs_bert_base"] == pytest.approx(440e6 / row["bytes"])
    assert row["name"] in table
  assert os.path.getsize(results / "compare.png") > 1000

  # Baselines alone, no byte model: the frozen MiniLM's LR fit on 100 of the 360 texts.
  run("-m", "benchmarks.compare", *flags, "--baselines=minilm", "--frozen_examples=100",
      "--perturb_rate=0", "--latency_runs=10", f"--results_dir={tmp_path / 'baselines'}")
  with open(tmp_path / "baselines" / "compare.json") as f:
    (row,) = json.load(f)["rows"]
  assert row["name"] == "all-MiniLM-L6-v2 frozen + LR" and row["max_train_examples"] == 100
  assert "auc_perturbed" not in row and 0.5 <= row["auc"] <= 1


def test_comparison_on_a_test_split_of_one_class_says_so(tmp_path):
  from benchmarks import compare  # pylint: disable=g-import-not-at-top
  utils.write_toy_jsonl(tmp_path, numbered=True)
  with open(tmp_path / "test.jsonl", "w") as f:
    f.writelines(json.dumps({"text": f"a calm day {i}", "label": 0}) + "\n" for i in range(5))
  config = byteqrnn_toxicity.get_config("smoke")
  config.data.train_path = str(tmp_path / "train.jsonl")
  config.data.test_path = str(tmp_path / "test.jsonl")
  with pytest.raises(cli.InputError, match=r"The test split's 5 example\(s\) are all of class 0 "
                     r"in label column 0: ROC AUC needs both classes"):
    compare.TestSet(config, "test", None, 0.0)
