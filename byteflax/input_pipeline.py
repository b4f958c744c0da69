"""SeqIO task -> padded numpy batches for training and evaluation.

Batches are dicts of numpy arrays:
  inputs  `[batch, length]` int32 byte ids, 0 = pad (length = a bucket boundary);
  labels  `[batch, num_labels]` float32 0/1;
  weights `[batch]` float32, 0 for filler rows that pad the last eval batch;
  teacher_logits `[batch, num_labels]` float32, only in training batches of a distillation
  run (`teacher_path`): a teacher's log-odds for each example, looked up by its byte ids;
  label_weights `[batch]` float32, only with transfer texts (`transfer`): 1 for a labelled
  example, 0 for a transfer text, which only the teacher labels.

Examples are grouped into length buckets and padded to the bucket boundary: fortunes have a
median of ~100 bytes but a tail past 1 kB, so one fixed length would spend most compute on
padding, while a handful of boundaries costs only a handful of compilations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import functools
import itertools

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import seqio
import tensorflow as tf

from byteflax import augment
from byteflax import cli
from byteflax import corpus
from byteflax import paths
from byteflax import perturb
from byteflax import splitter
from tasks import pretraining
from tasks import toxicity


def label_keys(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The label columns of a user's file: `data.label_keys`, whose entries may be
  comma-separated (`--config.data.label_keys=toxic,insult` arrives as one string)."""
  entries = (data.label_keys,) if isinstance(data.label_keys, str) else data.label_keys
  return tuple(key.strip() for entry in entries for key in entry.split(",") if key.strip())


def resolve_task(data: ml_collections.ConfigDict) -> str:
  """The SeqIO task name: `data.task`, or a file task when `data.train_path` is set."""
  if data.train_path:
    return toxicity.register_file_task(
        data.train_path, test_path=data.test_path, validation_path=data.validation_path,
        text_key=data.text_key, label_keys=label_keys(data),
        validation_fraction=data.validation_fraction, seed=data.split_seed,
        # .get: a run's config.json from before the field lacks it.
        invalid_utf8=data.invalid_utf8, positive_label=data.get("positive_label"))
  if data.test_path or data.validation_path:
    raise ValueError("data.test_path / data.validation_path need data.train_path as well.")
  if data.task not in seqio.TaskRegistry.names():
    raise ValueError(
        f"Unknown task {data.task!r}; registered: {sorted(seqio.TaskRegistry.names())}.")
  return data.task


def bucket_boundaries(data: ml_collections.ConfigDict, max_length: int | None = None
                      ) -> list[int]:
  """Sorted padded lengths; the last one is `max_length` (default data.max_length)."""
  max_length = max_length or data.max_length
  boundaries = sorted({b for b in data.length_buckets if b < max_length})
  return boundaries + [max_length]


def train_length(data: ml_collections.ConfigDict) -> int:
  """The ids (EOS included) a training text keeps: data.train_max_length, or max_length.

  Shorter training texts train faster and evaluation still reads max_length: 29% of the
  comments' training bytes lie past 384 (docs/training.md).
  """
  # .get: a run's config.json from before the field lacks it.
  length = data.get("train_max_length") or data.max_length
  if not 2 <= length <= data.max_length:
    raise cli.InputError(f"data.train_max_length must be in [2, data.max_length = "
                         f"{data.max_length}], got {length}.")
  return length


def _fingerprints(joined_ids: tf.Tensor) -> tf.Tensor:
  """int64 keys of space-joined id strings (FarmHash Fingerprint64, deterministic)."""
  return tf.strings.to_hash_bucket_fast(joined_ids, np.iinfo(np.int64).max)


