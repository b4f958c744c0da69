"""benchmarks/teacher_agreement.py: teacher log-odds found by ids, the agreement measures,
and a distilled run measured end to end."""

import numpy as np
import pytest

from benchmarks import teacher_agreement
from byteflax import classify
from byteflax import distill
from byteflax import input_pipeline
from byteflax import metrics
from byteflax import train
from configs import byteqrnn_toxicity
from tests import utils


def _ids(rng, count, length=16):
  ids = np.zeros((count, length), np.int32)
  for row, size in zip(ids, rng.integers(2, length, size=count)):
    row[:size - 1] = rng.integers(3, 259, size=size - 1)
    row[size - 1] = 1  # EOS.
  return ids


def test_teacher_logits_are_found_by_ids_in_any_order(tmp_path):
  rng = np.random.default_rng(0)
  ids = _ids(rng, 50)
  ids[7] = ids[3]  # Two copies of one text share their mean log-odds.
  logits = rng.normal(size=(50, 2)).astype(np.float32)
  path = str(tmp_path / "teacher.npz")
  distill.save_teacher(path, ids, logits, "toy", 16, "tfidf_word", {})
  order = rng.permutation(50)
  found = teacher_agreement.teacher_logits(path, ids[order])
  expected = logits.copy()
  expected[[3, 7]] = logits[[3, 7]].mean(axis=0)
  np.testing.assert_allclose(found, expected[order], rtol=1e-6)
  with pytest.raises(ValueError, match="1 of 3 texts have no teacher log-odds"):
    teacher_agreement.teacher_logits(path, np.concatenate([ids[:2], _ids(rng, 1)]))


def test_agreement_measures():
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=(400, 1))
  labels = (teacher + rng.normal(size=teacher.shape) > 0).astype(np.float32)
  same = teacher_agreement.agreement(teacher, teacher, labels)
  assert same["texts"] == 400
  assert same["pearson_r"] == pytest.approx(1.0) and same["rmse_logits"] == 0.0
  assert same["same_side"] == 1.0 and same["auc_vs_teacher_side"] == 1.0
  assert same["student_auc"] == same["teacher_auc"] == metrics.roc_auc(labels.ravel(),
                                                                   teacher.ravel())
  # Half the scale: the same ranking, the same side, but not the same log-odds.
  halved = teacher_agreement.agreement(teacher / 2, teacher)
  assert halved["pearson_r"] == pytest.approx(1.0) and halved["same_side"] == 1.0
  assert halved["rmse_logits"] == pytest.approx(np.sqrt(np.mean((teacher / 2) ** 2)))
  assert "student_auc" not in halved
  flipped = teacher_agreement.agreement(-teacher, teacher)
  assert flipped["pearson_r"] == pytest.approx(-1.0)
  assert flipped["same_side"] == 0.0 and flipped["auc_vs_teacher_side"] == 0.0
  noisy = teacher_agreement.agreement(teacher + rng.normal(size=teacher.shape), teacher)
  assert 0.5 < noisy["pearson_r"] < 0.9 and 0.6 < noisy["same_side"] < 0.9


@pytest.mark.slow
def test_a_distilled_run_with_transfer_texts_is_measured(tmp_path):
  utils.write_toy_jsonl(tmp_path, numbered=True)
  config = byteqrnn_toxicity.get_config("smoke")
  config.data.update(train_path=str(tmp_path / "train.jsonl"),
                     test_path=str(tmp_path / "test.jsonl"))
  config.distill.update(alpha=0.5, teacher_folds=3, transfer="augmented:1")
  config.total_steps = 30
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)

  results = teacher_agreement.measure(workdir, max_texts=100)
  sets = results["sets"]
  assert list(sets) == ["train", "augmented:1", "validation", "test"]
  assert sets["train"]["texts"] == sets["augmented:1"]["texts"] == 100  # Sampled.
  assert sets["test"]["texts"] == 120 and sets["validation"]["texts"] == 40
  for name in ("train", "augmented:1"):
    assert -1 <= sets[name]["pearson_r"] <= 1 and sets[name]["rmse_logits"] >= 0
  # The TF-IDF teacher separates the toy task's marker word; its file's test AUC is reported.
  assert sets["train"]["teacher_auc"] > 0.9 and sets["test"]["teacher_auc"] > 0.9
  assert "| augmented:1 | 100 |" in teacher_agreement.format_table(results)
  # The ids entry point scores as the text one does.
  classifier = classify.load(workdir)
  ids = input_pipeline.task_examples(config.data, "test", config.data.max_length)[0][:10]
  np.testing.assert_allclose(
      classifier.logits_of_ids([row[row != 0] for row in ids]),
      classifier.logits(input_pipeline.texts_from_ids(ids)), rtol=1e-5, atol=1e-6)
