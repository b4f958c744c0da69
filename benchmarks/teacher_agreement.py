r"""How closely a distilled student follows its teacher, on the texts it learnt it from.

  python -m benchmarks.teacher_agreement --workdir=/tmp/aug4 --out=/tmp/aug4/agreement

For the run in --workdir (its config.json and its model, the selected checkpoint), each set
of texts its batches carried teacher log-odds for: the labelled training split, and each
source of config.distill.transfer. The teacher's log-odds come from the run's teacher file,
the student's from the model; per set: Pearson r and RMSE of the two log-odds, how often
they fall on the same side of 0.5, the student's ROC AUC at ranking the teacher's positives
above its negatives, and both models' ROC AUC against the labels where there are labels.
The held-out splits have no teacher log-odds: the student's ROC AUC there, beside the
teacher's own where its file's summary records it.

What it tells: a student that follows its teacher closely on the texts it trained on, but
falls short of it on held-out text, needs more (or other) texts scored by the teacher; one
that does not follow it even on its training texts needs capacity or steps.
"""

from __future__ import annotations

import json
import math

from absl import app
from absl import flags
import numpy as np

from benchmarks import results_io
from byteflax import classify
from byteflax import cli
from byteflax import distill
from byteflax import input_pipeline
from byteflax import metrics as metrics_lib
from byteflax import splitter
from byteflax import train


def teacher_logits(path: str, ids: np.ndarray) -> np.ndarray:
  """The teacher file's log-odds `[n, labels]` for byte-id rows `[n, length]`, found by
  `input_pipeline.teacher_keys` as training finds them; ValueError if a row has none."""
  with np.load(path) as teacher:
    keys, logits = teacher["keys"], teacher["logits"].astype(np.float32)
  wanted = input_pipeline.teacher_keys(ids)
  rows = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)  # keys: np.unique's.
  missing = int(np.sum(keys[rows] != wanted))
  if missing:
    raise ValueError(f"{missing} of {len(ids)} texts have no teacher log-odds in {path}: "
                     "not the texts this run was distilled on.")
  return logits[rows]


def agreement(student: np.ndarray, teacher: np.ndarray,
              labels: np.ndarray | None = None) -> dict[str, float]:
  """How student log-odds `[n, labels]` follow the teacher's (all labels pooled)."""
  student, teacher = student.ravel(), teacher.ravel()
  result = {
      "texts": int(student.size),
      "pearson_r": float(np.corrcoef(student, teacher)[0, 1]),
      "rmse_logits": float(np.sqrt(np.mean((student - teacher) ** 2))),
      "same_side": float(np.mean((student > 0) == (teacher > 0))),
      "auc_vs_teacher_side": metrics_lib.roc_auc(teacher > 0, student),
  }
  if labels is not None:
    result["student_auc"] = metrics_lib.roc_auc(labels.ravel(), student)
    result["teacher_auc"] = metrics_lib.roc_auc(labels.ravel(), teacher)
  return result


def _sample(count: int, limit: int) -> np.ndarray:
  rows = np.arange(count)
  if count <= limit:
    return rows
  return np.sort(np.random.default_rng(0).choice(rows, limit, replace=False))


def _unpadded(ids: np.ndarray) -> list[np.ndarray]:
  return [row[row != splitter.PAD_ID] for row in ids]


def measure(workdir: str, max_texts: int) -> dict:
  config = train.run_config(workdir)
  teacher_path = distill.prepare_teacher(config, workdir)
  if teacher_path is None:
    raise ValueError(f"The run in {workdir} was not distilled (config.distill.alpha is 0).")
  classifier = classify.load(workdir)
  with np.load(teacher_path) as teacher:
    name, summary = str(teacher["teacher"]), json.loads(str(teacher["summary"]))
  results = {"workdir": workdir, "teacher_path": teacher_path, "teacher": name, "sets": {}}

  def add(name, ids, labels=None):
    rows = _sample(len(ids), max_texts)
    ids = ids[rows]
    results["sets"][name] = agreement(
        classifier.logits_of_ids(_unpadded(ids)), teacher_logits(teacher_path, ids),
        None if labels is None else labels[rows])

  add("train", *input_pipeline.task_examples(config.data, "train", config.data.max_length))
  for source in input_pipeline.transfer_sources(config.distill.get("transfer", "")):
    add(source, input_pipeline.transfer_ids(config.data, source))
  for split in ("validation", "test"):
    ids, labels = input_pipeline.task_examples(config.data, split, config.data.max_length)
    results["sets"][split] = {
        "texts": len(ids),
        "student_auc": metrics_lib.roc_auc(labels.ravel(),
                                           classifier.logits_of_ids(_unpadded(ids)).ravel()),
        # byteflax.distill's summaries name it teacher_<split>_auc, minilm_teacher's
        # <split>_auc.
        "teacher_auc": summary.get(f"teacher_{split}_auc",
                                   summary.get(f"{split}_auc", math.nan))}
  return results


def format_table(results: dict) -> str:
  columns = ("texts", "pearson_r", "rmse_logits", "same_side", "auc_vs_teacher_side",
             "student_auc", "teacher_auc")
  lines = [f"| texts ({results['teacher']} teacher) | " + " | ".join(columns) + " |",
           "|---|" + "---|" * len(columns)]
  for name, row in results["sets"].items():
    cells = [("-" if row.get(c) is None else f"{row[c]:,}" if c == "texts" else
              f"{row[c]:.4f}") for c in columns]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  workdir = flags.DEFINE_string("workdir", None, "A distilled byteflax.main run.")
  max_texts = flags.DEFINE_integer(
      "max_texts", 5000, "At most this many texts of each set, drawn at random (seed 0).")
  out = flags.DEFINE_string("out", None, "Directory for teacher_agreement.json (optional).")
  flags.mark_flag_as_required("workdir")

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    results = measure(workdir.value, max_texts.value)
    results_io.report(results, format_table(results), out.value, "teacher_agreement")

  app.run(run)


if __name__ == "__main__":
  main()
