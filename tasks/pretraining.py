"""SeqIO tasks and mixtures for ByT5-style byte-level span-corruption pretraining.

Every task yields {"inputs", "targets"}: int32 `seqio.ByteVocabulary` ids (byte + 3; pad 0,
EOS 1), each ending in EOS. A text is cut into chunks of `sequence_length["inputs"] - 1`
bytes; in each chunk the T5 noise mask (`random_spans_noise_mask`) marks 15% of the bytes
(`NOISE_DENSITY`) in spans of 20 bytes on average (`MEAN_NOISE_SPAN_LENGTH`), ByT5's
settings. Inputs keep the other bytes and replace each noise span by one sentinel; targets
are each sentinel followed by the bytes it hid (T5's `span_corruption`). Corrupted inputs
are never longer than the chunk, so they fit `sequence_length["inputs"]` with EOS; targets
fit `targets_length(inputs_length)`.

Sentinels (as ByT5 / T5 with `seqio.ByteVocabulary`): the top ids counting down, the first
span gets `vocab_size - 1` = 258, the next 257, ... These are bytes 0xFF, 0xFE, ...; bytes
0xF5-0xFF never occur in UTF-8, so up to 11 spans per chunk (ids 248..258) cannot collide
with text; a 1,023-byte chunk has round(round(1023 * 0.15) / 20) = 8 spans.

Tasks and mixtures registered on import (none reads or downloads anything until used):
  span_corruption_fortunes_en             English fortunes (PyPI data): the texts of the
                                          train split of `fortunes_offensive_en` (labels
                                          dropped); validation = its validation split. Its
                                          test texts are never seen.
  span_corruption_fortunes_multilingual   mixture of span_corruption_fortunes_multilingual_
                                          {en,es,it}: the train split of
                                          `fortunes_offensive_multilingual`, by language
                                          (Spanish / Italian need Debian packages), sampled
                                          at rates n ** 0.3 (n = texts per language).
  span_corruption_c4_en                   TFDS c4/en (downloads on first use).
  span_corruption_mc4_<language>          TFDS c4/multilingual, one per `MC4_LANGUAGES`.
  span_corruption_mc4                     mixture of those at rates n ** 0.3 (mT5's
                                          language sampling exponent alpha = 0.3; n =
                                          examples in the language's train split).
`register_text_files_task` adds a task over text files (local or in a bucket) matched by glob
patterns, and `register_corpus` a mixture over a corpus that `python -m byteflax.corpus`
built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import glob
import hashlib
import json
import os

from absl import logging
from etils import epath
import seqio
import tensorflow as tf

from byteflax import paths as byteflax_paths
from tasks import fortunes

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 20.0
VOCABULARY = seqio.ByteVocabulary()
OUTPUT_FEATURES = {
    "inputs": seqio.Feature(VOCABULARY, add_eos=True, dtype=tf.int32),
    "targets": seqio.Feature(VOCABULARY, add_eos=True, dtype=tf.int32),
}
# mT5's exponent for sampling languages: rate proportional to n ** 0.3 flattens the
# distribution towards rare languages.
LANGUAGE_SAMPLING_EXPONENT = 0.3
C4_TFDS_NAME = "c4/en:3.1.0"
MC4_TFDS_NAME = "c4/multilingual:3.1.0"
MC4_LANGUAGES = ("en", "de", "es", "fr", "it", "pl", "pt", "ru", "cs", "ja", "zh", "ar", "hi")
FORTUNES_MULTILINGUAL = ("en", "es", "it")
TEXT_FORMATS = ("fortunes", "lines", "files")
_SPLITS = ("train", "validation")
_SHUFFLE_BUFFER_SIZE = 10_000


def first_sentinel_id(vocabulary: seqio.Vocabulary = VOCABULARY) -> int:
  """T5's `sentinel_id`: the top id (258 for bytes); later spans count down from it."""
  return vocabulary.vocab_size - 1