def quantize_rows(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Teacher features `[n, d]` -> int8 codes `[n, d]` and float32 scales `[n, 1]`, one
  per row (codes x scale: `dequantize_rows`), each element within scale / 2 of its value.

  A scale per row, not per column: the feature term compares rows by their cosines, which
  the relative error of each row's codes bounds. On the fortunes teacher's 64 principal
  components (84,642 texts) the cosine matrices of 64-text batches move by 0.5% (relative
  RMS; 1.2% with a scale per column), and the file's features take 4.5 MB against 10 MB as
  float16.
  """
  features = np.asarray(features, np.float32)
  scales = np.abs(features).max(axis=1, keepdims=True) / 127
  scales[scales == 0] = 1.0  # An all-zero row: its codes are zeros whatever the scale.
  return np.round(features / scales).astype(np.int8), scales


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
  """int8 codes `[n, d]` x float32 scales `[n, 1]` -> float32 `[n, d]` (`quantize_rows`)."""
  return codes.astype(np.float32) * scales


def teacher_keys(ids: np.ndarray) -> np.ndarray:
  """The keys of examples' teacher logits: a fingerprint of each row of byte ids
  `[n, length]` (EOS included, padding not) -> int64 `[n]`. `_with_teacher_logits` forms
  the same key for one example in the tf.data graph.

  A 64-bit fingerprint rather than the ids themselves: the ids of 147k comments as text
  would take gigabytes as a numpy string array.
  """
  rows = tf.RaggedTensor.from_tensor(tf.constant(ids, tf.int32), padding=splitter.PAD_ID)
  joined = tf.strings.reduce_join(tf.strings.as_string(rows), axis=1, separator=" ")
  return _fingerprints(joined).numpy()


def _with_teacher_logits(ds: tf.data.Dataset, task_name: str, data: ml_collections.ConfigDict,
                         teacher_path: str, features: bool = False) -> tf.data.Dataset:
  """Adds "teacher_logits" to every example from a file written by byteflax.distill, and
  with `features` "teacher_features" from a file that holds them (minilm_teacher --features)."""
  rewrite = ("write a new one with python -m byteflax.distill and this config (--overwrite "
             "to replace this file), or delete it if training fitted it into its workdir.")
  with paths.open_npz(teacher_path) as teacher:
    keys, logits = teacher["keys"], teacher["logits"].astype(np.float32)
    written_for = (str(teacher["task"]), int(teacher["max_length"]))
    if features and "feature_scales" not in teacher.files:  # float16 features: older.
      raise ValueError(
          f"{teacher_path} holds no (int8) teacher features, which "
          "config.distill.feature_weight > 0 needs: python -m benchmarks.minilm_teacher fit "
          "--features, then report.")
    teacher_features = (dequantize_rows(teacher["features"], teacher["feature_scales"])
                        if features else None)
  if keys.dtype != np.int64:
    raise ValueError(f"{teacher_path} is keyed by id strings, an older layout; {rewrite}")
  if written_for != (task_name, data.max_length):
    raise ValueError(
        f"{teacher_path} holds teacher logits for task {written_for[0]!r} at max_length "
        f"{written_for[1]}, not {task_name!r} at {data.max_length}; {rewrite}")
  rows = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(keys, np.arange(len(keys), dtype=np.int64)),
      default_value=-1)
  tables = {"teacher_logits": tf.constant(logits)}
  if teacher_features is not None:
    tables["teacher_features"] = tf.constant(teacher_features)

  def add(ex):
    row = rows.lookup(_fingerprints(
        tf.strings.reduce_join(tf.strings.as_string(ex["inputs"]), separator=" ")))
    with tf.control_dependencies([tf.debugging.assert_non_negative(
        row, message=f"A training example has no teacher logits in {teacher_path}; {rewrite}")]):
      return {**ex, **{name: tf.gather(table, row) for name, table in tables.items()}}

  return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE)


def _dataset(task_name: str, split: str, data: ml_collections.ConfigDict, *, shuffle: bool,
             num_epochs: int | None, seed: int) -> tf.data.Dataset:
  shard_info = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
  ds = seqio.get_mixture_or_task(task_name).get_dataset(
      sequence_length={"inputs": data.max_length}, split=split, shuffle=shuffle,
      shuffle_buffer_size=data.shuffle_buffer_size, seed=seed, num_epochs=num_epochs,
      shard_info=shard_info)
  return ds.map(lambda ex: {"inputs": ex["inputs"], "labels": ex["label"]},
                num_parallel_calls=tf.data.AUTOTUNE)



TRANSFER_PERTURBED = "perturbed"
TRANSFER_PERTURB_SEED = 1  # benchmarks/compare.py perturbs the test texts with seed 0.
TRANSFER_AUGMENTED = "augmented"
TRANSFER_AUGMENT_SEED = 2
TRANSFER_SAMPLE_SEED = 3
TRANSFER_CORPUS = "corpus_"


def texts_from_ids(ids: np.ndarray) -> list[str]:
  """The texts that byte ids `[n, length]` encode (meta ids dropped; a multi-byte character
  cut by truncation becomes U+FFFD)."""
  return [bytes((row[row >= splitter.NUM_SPECIAL_IDS] - splitter.NUM_SPECIAL_IDS).tolist()).decode(
      "utf-8", errors="replace") for row in ids]


def transfer_sources(sources: str) -> list[str]:
  """The sources that config.distill.transfer names, in order ("" names none)."""
  return [name.strip() for name in sources.split(",") if name.strip()]


def transfer_ids(data: ml_collections.ConfigDict, sources: str) -> np.ndarray:
  """Unlabelled transfer texts for distillation as byte ids `[n, data.max_length]`.

  `sources` is comma-separated (config.distill.transfer):
    perturbed    the training texts, obfuscated by byteflax/perturb.py (rate 0.3, seed 1):
                 the same sentences with the spellings that toxic writers use;
    augmented:K  K copies of each training text by byteflax/augment.py (words dropped and
                 replaced, n-gram spans; seed 2), Tang et al.'s transfer set; K defaults to 1;
    <task>[:N]   the training texts of another registered task (e.g. the 147k comments for
                 the fortunes); with N, N of them drawn at random (seed 3; fewer are a
                 subset of more).
    corpus_<source>[:N]  English documents of a source of the offline pretraining corpus
                 (byteflax/corpus.py: fortunes, gcide, manpages, handbook, toxic_comments)
                 that are none of this task's texts nor a held-out text of any
                 classification task, e.g. `corpus_fortunes` for the fortunes in Debian's
                 English collection (apt-get install fortunes) that the task does not hold;
                 N drawn as for a task. What it holds follows the installed packages.
  The same config always gives the same ids, so a teacher file written for them (keyed by
  `teacher_keys`) matches the training batches.
  """
  ids = []
  train_texts = None  # Decoded once, for the sources made from them.
  for source in transfer_sources(sources):
    name, _, count = source.partition(":")
    if name in (TRANSFER_PERTURBED, TRANSFER_AUGMENTED):
      if train_texts is None:
        train_texts = texts_from_ids(task_examples(data, "train", data.max_length)[0])
      if name == TRANSFER_AUGMENTED:
        texts = augment.augment_texts(train_texts, _transfer_copies(source, count),
                                      seed=TRANSFER_AUGMENT_SEED)
      elif not count:
        texts = perturb.perturb_texts(train_texts, perturb.DEFAULT_RATE,
                                      seed=TRANSFER_PERTURB_SEED)
      else:
        raise ValueError(f"Transfer source {source!r} in config.distill.transfer: "
                         f"{TRANSFER_PERTURBED!r} takes no count.")
      ids.append(splitter.ByteSplitter(data.max_length).encode_batch(texts)[0])
    elif name in seqio.TaskRegistry.names():
      ids.append(_sample(_split_ids(name, "train", data, data.max_length)[0], source, name,
                         count))
    elif name.startswith(TRANSFER_CORPUS):
      ids.append(_sample(_corpus_ids(source, name.removeprefix(TRANSFER_CORPUS), data),
                         source, name, count))
    else:
      raise ValueError(f"Unknown transfer source {source!r} in config.distill.transfer: "
                       f"{TRANSFER_PERTURBED!r}, '{TRANSFER_AUGMENTED}:K', a registered "
                       f"task[:N] ({sorted(seqio.TaskRegistry.names())}) or "
                       f"'{TRANSFER_CORPUS}<source>[:N]' ({', '.join(corpus.SOURCES)}).")
  if not ids:
    raise ValueError(f"config.distill.transfer={sources!r} names no source.")
  return np.concatenate(ids)


def _transfer_copies(source: str, count: str) -> int:
  """The K of 'augmented:K' (1 when absent)."""
  return _count(source, count, "copies", f"{TRANSFER_AUGMENTED}:8") if count else 1


def _sample(ids: np.ndarray, source: str, name: str, count: str) -> np.ndarray:
  """Byte ids `[n, length]` of a source's texts: all of them, or `count` drawn at random."""
  if not count:
    return ids
  size = _count(source, count, "texts", f"{name}:20000")
  if size > len(ids):
    raise ValueError(f"Transfer source {source!r} in config.distill.transfer: {name!r} "
                     f"has {len(ids):,} texts, fewer than {size:,}.")
  # A prefix of one fixed permutation: a smaller sample is a subset of a larger one.
  order = np.random.default_rng(TRANSFER_SAMPLE_SEED).permutation(len(ids))
  return ids[np.sort(order[:size])]


def _corpus_ids(source: str, corpus_source: str, data: ml_collections.ConfigDict
                ) -> np.ndarray:
  """Byte ids of a corpus source's English documents that are none of the task's texts,
  compared whole (up to whitespace) and as the model reads them (cut to max_length)."""
  if corpus_source not in corpus.SOURCES:
    raise ValueError(f"Transfer source {source!r} in config.distill.transfer: no corpus "
                     f"source {corpus_source!r}; choose from {', '.join(corpus.SOURCES)}.")
  task_name = resolve_task(data)
  task_ids = np.concatenate([_split_ids(task_name, split, data, data.max_length)[0]
                             for split in seqio.get_mixture_or_task(task_name).splits])
  texts = corpus.unlabelled_documents(
      corpus_source, exclude={corpus.dedup_key(text) for text in texts_from_ids(task_ids)})
  ids = splitter.ByteSplitter(data.max_length).encode_batch(texts)[0]
  return ids[~np.isin(teacher_keys(ids), teacher_keys(task_ids))]


def _count(source: str, count: str, what: str, example: str) -> int:
  """The N of a transfer source 'name:N', an integer >= 1."""
  if not count.isdigit() or int(count) < 1:
    raise ValueError(f"Transfer source {source!r} in config.distill.transfer: the number of "
                     f"{what} must be an integer >= 1 (e.g. {example!r}).")
  return int(count)


def _with_transfer(ds: tf.data.Dataset, data: ml_collections.ConfigDict, num_labels: int,
                   transfer: str, rate: float, seed: int) -> tf.data.Dataset:
  """Mixes the transfer texts into the labelled examples: a `rate` share of the stream.
  Every example gets label_weights (0 for transfer texts, whose labels are zeros)."""
  if not 0 < rate < 1:
    raise ValueError(f"config.distill.transfer_rate must be in (0, 1), got {rate}.")
  ids = transfer_ids(data, transfer)[jax.process_index()::jax.process_count()]
  texts = tf.data.Dataset.from_tensor_slices(
      tf.RaggedTensor.from_tensor(tf.constant(ids, tf.int32), padding=splitter.PAD_ID))
  texts = texts.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True).repeat()
  zeros = tf.zeros([num_labels], tf.float32)
  unlabelled = texts.map(lambda inputs: {"inputs": inputs, "labels": zeros,
                                         "label_weights": tf.constant(0.0)})
  labelled = ds.map(lambda ex: {**ex, "labels": tf.cast(ex["labels"], tf.float32),
                                "label_weights": tf.constant(1.0)})
  return tf.data.Dataset.sample_from_datasets([labelled, unlabelled], [1 - rate, rate],
                                              seed=seed)


