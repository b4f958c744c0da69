r"""Distillation teachers: a baseline's log-odds for every training example, to a file.

The default ByteQRNN config distills, and `byteflax.main` fits its teacher into the workdir
before training (`prepare_teacher`). To fit a teacher once and share it between runs:

  python -m byteflax.distill --config=configs/byteqrnn_toxicity.py \
      --config.distill.teacher_path=/tmp/teacher.npz
  python -m byteflax.main --config=configs/byteqrnn_toxicity.py \
      --config.distill.teacher_path=/tmp/teacher.npz --workdir=/tmp/distill

The first command fits the teacher `config.distill.teacher` (a `byteflax.baselines` model:
TF-IDF char n-grams + logistic regression by default) and writes `config.distill.teacher_path`;
the second trains the student on (1 - alpha) x the labels + alpha x the teacher
(`step.distillation_loss`). Training logits are out-of-fold: the training split is cut into
`config.distill.teacher_folds` folds and each fold is scored by a teacher fit on the others,
so the student learns the teacher's generalisation, not its memory of the labels. The
teacher sees the texts as the student does (the task's byte ids, cut to data.max_length,
decoded), and the file is keyed by a fingerprint of those ids (`input_pipeline.teacher_keys`).
Examples with the same ids (exact duplicates, or texts that agree in their first
max_length - 1 bytes) share one key and get the mean of their logits; the log counts them.

With `config.distill.transfer` the file also holds the teacher's logits for unlabelled
transfer texts (`input_pipeline.transfer_ids`: obfuscated copies of the training texts,
other tasks' texts), which the student then learns from the teacher alone.

An ensemble teacher is the mean of several teachers' log-odds (`average_teachers`):

  python -m byteflax.distill --config=configs/byteqrnn_toxicity.py:fortunes \
      --config.distill.teacher_path=/tmp/average.npz --average=/tmp/char.npz,/tmp/minilm.npz

File (.npz): keys `[n]` int64, logits `[n, labels]` float32, task, max_length, teacher, and the
teacher's own validation / test ROC AUC (fit on the whole training split) for reference;
optionally features `[n, d]` int8 and feature_scales `[n, 1]` float32 (a fine-tuned
MiniLM's pooled features, for the feature term `config.distill.feature_weight`:
benchmarks/minilm_teacher.py).
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import json
import time

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags
import numpy as np

from byteflax import baselines
from byteflax import cli
from byteflax import input_pipeline
from byteflax import paths


def split_texts(config: ml_collections.ConfigDict, split: str
                ) -> tuple[np.ndarray, list[str], np.ndarray]:
  """A split as the byte models see it: ids `[n, max_length]`, their texts, labels."""
  ids, labels = input_pipeline.task_examples(config.data, split, config.data.max_length)
  return ids, input_pipeline.texts_from_ids(ids), labels


def _mean_per_key(keys: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Unique keys `[k]` and the mean of the logits `[n, labels]` of each -> `[k, labels]`."""
  unique, group = np.unique(keys, return_inverse=True)
  sums = np.zeros((len(unique), logits.shape[1]), np.float64)
  np.add.at(sums, group, logits)
  counts = np.bincount(group, minlength=len(unique))[:, None]
  return unique, (sums / counts).astype(np.float32)


def save_teacher(path: str, ids: np.ndarray, logits: np.ndarray, task: str, max_length: int,
                 teacher: str, summary: dict[str, object],
                 features: np.ndarray | None = None) -> int:
  """Writes a teacher file: training ids `[n, max_length]` and their logits `[n, labels]`
  (and features `[n, d]`, stored as int8 with a scale per row, if given:
  `step.similarity_loss`, `input_pipeline.quantize_rows`), keyed by
  `input_pipeline.teacher_keys`; returns how many examples share another's ids."""
  all_keys = input_pipeline.teacher_keys(ids)
  keys, logits = _mean_per_key(all_keys, logits)
  if len(keys) < len(ids):
    logging.warning(
        "%d of %d training examples have the same byte ids as another (exact duplicates, or "
        "texts equal in their first %d bytes); each such group gets its mean teacher logits.",
        len(ids) - len(keys), len(ids), max_length - 1)
  extra = {}
  if features is not None:
    codes, scales = input_pipeline.quantize_rows(_mean_per_key(all_keys, features)[1])
    extra = {"features": codes, "feature_scales": scales}
  _write_file(path, keys, logits, task, max_length, teacher,
              {**summary, "examples_sharing_ids": len(ids) - len(keys)}, **extra)
  return len(ids) - len(keys)