def corrupted_lengths(chunk_length: int, noise_density: float = NOISE_DENSITY,
                      mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                      ) -> tuple[int, int]:
  """(inputs, targets) lengths, EOS included, of a corrupted chunk of `chunk_length` bytes.

  The arithmetic of `random_spans_noise_mask`: the mask ends with a noise span, so inputs
  hold the non-noise bytes and one sentinel per span, targets one sentinel per span and
  the noise bytes.
  """
  length = max(chunk_length, 2)
  noise = min(max(round(length * noise_density), 1), length - 1)
  spans = max(round(noise / mean_noise_span_length), 1)
  if chunk_length < 2:  # The mask of a 1-byte chunk is its first, non-noise position.
    return 2, 2
  return chunk_length - noise + spans + 1, noise + spans + 1


def targets_length(inputs_length: int, max_inputs_length: int | None = None) -> int:
  """The longest targets of an example whose inputs are at most `inputs_length` long.

  Args:
    inputs_length: a bound on the inputs (e.g. a length bucket), EOS included.
    max_inputs_length: the task's sequence_length["inputs"] (chunks are one shorter);
      defaults to inputs_length.
  """
  max_chunk = (max_inputs_length or inputs_length) - 1
  return max(targets for inputs, targets in map(corrupted_lengths, range(1, max_chunk + 1))
             if inputs <= inputs_length)


# ---------------------------------------------------------------------------------------
# Span corruption (T5's algorithm, in tf ops so it runs inside tf.data).


def random_spans_noise_mask(length: tf.Tensor, noise_density: float,
                            mean_noise_span_length: float, seeds: tf.Tensor) -> tf.Tensor:
  """T5's noise mask: alternating non-noise / noise spans, starting with non-noise.

  round(length * noise_density) positions (at least 1, at most length - 1) are noise, in
  round(noise / mean_noise_span_length) spans (at least 1); span lengths are a uniformly
  random composition of the noise and non-noise counts.

  Args:
    length: int32 scalar, the sequence length.
    noise_density: fraction of noise positions.
    mean_noise_span_length: average noise span length.
    seeds: int32 [2, 2], stateless seeds for the two segmentations.

  Returns:
    bool [length], True at noise positions.
  """
  original_length = length
  length = tf.maximum(length, 2)  # A 1-byte text still gets a (noise, non-noise) pair.
  num_noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
  num_noise = tf.minimum(tf.maximum(num_noise, 1), length - 1)
  num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length),
                      tf.int32)
  num_spans = tf.maximum(num_spans, 1)
  num_nonnoise = length - num_noise

  def segment_lengths(num_items, seed):
    """[num_spans] positive lengths summing to num_items, uniformly at random."""
    first_in_segment = tf.pad(seqio.utils.stateless_shuffle(
        tf.cast(tf.range(num_items - 1) < num_spans - 1, tf.int32), seed), [[1, 0]])
    segment_id = tf.cumsum(first_in_segment)
    return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)

  interleaved = tf.reshape(tf.stack([segment_lengths(num_nonnoise, seeds[0]),
                                     segment_lengths(num_noise, seeds[1])], axis=1),
                           [num_spans * 2])
  span_starts = tf.cumsum(interleaved)[:-1]
  span_start_indicator = tf.math.unsorted_segment_sum(
      tf.ones_like(span_starts), span_starts, length)
  is_noise = tf.equal(tf.cumsum(span_start_indicator) % 2, 1)
  return is_noise[:original_length]


def replace_spans_with_sentinels(tokens: tf.Tensor, mask: tf.Tensor,
                                 first_sentinel: int) -> tf.Tensor:
  """Each run of masked tokens becomes one sentinel: first_sentinel, first_sentinel - 1, ..

  T5's `noise_span_to_unique_sentinel`; with the mask inverted it builds the targets.
  """
  previous_masked = tf.pad(mask[:-1], [[1, 0]])
  first_masked = tf.logical_and(mask, tf.logical_not(previous_masked))
  later_masked = tf.logical_and(mask, previous_masked)
  sentinels = first_sentinel + 1 - tf.cumsum(tf.cast(first_masked, tokens.dtype))
  tokens = tf.where(first_masked, sentinels, tokens)
  return tf.boolean_mask(tokens, tf.logical_not(later_masked))


