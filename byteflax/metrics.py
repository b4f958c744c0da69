"""Classification metrics computed on the host from gathered scores.

Evaluation gathers every example's probabilities (a few MB even for civil_comments' 97k test
examples), so metrics are exact, not the binned approximations streaming AUC ops use.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn import metrics as sklearn_metrics


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC of one binary label as the Mann-Whitney U statistic.

  Ties in `scores` get average ranks, which is exactly sklearn's trapezoidal AUC.

  Args:
    labels: `[n]` 0/1.
    scores: `[n]` any monotone score (probability or logit).

  Returns:
    AUC in [0, 1], or NaN when `labels` hold a single class (AUC is undefined then).
  """
  labels = np.asarray(labels).astype(bool)
  num_pos = int(labels.sum())
  num_neg = labels.size - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  ranks = scipy.stats.rankdata(scores)
  u_statistic = ranks[labels].sum() - num_pos * (num_pos + 1) / 2
  return float(u_statistic / (num_pos * num_neg))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the precision-recall curve of one binary label (average precision), or NaN
  when `labels` hold no positive."""
  labels = np.asarray(labels).astype(bool)
  if not labels.any():
    return float("nan")
  # sklearn sums recall steps times precision in floating point, so a perfect ranking can
  # come out at 1.0000000000000002 (e.g. 9 positives then 2 negatives).
  return min(1.0, float(sklearn_metrics.average_precision_score(labels, scores)))


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
  """Best F1 over all thresholds `score >= t`; returns (f1, threshold)."""
  labels = np.asarray(labels).astype(bool)
  order = np.argsort(-np.asarray(scores), kind="stable")
  sorted_scores = np.asarray(scores)[order]
  true_pos = np.cumsum(labels[order])
  # Only the last index of a run of tied scores is a reachable threshold.
  last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
  predicted_pos = np.arange(1, labels.size + 1)
  f1 = 2 * true_pos / (predicted_pos + labels.sum())
  f1 = np.where(last_of_tie, f1, -1.0)
  best = int(np.argmax(f1))
  if f1[best] <= 0:
    return 0.0, float("inf")
  return float(f1[best]), float(sorted_scores[best])


def f1_at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
  """F1 of the predictions `score >= threshold` (e.g. a threshold chosen on validation)."""
  return float(sklearn_metrics.f1_score(np.asarray(labels).astype(bool),
                                        np.asarray(scores) >= threshold, zero_division=0.0))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, loss: float,
                           label_names: tuple[str, ...],
                           thresholds: dict[str, float] | None = None) -> dict[str, float]:
  """All eval metrics for `[n, num_labels]` 0/1 labels and probabilities.

  Per label: `auc/<name>`, `pr_auc/<name>` (average precision: the area under the
  precision-recall curve, informative where ROC AUC saturates), `accuracy/<name>`
  (threshold 0.5), `f1/<name>` and `f1_threshold/<name>` (best threshold); headline `auc`,
  `pr_auc`, `accuracy` and `f1` are the macro means over labels, NaN labels (single class
  in this split) left out of the AUC means. With `thresholds` (label -> threshold chosen
  elsewhere, e.g. validation's best-F1 threshold), also `f1_at_threshold/<name>` and its
  mean `f1_at_threshold`: the F1 a deployed model with that threshold gets on this split.
  """
  labels = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
  probs = np.asarray(probs, dtype=np.float64).reshape(labels.shape)
  metrics = {"loss": float(loss), "num_examples": float(labels.shape[0])}
  for column, name in enumerate(label_names):
    y, p = labels[:, column] >= 0.5, probs[:, column]
    metrics[f"auc/{name}"] = roc_auc(y, p)
    metrics[f"pr_auc/{name}"] = pr_auc(y, p)
    metrics[f"accuracy/{name}"] = float(np.mean((p >= 0.5) == y))
    metrics[f"f1/{name}"], metrics[f"f1_threshold/{name}"] = best_f1(y, p)
    if thresholds is not None:
      metrics[f"f1_at_threshold/{name}"] = f1_at_threshold(y, p, thresholds[name])
  keys = ("auc", "pr_auc", "accuracy", "f1") + (("f1_at_threshold",) if thresholds else ())
  for key in keys:
    values = [metrics[f"{key}/{name}"] for name in label_names]
    metrics[key] = float(np.nanmean(values)) if not np.all(np.isnan(values)) else float("nan")
  return metrics