def _truncated(ds: tf.data.Dataset, length: int) -> tf.data.Dataset:
  """Cuts inputs to `length` ids, the last of a cut text EOS, as the task cuts max_length."""
  def cut(ex):
    inputs = ex["inputs"]
    cut_inputs = tf.concat([inputs[:length - 1], [splitter.EOS_ID]], axis=0)
    return {**ex, "inputs": tf.cond(tf.shape(inputs)[0] > length,
                                    lambda: cut_inputs, lambda: inputs)}
  return ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE)


def _bucketed(ds: tf.data.Dataset, boundaries: Sequence[int], batch_size: int,
              drop_remainder: bool) -> tf.data.Dataset:
  # bucket_by_sequence_length puts length L in the first bucket with boundary > L.
  return ds.bucket_by_sequence_length(
      element_length_func=lambda ex: tf.shape(ex["inputs"])[0],
      bucket_boundaries=[b + 1 for b in boundaries[:-1]],
      bucket_batch_sizes=[batch_size] * len(boundaries),
      pad_to_bucket_boundary=False, drop_remainder=drop_remainder)


def _inputs_width(length: int) -> dict[str, int]:
  return {"inputs": length}


def _pad_to_boundary(batch: dict[str, np.ndarray], boundaries: Sequence[int],
                     batch_size: int,
                     widths: Callable[[int], dict[str, int]] = _inputs_width
                     ) -> dict[str, np.ndarray]:
  """Pads rows up to batch_size (weight 0) and the sequence fields to `widths(boundary)`,
  boundary being the inputs' bucket; other fields (labels, teacher_logits) are per-example
  float32."""
  rows, length = batch["inputs"].shape
  sequence_widths = widths(next(b for b in boundaries if b >= length))
  padded = {}
  for name, values in batch.items():
    if name in sequence_widths:
      padded[name] = np.zeros((batch_size, sequence_widths[name]), np.int32)
      padded[name][:rows, :values.shape[1]] = values
    else:
      padded[name] = np.zeros((batch_size,) + values.shape[1:], np.float32)
      padded[name][:rows] = values
  padded["weights"] = np.zeros((batch_size,), np.float32)
  padded["weights"][:rows] = 1.0
  return padded