def _write_file(path: str, keys: np.ndarray, logits: np.ndarray, task: str, max_length: int,
                teacher: str, summary: dict[str, object], **extra: np.ndarray) -> None:
  # Written whole, then renamed: a run killed mid-write leaves no half file to trip on.
  path = paths.absolute(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(f"{path.name}.partial")
  paths.write_npz(partial, keys=keys, logits=logits, task=task, max_length=max_length,
                  teacher=teacher, summary=json.dumps(summary), **extra)
  partial.replace(path)


def average_teachers(sources: Sequence[str], path: str, task: str, max_length: int
                     ) -> dict[str, object]:
  """Writes an ensemble teacher to `path`: the mean log-odds of several teacher files.

  Every file must be written for `task` at `max_length`. The ensemble covers the examples
  that every file covers (e.g. a file with transfer texts and one without: the training
  examples); how many each file loses is in the returned summary and the log.
  """
  if len(sources) < 2:
    raise ValueError(f"Averaging needs two or more teacher files, got {list(sources)}.")
  if len(set(sources)) < len(sources):  # The mean would weight that file twice.
    raise ValueError(f"A teacher file is named twice in {list(sources)}.")
  teachers = []
  for source in sources:
    with paths.open_npz(source) as f:
      written_for = (str(f["task"]), int(f["max_length"]))
      if written_for != (task, max_length):
        raise ValueError(f"{source} holds teacher logits for task {written_for[0]!r} at "
                         f"max_length {written_for[1]}, not {task!r} at {max_length}.")
      teachers.append((source, str(f["teacher"]), f["keys"], f["logits"].astype(np.float32)))
  if len({logits.shape[1] for *_, logits in teachers}) > 1:
    raise ValueError(f"The files {list(sources)} have different numbers of labels.")
  common = functools.reduce(np.intersect1d, [keys for _, _, keys, _ in teachers])
  # Keys are unique and sorted (`_mean_per_key`), so each file's rows are found by search.
  mean = np.mean([logits[np.searchsorted(keys, common)] for _, _, keys, logits in teachers],
                 axis=0)
  name = "+".join(kind for _, kind, _, _ in teachers)
  summary = {"teacher": name, "examples": len(common),
             "averaged": {source: {"teacher": kind, "examples": len(keys),
                                   "dropped": len(keys) - len(common)}
                          for source, kind, keys, _ in teachers}}
  for source, kind, keys, _ in teachers:
    if len(keys) > len(common):
      logging.warning("%s (%s): %d of its %d examples are not in every file; left out.",
                      source, kind, len(keys) - len(common), len(keys))
  _write_file(path, common, mean, task, max_length, name, summary)
  return summary


def write_teacher(config: ml_collections.ConfigDict, path: str) -> dict[str, object]:
  """Fits config.distill.teacher, writes its logits to `path`; returns a summary. With
  config.distill.transfer the file also holds the logits of those texts."""
  distill = config.distill
  if distill.teacher_folds < 2:
    raise ValueError(f"config.distill.teacher_folds must be >= 2, got {distill.teacher_folds}.")
  task_name = input_pipeline.resolve_task(config.data)
  splits = {split: split_texts(config, split) for split in ("train", "validation", "test")}
  model = baselines.build(distill.teacher)
  model.fit(splits["train"][1:], splits["validation"][1:])
  summary = {"task": task_name, "teacher": distill.teacher, "c": model.c,
             **{f"teacher_{split}_auc": baselines.macro_auc(
                 splits[split][2], model.decision_function(splits[split][1]))
                for split in ("validation", "test")}}
  ids, texts, labels = splits["train"]
  transfer = None
  if distill.get("transfer"):  # Scored by the teacher fit on the whole training split.
    transfer = input_pipeline.transfer_ids(config.data, distill.transfer)
    transfer_logits = model.decision_function(input_pipeline.texts_from_ids(transfer))
    summary.update(transfer=distill.transfer, transfer_examples=len(transfer))
  logits = baselines.out_of_fold_logits(model, texts, labels, model.c,
                                        distill.teacher_folds, config.seed)
  summary["teacher_train_out_of_fold_auc"] = baselines.macro_auc(labels, logits)
  if transfer is not None:
    ids, logits = np.concatenate([ids, transfer]), np.concatenate([logits, transfer_logits])
  summary["examples_sharing_ids"] = save_teacher(
      path, ids, logits, task=task_name, max_length=config.data.max_length,
      teacher=distill.teacher, summary=summary)
  summary.update(examples=len(splits["train"][0]), path=path)
  return summary


def _averaged_sources(path: str) -> list[str] | None:
  """The files an averaged teacher file was averaged from, in order; None when it is absent.

  A run resumed with another config.distill.average_with must not reuse the old mean.
  """
  if not epath.Path(path).exists():
    return None
  with paths.open_npz(path) as f:
    return list(json.loads(str(f["summary"]))["averaged"])


def prepare_teacher(config: ml_collections.ConfigDict, workdir: str) -> str | None:
  """The teacher file a training run's batches read; None without distillation.

  config.distill.teacher_path when set (it must exist: byteflax.distill writes it). Unset, it
  is `<workdir>/teacher_<teacher>.npz`, fitted here first when missing, so the default config
  trains from one command (the TF-IDF teacher costs ~1 min) and a resumed run reuses it.
  With config.distill.average_with (comma-separated teacher files, e.g. a fine-tuned MiniLM's
  from a GPU) the run learns from the mean log-odds of the fitted teacher and those files,
  `<workdir>/teacher_<teacher>_averaged.npz` (`average_teachers`).
  """
  distill = config.get("distill")
  if not distill or not distill.alpha:
    return None
  average_with = [path for path in distill.get("average_with", "").split(",") if path]
  if distill.teacher_path and average_with:
    raise ValueError("config.distill.average_with averages the teacher that training fits; "
                     "with config.distill.teacher_path set, average the files once with "
                     "python -m byteflax.distill --average=... instead.")
  if distill.teacher_path:
    if not epath.Path(distill.teacher_path).exists():
      raise FileNotFoundError(
          f"No teacher logits at config.distill.teacher_path={distill.teacher_path!r}; write "
          "them first (python -m byteflax.distill --config=<this config>), or leave it unset "
          "to have training fit the teacher into its workdir.")
    return distill.teacher_path
  path = str(epath.Path(workdir) / f"teacher_{distill.teacher}.npz")
  if jax.process_index() == 0 and not epath.Path(path).exists():
    logging.info("Fitting the %s teacher (%d out-of-fold fits) into %s.", distill.teacher,
                 distill.teacher_folds, path)
    start = time.perf_counter()
    try:
      summary = write_teacher(config, path)
    except ValueError as error:
      error.add_note(f"Training fits the {distill.teacher} teacher because "
                     f"config.distill.alpha={distill.alpha} > 0; --config.distill.alpha=0 "
                     "trains on the labels alone.")
      raise
    logging.info("Teacher written in %.0f s: %s", time.perf_counter() - start, summary)
  if average_with:
    fitted, path = path, str(epath.Path(workdir) / f"teacher_{distill.teacher}_averaged.npz")
    sources = [fitted, *average_with]
    if jax.process_index() == 0 and _averaged_sources(path) != sources:
      summary = average_teachers(sources, path,
                                 input_pipeline.resolve_task(config.data),
                                 config.data.max_length)
      logging.info("Averaged teacher: %s", summary)
  if jax.process_count() > 1:  # Every process reads the file once process 0 has written it.
    multihost_utils.sync_global_devices("byteflax.distill.prepare_teacher")
  return path


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  config = config_flags.DEFINE_config_file(
      "config", None, "A training config with a `distill` section.", lock_config=True)
  average = flags.DEFINE_list(
      "average", None, "Teacher files to average (an ensemble teacher) into "
      "config.distill.teacher_path, instead of fitting config.distill.teacher.")
  overwrite = flags.DEFINE_bool(
      "overwrite", False, "Replace an existing file at config.distill.teacher_path (which "
      "may be a shipped teacher, as `:fortunes`' is).")
  flags.mark_flags_as_required(["config"])

  @cli.clean_input_errors
  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    path = config.value.distill.teacher_path
    if not path:
      raise app.UsageError("Set --config.distill.teacher_path (where to write the logits).")
    if epath.Path(path).exists() and not overwrite.value:
      raise app.UsageError(f"{path} exists (config.distill.teacher_path); pass --overwrite "
                           "to replace it, or set --config.distill.teacher_path to a new file.")
    if average.value:
      summary = average_teachers(average.value, path,
                                 input_pipeline.resolve_task(config.value.data),
                                 config.value.data.max_length)
    else:
      summary = write_teacher(config.value, path)
    logging.info("Teacher: %s", summary)
    print(json.dumps(summary, indent=2))

  app.run(run)


if __name__ == "__main__":
  main()