def span_corruption(dataset: tf.data.Dataset, noise_density: float = NOISE_DENSITY,
                    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                    ) -> tf.data.Dataset:
  """{"targets": byte ids} -> {"inputs": corrupted ids, "targets": sentinels + spans}.

  Seeds come from seqio's per-task seed manager, so a seeded pipeline is deterministic.
  """
  first_sentinel = first_sentinel_id()

  @seqio.map_over_dataset(num_seeds=2)
  def corrupt(example, seeds):
    tokens = example["targets"]
    noise = random_spans_noise_mask(tf.size(tokens), noise_density, mean_noise_span_length,
                                    seeds)
    return {"inputs": replace_spans_with_sentinels(tokens, noise, first_sentinel),
            "targets": replace_spans_with_sentinels(tokens, tf.logical_not(noise),
                                                    first_sentinel)}

  return corrupt(dataset)


def split_into_chunks(dataset: tf.data.Dataset, sequence_length: Mapping[str, int]
                      ) -> tf.data.Dataset:
  """Cuts each example's "targets" ids into chunks of sequence_length["inputs"] - 1.

  The corrupted inputs of a chunk are at most as long as the chunk, so with EOS they fit.
  """
  chunk = sequence_length["inputs"] - 1
  if chunk < 2:
    raise ValueError(f"sequence_length['inputs'] must be >= 3, got {chunk + 1}.")

  def chunks(example):
    ids = example["targets"]
    padded = tf.pad(ids, [[0, -tf.size(ids) % chunk]])
    # Byte ids are >= 3, so 0 marks only the padding of the last chunk.
    rows = tf.RaggedTensor.from_tensor(tf.reshape(padded, [-1, chunk]), padding=0)
    return tf.data.Dataset.from_tensor_slices({"targets": rows})

  return dataset.flat_map(chunks)


def _text_to_targets(dataset: tf.data.Dataset) -> tf.data.Dataset:
  return dataset.map(lambda ex: {"targets": ex["text"]}, num_parallel_calls=tf.data.AUTOTUNE)


def _tokenize(dataset: tf.data.Dataset,
              output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  return seqio.preprocessors.tokenize(dataset, output_features, copy_pretokenized=False)


def _drop_empty(dataset: tf.data.Dataset) -> tf.data.Dataset:
  return dataset.filter(lambda ex: tf.size(ex["targets"]) > 0)


# Source examples hold one feature, "text".
PREPROCESSORS = (_text_to_targets, _tokenize, _drop_empty, split_into_chunks,
                 span_corruption, seqio.preprocessors.append_eos_after_trim)


# ---------------------------------------------------------------------------------------
# Sources.


def _texts_dataset(texts: Sequence[str], split: str, shuffle: bool,
                   seed: int | None) -> tf.data.Dataset:
  if not texts:
    raise ValueError(f"Split {split!r} has no texts.")
  ds = tf.data.Dataset.from_tensor_slices({"text": tf.constant(list(texts), tf.string)})
  return ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True) if shuffle else ds


@functools.lru_cache(maxsize=16)
def fortune_texts(language: str, split_languages: tuple[str, ...], split: str
                  ) -> tuple[str, ...]:
  """Texts of `language` in `split` of the fortunes classification task of split_languages.

  Pretraining on the classification task's train split only keeps its validation and
  test texts unseen until evaluation.
  """
  in_language = {text for text, _ in fortunes.load_offensive_examples((language,))}
  examples = fortunes.split_examples(fortunes.load_offensive_examples(split_languages))
  return tuple(text for text, _ in examples[split] if text in in_language)


def _fortunes_source(language: str, split_languages: tuple[str, ...]) -> seqio.DataSource:

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
    return _texts_dataset(fortune_texts(language, split_languages, split), split,
                          shuffle_files, seed)

  return seqio.FunctionDataSource(dataset_fn, splits=_SPLITS)