def _in_lockstep(batches: Iterator[dict[str, np.ndarray]], batch_size: int,
                 filler: dict[str, np.ndarray], widths: Callable[[int], dict[str, int]]
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Makes every host yield batches of the same shape, and the same number of them.

  Hosts read different slices of the data, so their length buckets (and, in evaluation,
  their batch counts) differ, while a global array needs every host's piece in one shape.
  Each step the hosts agree on the longest inputs length, and the sequence fields are
  padded to `widths(length)` (`{field: width}`, inputs included); a host that ran out
  feeds `filler` (weight-0 rows, sequence fields of width 0) until all have. One process:
  batches pass unchanged.
  """
  if jax.process_count() == 1:
    yield from batches
    return
  for batch in itertools.chain(batches, itertools.repeat(None)):
    local_length = 0 if batch is None else batch["inputs"].shape[1]
    length = int(np.max(multihost_utils.process_allgather(np.int32(local_length))))
    if not length:  # Every host has run out.
      return
    batch = dict(filler if batch is None else batch)
    for name, width in widths(length).items():
      padded = np.zeros((batch_size, width), batch[name].dtype)
      padded[:, :batch[name].shape[1]] = batch[name]
      batch[name] = padded
    yield batch


def _classification_lockstep(batches: Iterator[dict[str, np.ndarray]], batch_size: int,
                             num_labels: int) -> Iterator[dict[str, np.ndarray]]:
  filler = {"inputs": np.zeros((batch_size, 0), np.int32),
            "labels": np.zeros((batch_size, num_labels), np.float32),
            "weights": np.zeros((batch_size,), np.float32)}
  yield from _in_lockstep(batches, batch_size, filler, _inputs_width)


def host_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f"Batch size {global_batch_size} is not divisible by the "
                     f"{jax.process_count()} hosts.")
  return global_batch_size // jax.process_count()


def train_batches(task_name: str, data: ml_collections.ConfigDict, *, seed: int,
                  start_step: int = 0, teacher_path: str | None = None, transfer: str = "",
                  transfer_rate: float = 0.5, teacher_features: bool = False
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Endless, deterministic training batches, starting at batch `start_step`.

  The pipeline is a pure function of (task, config, seed), so resuming after a restart
  skips the batches already consumed and sees exactly what an uninterrupted run would.
  With `teacher_path` (a byteflax.distill file) batches also carry "teacher_logits"; with
  `transfer` sources too (`transfer_ids`), a `transfer_rate` share of the examples are
  transfer texts and batches carry "label_weights"; with `teacher_features` also the
  file's "teacher_features". Texts are cut to `train_length(data)` after the teacher
  lookup, which keys them at max_length.
  """
  batch_size = host_batch_size(data.batch_size)
  length = train_length(data)
  boundaries = bucket_boundaries(data, length)
  num_labels = len(toxicity.label_names(task_name))
  ds = _dataset(task_name, "train", data, shuffle=True, num_epochs=None, seed=seed)
  if transfer:
    if not teacher_path:
      raise ValueError("Transfer texts (config.distill.transfer) have no labels: they need "
                       "a teacher (config.distill.alpha > 0).")
    ds = _with_transfer(ds, data, num_labels, transfer, transfer_rate, seed)
  if teacher_path:
    ds = _with_teacher_logits(ds, task_name, data, teacher_path, teacher_features)
  if length < data.max_length:
    ds = _truncated(ds, length)
  ds = _bucketed(ds, boundaries, batch_size, drop_remainder=True).skip(start_step)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
  batches = (_pad_to_boundary(b, boundaries, batch_size) for b in ds.as_numpy_iterator())
  yield from _classification_lockstep(batches, batch_size, num_labels)


def eval_batches(task_name: str, split: str, data: ml_collections.ConfigDict
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `split`, every example exactly once (filler rows have weight 0)."""
  batch_size = host_batch_size(data.eval_batch_size)
  boundaries = bucket_boundaries(data)
  ds = _dataset(task_name, split, data, shuffle=False, num_epochs=1, seed=0)
  ds = _bucketed(ds, boundaries, batch_size, drop_remainder=False)
  batches = (_pad_to_boundary(b, boundaries, batch_size)
             for b in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
  yield from _classification_lockstep(batches, batch_size,
                                     len(toxicity.label_names(task_name)))


def seq2seq_batches(task_name: str, split: str, data: ml_collections.ConfigDict, *,
                    train: bool, seed: int = 0, start_step: int = 0
                    ) -> Iterator[dict[str, np.ndarray]]:
  """Span-corruption batches: inputs, targets and weights (tasks/pretraining.py format).

  inputs `[batch, boundary]` are bucketed like classification inputs; targets are padded
  to `pretraining.targets_length(boundary, max_length)`, the longest targets that inputs
  of that bucket can have, so each bucket compiles once. Training batches are endless and start
  at batch `start_step`; evaluation is one pass with weight-0 filler rows. With several
  processes each reads its own slice of the data (seqio ShardInfo) and `data.batch_size`
  is the global batch; the hosts keep in lockstep as for classification.
  """
  if (task_name not in seqio.TaskRegistry.names()
      and task_name not in seqio.MixtureRegistry.names()):
    raise ValueError(f"Unknown task or mixture {task_name!r}; registered: "
                     f"{sorted(seqio.TaskRegistry.names() | seqio.MixtureRegistry.names())}.")
  batch_size = host_batch_size(data.batch_size if train else data.eval_batch_size)
  boundaries = bucket_boundaries(data)
  provider = seqio.get_mixture_or_task(task_name)

  @functools.cache
  def widths(inputs_length: int) -> dict[str, int]:
    return {"inputs": inputs_length,
            "targets": pretraining.targets_length(inputs_length, data.max_length)}

  # A mixture shuffles in its tasks, each with its own buffer (tasks/pretraining.py).
  shuffling = ({"shuffle_buffer_size": data.shuffle_buffer_size}
               if isinstance(provider, seqio.Task) else {})
  ds = provider.get_dataset(
      sequence_length={"inputs": data.max_length,
                       "targets": pretraining.targets_length(data.max_length)},
      split=split, shuffle=train, seed=seed, num_epochs=None if train else 1,
      shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count()),
      **shuffling)
  ds = ds.map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]},
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = _bucketed(ds, boundaries, batch_size, drop_remainder=train)
  if train:
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.skip(start_step).with_options(options)
  batches = (_pad_to_boundary(batch, boundaries, batch_size, widths)
             for batch in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
  filler = {"inputs": np.zeros((batch_size, 0), np.int32),
            "targets": np.zeros((batch_size, 0), np.int32),
            "weights": np.zeros((batch_size,), np.float32)}
  yield from _in_lockstep(batches, batch_size, filler, widths)


def task_examples(data: ml_collections.ConfigDict, split: str, length: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """All of a split as the device sees it: ids `[examples, length]` int32, labels
  `[examples, labels]`; ordered by length bucket, as the evaluation reads them.

  Texts longer than `length` keep their first length - 1 bytes and end in EOS, as the
  on-device splitter (and config.data.max_length truncation) does.
  """
  return _split_ids(resolve_task(data), split, data, length)


def _split_ids(task_name: str, split: str, data: ml_collections.ConfigDict, length: int
               ) -> tuple[np.ndarray, np.ndarray]:
  """task_examples of any registered task (data gives the batching)."""
  ids, labels = [], []
  for batch in eval_batches(task_name, split, data):
    real = batch["weights"] > 0
    inputs = batch["inputs"][real]
    if inputs.shape[1] > length:
      too_long = inputs[:, length] != splitter.PAD_ID
      inputs = inputs[:, :length].copy()
      inputs[too_long, -1] = splitter.EOS_ID
    ids.append(np.pad(inputs, ((0, 0), (0, length - inputs.shape[1]))))
    labels.append(batch["labels"][real])
  if not ids:
    raise ValueError(f"Split {split!r} of task {task_name!r} has no examples.")
  return np.concatenate(ids).astype(np.int32), np.concatenate(labels).astype(np.float32)
