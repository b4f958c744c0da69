"""Span-corruption pretraining tasks: format, sentinels, noise statistics, sources."""

import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from tasks import fortunes
from tasks import pretraining
from tests import utils

FIRST_SENTINEL = 258  # seqio.ByteVocabulary().vocab_size - 1, as ByT5.
EOS = 1


def _noise_mask(length, seed=0):
  seeds = tf.constant([[seed, 1], [seed, 2]], tf.int32)
  return pretraining.random_spans_noise_mask(
      tf.constant(length), pretraining.NOISE_DENSITY, pretraining.MEAN_NOISE_SPAN_LENGTH,
      seeds).numpy()


def _runs(mask):
  """Lengths of the runs of True in a bool array."""
  edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
  return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


@pytest.mark.parametrize("length", [2, 37, 200, 1023])
def test_noise_mask_density_and_spans(length):
  for seed in range(3):
    mask = _noise_mask(length, seed)
    num_noise = min(max(round(length * 0.15), 1), length - 1)
    assert mask.shape == (length,) and mask.sum() == num_noise
    assert len(_runs(mask)) == max(round(num_noise / 20), 1)
    assert not mask[0] and mask[-1]  # Starts with a kept span, ends with a noise span.
  assert (_noise_mask(200, 0) != _noise_mask(200, 1)).any()


def _reconstruct(inputs, targets):
  """The chunk back from its inputs and targets (both without EOS)."""
  spans, current = {}, None
  for token in targets:
    if token > 250:
      current = spans.setdefault(token, [])
    else:
      current.append(token)
  out = []
  for token in inputs:
    out.extend(spans[token] if token > 250 else [token])
  return out


def documents(count=120, seed=0):
  rng = np.random.default_rng(seed)
  words = ["byte", "model", "fortune", "cookie", "ünïcode", "😀", "phone", "a", "the"]
  return [" ".join(rng.choice(words, rng.integers(1, 120))) for _ in range(count)]


@pytest.fixture(name="text_task")
def _text_task(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text("\n".join(documents()) + "\n\n", encoding="utf-8")
  return pretraining.register_text_files_task([str(tmp_path / "*.txt")], "lines",
                                              validation_fraction=0.1), documents()


def test_span_corruption_format(text_task):
  name, texts = text_task
  inputs_length = 256
  lengths = {"inputs": inputs_length,
             "targets": pretraining.targets_length(inputs_length)}
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False)
  examples = list(ds.as_numpy_iterator())
  train_texts = set(fortunes.split_examples(texts, 0, (0.9, 0.1, 0.0))["train"])
  chunk = inputs_length - 1
  expected_chunks = sorted(
      tuple(ids[i:i + chunk]) for text in train_texts
      for ids in [[b + 3 for b in text.encode()]] for i in range(0, len(ids), chunk))
  noise = kept = 0
  reconstructed = []
  for ex in examples:
    inputs, targets = ex["inputs"].tolist(), ex["targets"].tolist()
    assert inputs[-1] == EOS and targets[-1] == EOS
    assert len(inputs) <= lengths["inputs"] and len(targets) <= lengths["targets"]
    inputs, targets = inputs[:-1], targets[:-1]
    input_sentinels = [t for t in inputs if t > 250]
    target_sentinels = [t for t in targets if t > 250]
    # Sentinels count down from the top id, in order; targets start with one.
    assert input_sentinels == list(range(FIRST_SENTINEL, FIRST_SENTINEL - len(input_sentinels), -1))
    assert targets[0] == FIRST_SENTINEL
    if len(inputs) > 1:  # T5 masks a 1-byte chunk as if 2 long: its noise span falls off.
      assert target_sentinels == input_sentinels
    noise += len(targets) - len(target_sentinels)
    kept += len(inputs) - len(input_sentinels)
    reconstructed.append(tuple(_reconstruct(inputs, targets)))
  # Nothing lost or truncated: inputs + targets give back every chunk of every document.
  assert sorted(reconstructed) == expected_chunks
  assert abs(noise / (noise + kept) - 0.15) < 0.01
  assert (noise / sum(1 for ex in examples for t in ex["targets"] if t > 250)
          == pytest.approx(20, rel=0.35))


def test_span_corruption_is_seeded(text_task):
  name, _ = text_task
  get = lambda seed: [ex["inputs"].tolist() for ex in seqio.get_mixture_or_task(name).get_dataset(
      {"inputs": 64, "targets": 16}, split="validation", shuffle=True, seed=seed,
      num_epochs=1).as_numpy_iterator()]
  assert get(3) == get(3) and get(3) != get(4)


def test_targets_length_bounds_every_chunk():
  for inputs_length in (3, 64, 128, 1024):
    for chunk in range(1, inputs_length):
      inputs, targets = pretraining.corrupted_lengths(chunk)
      assert inputs <= inputs_length
      assert targets <= pretraining.targets_length(inputs, inputs_length)
  assert pretraining.targets_length(1024) == 162  # 153 noise bytes, 8 spans, EOS.