def read_text_documents(path: str, text_format: str) -> list[str]:
  """Documents of one file: fortune entries, non-empty lines, or the whole file."""
  if text_format not in TEXT_FORMATS:
    raise ValueError(f"Unknown text format {text_format!r}; choose from {TEXT_FORMATS}.")
  if text_format == "fortunes":
    return fortunes.read_fortune_file(path)
  text = fortunes.decode_bytes(epath.Path(path).read_bytes())
  if text_format == "lines":
    return [line.strip() for line in text.split("\n") if line.strip()]
  return [text] if text.strip() else []


def _add_task(name: str, source: seqio.DataSource, *,
              shuffle_buffer_size: int = _SHUFFLE_BUFFER_SIZE) -> None:
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(name, source=source, output_features=OUTPUT_FEATURES,
                           preprocessors=PREPROCESSORS, shuffle_buffer_size=shuffle_buffer_size)


def _matching_files(pattern: str) -> list[str]:
  """The non-empty files that the glob `pattern` matches; a URI's (gs://...) through epath,
  whose backend globs one directory level per `*`, as tf.io.gfile does."""
  if not byteflax_paths.is_uri(pattern):
    return [p for p in glob.glob(pattern, recursive=True)
            if os.path.isfile(p) and os.path.getsize(p)]
  parts = pattern.split("/")
  fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
  if fixed == len(parts):  # No wildcard: the file itself.
    matches = [epath.Path(pattern)]
  else:
    matches = epath.Path("/".join(parts[:fixed])).glob("/".join(parts[fixed:]))
  return [str(p) for p in matches if p.is_file() and p.stat().length]


def register_text_files_task(patterns: Sequence[str], text_format: str = "lines", *,
                             validation_fraction: float = 0.01, seed: int = 0) -> str:
  """Registers span corruption over text files and returns the task name.

  Args:
    patterns: glob patterns, local (`**` recurses) or of a bucket (`gs://b/texts/*.txt`;
      `**` is local only); matched files are read sorted by path.
    text_format: "fortunes" (entries between `%` lines), "lines" (one document per
      non-empty line) or "files" (one document per file). Non-UTF-8 files are read as
      Latin-1.
    validation_fraction: share of the documents held out for validation (at least 1).
    seed: seed of that split.

  Returns:
    "span_corruption_files_<hash of the arguments>".

  Raises:
    FileNotFoundError: no pattern matches a non-empty file.
  """
  if isinstance(patterns, str):
    patterns = (patterns,)
  key = json.dumps([list(patterns), text_format, validation_fraction, seed])
  name = "span_corruption_files_" + hashlib.sha256(key.encode()).hexdigest()[:12]
  if name in seqio.TaskRegistry.names():
    return name
  paths = sorted({p for pattern in patterns for p in _matching_files(pattern)})
  if not paths:
    raise FileNotFoundError(f"No non-empty files match {list(patterns)}.")
  documents = [doc for path in paths for doc in read_text_documents(path, text_format)]
  if len(documents) < 2:
    raise ValueError(f"{len(documents)} document(s) in {len(paths)} files: need at least 2 "
                     "(one for validation).")
  fraction = max(validation_fraction, 1.0 / len(documents))
  splits = fortunes.split_examples(documents, seed, (1.0 - fraction, fraction, 0.0))

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
    return _texts_dataset(splits[split], split, shuffle_files, seed)

  _add_task(name, seqio.FunctionDataSource(dataset_fn, splits=_SPLITS))
  return name


CORPUS_MANIFEST = "manifest.json"  # byteflax.corpus.MANIFEST_FILE (that module needs absl).
# Chunks per language task. A mixture yields its first batch only once every task's buffer
# is full, so with ~25 languages a large buffer costs minutes before the first step; the
# shards' files are shuffled and interleaved as well.
CORPUS_SHUFFLE_BUFFER_SIZE = 2_000


