"""Eval metrics against sklearn on random data with ties, and edge cases."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from byteflax import metrics


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(500) < 0.2
  scores = np.round(rng.random(500) + 0.4 * labels, 1)  # Rounding creates many ties.
  assert metrics.roc_auc(labels, scores) == pytest.approx(
      sk_metrics.roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_matches_sklearn_precision_recall_curve(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(300) < 0.3
  scores = np.round(rng.random(300) + 0.3 * labels, 2)
  precision, recall, thresholds = sk_metrics.precision_recall_curve(labels, scores)
  f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
  best = int(np.argmax(f1[:-1]))
  got_f1, got_threshold = metrics.best_f1(labels, scores)
  assert got_f1 == pytest.approx(f1[best], abs=1e-12)
  assert got_threshold == thresholds[best]
  assert sk_metrics.f1_score(labels, scores >= got_threshold) == pytest.approx(got_f1)


def test_single_class_auc_is_nan_and_left_out_of_the_mean():
  labels = np.array([[0, 1], [0, 0], [0, 1], [0, 0]])
  probs = np.array([[0.1, 0.9], [0.2, 0.1], [0.3, 0.8], [0.4, 0.3]])
  result = metrics.classification_metrics(labels, probs, 0.5, ("a", "b"))
  assert np.isnan(result["auc/a"])
  assert result["auc/b"] == 1.0 and result["auc"] == 1.0
  assert np.isnan(result["pr_auc/a"]) and result["pr_auc/b"] == result["pr_auc"] == 1.0
  assert result["accuracy/a"] == 1.0 and result["accuracy"] == 1.0
  assert result["num_examples"] == 4 and result["loss"] == 0.5


def test_pr_auc_is_average_precision():
  rng = np.random.default_rng(0)
  labels = rng.random((200, 1)) < 0.2
  probs = np.clip(labels * 0.3 + rng.random((200, 1)) * 0.7, 0, 1)
  result = metrics.classification_metrics(labels, probs, 0.0, ("toxic",))
  assert result["pr_auc"] == pytest.approx(
      sk_metrics.average_precision_score(labels[:, 0], probs[:, 0]), abs=1e-12)
  assert labels.mean() < result["pr_auc"] < 1.0


def test_pr_auc_of_a_perfect_ranking_is_exactly_one():
  # sklearn's sum of recall steps gives 1.0000000000000002 here.
  labels = np.r_[np.ones(9), np.zeros(2)]
  assert metrics.pr_auc(labels, -np.arange(11.0)) == 1.0


def test_f1_at_a_given_threshold():
  labels = np.array([[1], [1], [0], [0], [1]])
  probs = np.array([[0.9], [0.4], [0.6], [0.1], [0.7]])
  result = metrics.classification_metrics(labels, probs, 0.0, ("toxic",), {"toxic": 0.5})
  # Predicted positive: 0.9, 0.6, 0.7 -> 2 true positives, 1 false positive, 1 missed.
  assert result["f1_at_threshold/toxic"] == result["f1_at_threshold"] == pytest.approx(2 / 3)
  assert result["f1"] == pytest.approx(6 / 7)  # Its own best: threshold 0.4.
  assert "f1_at_threshold" not in metrics.classification_metrics(labels, probs, 0.0, ("toxic",))