def test_text_files_formats_and_errors(tmp_path):
  (tmp_path / "a.fortunes").write_text("first entry\n%\nsecond\nentry\n%\n", encoding="utf-8")
  (tmp_path / "b.fortunes").write_bytes("caf\xe9\n%\nthird\n".encode("latin-1"))
  assert pretraining.read_text_documents(str(tmp_path / "b.fortunes"), "fortunes") == [
      "café", "third"]
  assert pretraining.read_text_documents(str(tmp_path / "a.fortunes"), "files") == [
      "first entry\n%\nsecond\nentry\n%\n"]
  name = pretraining.register_text_files_task([str(tmp_path / "*.fortunes")], "fortunes")
  assert name == pretraining.register_text_files_task([str(tmp_path / "*.fortunes")],
                                                      "fortunes")
  texts = [bytes(b - 3 for b in _reconstruct(ex["inputs"][:-1], ex["targets"][:-1])).decode()
           for split in ("train", "validation")
           for ex in seqio.get_mixture_or_task(name).get_dataset(
               {"inputs": 512, "targets": 100}, split=split, shuffle=False).as_numpy_iterator()]
  # Every entry once; one of them held out for validation.
  assert sorted(texts) == sorted(["first entry", "second\nentry", "café", "third"])
  with pytest.raises(FileNotFoundError, match="No non-empty files"):
    pretraining.register_text_files_task([str(tmp_path / "*.missing")])
  with pytest.raises(ValueError, match="Unknown text format"):
    pretraining.read_text_documents(str(tmp_path / "a.fortunes"), "pages")


def test_fortunes_pretraining_holds_out_classification_validation_and_test():
  examples = fortunes.split_examples(fortunes.load_offensive_examples(("en",)))
  train = set(pretraining.fortune_texts("en", ("en",), "train"))
  assert train == {text for text, _ in examples["train"]}
  held_out = {text for split in ("validation", "test") for text, _ in examples[split]}
  assert not train & held_out


def test_registered_names_and_mixture_rates():
  names = seqio.TaskRegistry.names() | seqio.MixtureRegistry.names()
  for name in ("span_corruption_fortunes_en", "span_corruption_fortunes_multilingual",
               "span_corruption_c4_en", "span_corruption_mc4", "span_corruption_mc4_de"):
    assert name in names
  mixture = seqio.get_mixture_or_task("span_corruption_fortunes_multilingual")
  assert [t.name for t in mixture.tasks] == [
      f"span_corruption_fortunes_multilingual_{lang}" for lang in ("en", "es", "it")]
  if not os.path.isdir(os.path.join(fortunes.DEFAULT_DEBIAN_ROOT, "es")):
    pytest.skip("Debian fortunes-es / fortunes-it not installed.")
  counts = {t.name: len(pretraining.fortune_texts(t.name[-2:], ("en", "es", "it"), "train"))
            for t in mixture.tasks}
  for task in mixture.tasks:
    assert mixture.get_rate(task) == pytest.approx(counts[task.name] ** 0.3)


@pytest.mark.parametrize("task_name,tfds_name,splits", [
    ("span_corruption_c4_en", pretraining.C4_TFDS_NAME, ("train", "validation")),
    ("span_corruption_mc4_de", pretraining.MC4_TFDS_NAME, ("de", "de-validation")),
])
def test_c4_sources_on_mocked_tfds(tmp_path, task_name, tfds_name, splits):
  builder = tfds.builder(tfds_name, data_dir=str(tmp_path))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[4], num_bytes=0) for split in splits]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path)):
    raw = list(tfds.load(tfds_name, split=splits[1]).as_numpy_iterator())
    ds = seqio.get_mixture_or_task(task_name).get_dataset(
        {"inputs": 4096, "targets": pretraining.targets_length(4096)}, split="validation",
        shuffle=False)
    got = list(ds.as_numpy_iterator())
    assert len(got) == len(raw) == 4
    for ex, record in zip(got, raw):
      restored = _reconstruct(ex["inputs"][:-1].tolist(), ex["targets"][:-1].tolist())
      assert bytes(b - 3 for b in restored) == record["text"]
    if task_name == "span_corruption_mc4_de":  # Rate n ** 0.3 from the split's size.
      mixture = seqio.get_mixture_or_task("span_corruption_mc4")
      assert mixture.get_rate(seqio.get_mixture_or_task(task_name)) == pytest.approx(4 ** 0.3)


def test_text_files_in_a_bucket(tmp_path, monkeypatch):
  """`data.train_path=gs://...` on a TPU pod: the patterns glob the bucket through epath (a
  local folder standing in for it)."""
  (tmp_path / "texts" / "2025").mkdir(parents=True)
  (tmp_path / "texts" / "2025" / "a.txt").write_text("one document\nanother one\n")
  (tmp_path / "texts" / "2025" / "empty.txt").write_text("")
  (tmp_path / "texts" / "b.fortunes").write_text("first entry\n%\nsecond\n")
  with utils.fake_bucket(tmp_path, monkeypatch):
    assert pretraining._matching_files("gs://bucket/texts/*/*.txt") == [
        "gs://bucket/texts/2025/a.txt"]
    assert pretraining._matching_files("gs://bucket/texts/b.fortunes") == [
        "gs://bucket/texts/b.fortunes"]
    assert pretraining.read_text_documents("gs://bucket/texts/b.fortunes", "fortunes") == [
        "first entry", "second"]
    name = pretraining.register_text_files_task(["gs://bucket/texts/*/*.txt"], "lines")
    with pytest.raises(FileNotFoundError, match="No non-empty files"):
      pretraining.register_text_files_task(["gs://bucket/texts/*.missing"])
  texts = [bytes(b - 3 for b in _reconstruct(ex["inputs"][:-1], ex["targets"][:-1])).decode()
           for split in ("train", "validation")
           for ex in seqio.get_mixture_or_task(name).get_dataset(
               {"inputs": 512, "targets": 100}, split=split, shuffle=False).as_numpy_iterator()]
  assert sorted(texts) == ["another one", "one document"]