def register_corpus(corpus_dir: str) -> str:
  """Registers a `byteflax.corpus` folder and returns its mixture's name.

  One task per language (all sources of that language: its TFRecord shards, one raw
  document per record) and a mixture of them at rates train_bytes ** 0.3, mT5's language
  sampling. Languages with no validation document (a few dozen documents at most) are left
  out, with a warning: their rate would repeat them hundreds of times an epoch anyway.

  Returns:
    "span_corruption_corpus_<hash of the manifest>".

  Raises:
    FileNotFoundError: `corpus_dir` holds no manifest.
  """
  # On local disk or in a bucket (gs://): epath reads the manifest, tf.data the shards.
  manifest_path = epath.Path(corpus_dir) / CORPUS_MANIFEST
  if not manifest_path.exists():
    raise FileNotFoundError(f"No {CORPUS_MANIFEST} in {corpus_dir}; build the corpus with "
                            f"python -m byteflax.corpus --out={corpus_dir}")
  data = manifest_path.read_bytes()
  manifest = json.loads(data)
  name = "span_corruption_corpus_" + hashlib.sha256(data).hexdigest()[:12]
  if name in seqio.MixtureRegistry.names():
    return name
  files: dict[str, dict[str, list[str]]] = {}
  train_bytes: dict[str, int] = {}
  for group in manifest["groups"]:
    paths = files.setdefault(group["language"], {"train": [], "validation": []})
    paths[group["split"]] += [str(epath.Path(corpus_dir) / f["path"]) for f in group["files"]]
    if group["split"] == "train":
      train_bytes[group["language"]] = train_bytes.get(group["language"], 0) + group["bytes"]
  tasks = []
  for language, paths in sorted(files.items()):
    if not paths["train"] or not paths["validation"]:
      logging.warning("Corpus language %r has no %s documents; left out of %s.", language,
                      "validation" if paths["train"] else "training", name)
      continue
    task = f"{name}_{language}"
    _add_task(task, seqio.FileDataSource(
        read_file_fn=lambda path: tf.data.TFRecordDataset(path).map(lambda t: {"text": t}),
        split_to_filepattern=paths), shuffle_buffer_size=CORPUS_SHUFFLE_BUFFER_SIZE)
    tasks.append((task, float(train_bytes[language]) ** LANGUAGE_SAMPLING_EXPONENT))
  if not tasks:
    raise ValueError(f"The corpus in {corpus_dir} has no language with both splits.")
  seqio.MixtureRegistry.add(name, tasks)
  return name


def _count_rate(count_fn):
  """A seqio mixing rate n ** LANGUAGE_SAMPLING_EXPONENT, n counted when first sampled."""
  return lambda task: float(count_fn(task)) ** LANGUAGE_SAMPLING_EXPONENT


def _register_builtin() -> None:
  _add_task("span_corruption_fortunes_en", _fortunes_source("en", ("en",)))
  multilingual = []
  for language in FORTUNES_MULTILINGUAL:
    name = f"span_corruption_fortunes_multilingual_{language}"
    _add_task(name, _fortunes_source(language, FORTUNES_MULTILINGUAL))
    rate = _count_rate(lambda task, language=language: len(
        fortune_texts(language, FORTUNES_MULTILINGUAL, "train")))
    multilingual.append((name, rate))
  if "span_corruption_fortunes_multilingual" not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add("span_corruption_fortunes_multilingual", multilingual)

  # Large web corpora arrive in file order: a bigger shuffle window.
  _add_task("span_corruption_c4_en",
            seqio.TfdsDataSource(C4_TFDS_NAME, splits=_SPLITS),
            shuffle_buffer_size=100_000)
  mc4 = []
  for language in MC4_LANGUAGES:
    name = f"span_corruption_mc4_{language}"
    _add_task(name, seqio.TfdsDataSource(
        MC4_TFDS_NAME, splits={"train": language, "validation": f"{language}-validation"}),
              shuffle_buffer_size=100_000)
    mc4.append((name, _count_rate(lambda task: task.num_input_examples("train"))))
  if "span_corruption_mc4" not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add("span_corruption_mc4", mc4)


_register_builtin()
