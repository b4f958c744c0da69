"""byteflax.corpus: cleaning, deduplication, held-out texts kept out, shards and manifest,
the source readers, and the SeqIO mixture over the result."""

import gzip
import hashlib
import os
import shutil

import numpy as np
import pytest
import seqio

from byteflax import corpus
from tasks import pretraining
from tests import utils


def test_clean_drops_control_characters_and_collapses_whitespace():
  assert corpus.clean("  a\x00b \t c\r\n\n\n\n  d\x1b  ") == "ab c\n\nd"
  assert corpus.clean("line one  \nline two") == "line one\nline two"


def test_dedup_key_ignores_whitespace_only():
  assert corpus.dedup_key("a  b\nc") == corpus.dedup_key(" a b c ")
  assert corpus.dedup_key("a b c") != corpus.dedup_key("a b C")


def test_validation_split_is_a_fixed_one_percent_by_content():
  texts = [f"document number {i}" for i in range(20_000)]
  flags = [corpus.is_validation(t) for t in texts]
  assert 0.007 < np.mean(flags) < 0.013
  assert flags == [corpus.is_validation(t) for t in texts]  # Same text, same split.


def _documents(pairs):
  return lambda: iter(pairs)


def _build(out, **kwargs):
  english = [("en", f"an english document about topic {i}, long enough") for i in range(400)]
  readers = {
      "a": _documents(english + [("en", english[0][1].replace(" ", "   ")),  # A duplicate.
                                 ("en", "short"),  # Too short.
                                 ("en", "a held-out test text of some classifier")]),
      "b": _documents([("de", f"ein deutsches Dokument Nummer {i}, lang genug") for i in
                       range(300)] + [("sk", "jediny slovensky dokument, dost dlhy")]),
  }
  held_out = {corpus.dedup_key("a held-out test text of some classifier")}
  return corpus.build(out, ["a", "b"], shard_bytes=4096, readers=readers,
                      held_out=held_out, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("corpus") / "c")
  return out, _build(out)


def test_build_removes_duplicates_held_out_and_short_texts(built):
  _, manifest = built
  assert manifest["removed"] == {"duplicates": 1, "held_out": 1, "too_short": 1}
  documents = sum(g["documents"] for g in manifest["groups"])
  assert documents == 400 + 300 + 1
  assert manifest["train_by_language"]["en"]["documents"] + sum(
      g["documents"] for g in manifest["groups"]
      if g["language"] == "en" and g["split"] == "validation") == 400


def test_shards_hold_the_documents_with_their_hashes(built):
  out, manifest = built
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  group = next(g for g in manifest["groups"] if g["source"] == "a" and g["split"] == "train")
  assert len(group["files"]) > 1  # shard_bytes=4096 splits ~20 kB.
  records = []
  for entry in group["files"]:
    path = os.path.join(out, entry["path"])
    assert entry["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    records += [r.numpy().decode() for r in tf.data.TFRecordDataset(path)]
  assert len(records) == group["documents"]
  assert sum(len(r.encode()) for r in records) == group["bytes"]
  assert all(not corpus.is_validation(r) for r in records)
  with pytest.raises(FileExistsError):
    corpus.build(out, ["a"], readers={"a": _documents([])}, held_out=set())


def test_register_corpus_mixes_languages_with_both_splits(built):
  out, manifest = built
  name = pretraining.register_corpus(out)
  assert pretraining.register_corpus(out) == name  # Idempotent.
  mixture = seqio.get_mixture_or_task(name)
  languages = sorted(task.name.rsplit("_", 1)[1] for task in mixture.tasks)
  assert languages == ["de", "en"]  # sk has a single (training) document: left out.
  rates = {task.name.rsplit("_", 1)[1]: mixture.get_rate(task) for task in mixture.tasks}
  en_bytes = manifest["train_by_language"]["en"]["bytes"]
  assert rates["en"] == pytest.approx(en_bytes ** 0.3)
  dataset = mixture.get_dataset({"inputs": 128, "targets": 32}, split="validation",
                                shuffle=False, num_epochs=1)
  example = next(iter(dataset.as_numpy_iterator()))
  assert example["inputs"][-1] == 1 and example["targets"][-1] == 1  # EOS-terminated.


def test_a_corpus_built_into_a_bucket_is_read_from_it(built, tmp_path, monkeypatch):
  """`--out=gs://...` (pretraining on a TPU pod): shards and manifest go to the bucket, a
  local folder standing in for it behind epath; tf.data reads the shards from there."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  local_out, local_manifest = built
  with utils.fake_bucket(tmp_path, monkeypatch) as local:
    write_record = tf.io.TFRecordWriter  # It bypasses epath, as on GCS it needs none.
    monkeypatch.setattr(tf.io, "TFRecordWriter", lambda path: write_record(local(path)))
    manifest = _build("gs://bucket/corpus")
    name = pretraining.register_corpus("gs://bucket/corpus")
    with pytest.raises(FileNotFoundError, match="gs://bucket/elsewhere"):
      pretraining.register_corpus("gs://bucket/elsewhere")
  assert manifest["groups"] == local_manifest["groups"]  # Same paths, sizes and hashes.
  for group in manifest["groups"]:
    for entry in group["files"]:
      assert (tmp_path / "corpus" / entry["path"]).read_bytes() == open(
          os.path.join(local_out, entry["path"]), "rb").read()
  written = (tmp_path / "corpus" / "manifest.json").read_bytes()
  assert name == "span_corruption_corpus_" + hashlib.sha256(written).hexdigest()[:12]
  assert not os.path.exists("gs:")  # Nothing under the working directory.


def test_register_corpus_without_a_manifest_says_how_to_build_one(tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m byteflax.corpus"):
    pretraining.register_corpus(str(tmp_path))


def test_unknown_source_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="Unknown sources"):
    corpus.build(str(tmp_path / "x"), ["nope"])


def test_fortune_languages_and_rot13_from_debian_paths():
  assert corpus._fortune_language("computers") == "en"
  assert corpus._fortune_language(os.path.join("off", "it", "x-o")) == "it"
  assert corpus._fortune_language(os.path.join("es", "off", "sexo")) == "es"
  assert corpus._fortune_language(os.path.join("cz", "x")) == "cs"
  assert corpus._fortune_language("brasil") == "pt"
  assert corpus._is_rot13(os.path.join("es", "off", "sexo"))
  assert corpus._is_rot13(os.path.join("off", "racism"))
  assert not corpus._is_rot13(os.path.join("off", "it", "x-o"))
  assert corpus._is_english_rot13("fortunes-o")
  assert not corpus._is_english_rot13("fortunes")


def test_fortunes_reader_decodes_rot13_and_names_languages(tmp_path):
  debian, english = tmp_path / "debian", tmp_path / "pypi"
  (debian / "es" / "off").mkdir(parents=True)
  (debian / "es" / "off" / "x").write_text("Ubyn zhaqb\n%\n")  # "Hola mundo" in ROT13.
  (debian / "es" / "x.dat").write_bytes(b"\x00index")  # strfile index: skipped.
  (debian / "plain").write_text("first\n%\nsecond\n")
  (debian / "it").mkdir()
  (debian / "it" / "leggi").write_text("Ciao\n%\n")
  (debian / "leggi").symlink_to(os.path.join("it", "leggi"))  # As fortunes-it links them.
  english.mkdir()
  (english / "murphy").write_text("a law\n%\n")
  (english / "murphy-o").write_text("n ehqr ynj\n%\n")  # "a rude law" in ROT13.
  documents = list(corpus.fortunes_documents(str(debian), str(english)))
  assert sorted(documents) == sorted([("es", "Hola mundo"), ("en", "first"),
                                      ("en", "second"), ("it", "Ciao"), ("en", "a law"),
                                      ("en", "a rude law")])


def test_man_language_and_html_text():
  assert corpus._man_language(os.path.join("pt_BR", "man1", "ls.1.gz")) == "pt"
  assert corpus._man_language(os.path.join("man1", "ls.1.gz")) == "en"
  page = ("<html><head><title>T</title><style>p{}</style></head><body><h1>Title</h1>"
          "<p>One &amp; two</p><script>x()</script><p>Three</p></body></html>")
  assert corpus.clean(corpus.html_to_text(page)) == "Title\n\nOne & two\n\nThree"


def test_gcide_reader_splits_entries_and_drops_source_notes(tmp_path):
  path = tmp_path / "gcide.dict.dz"
  with gzip.open(path, "wt") as f:
    f.write("00-database-info\n   about\nAbuse \\A*buse\"\\, v. t.\n   1. To misuse.\n"
            "      [1913 Webster]\nZebra \\Ze\"bra\\, n.\n   A striped animal.\n")
  entries = [corpus.clean(text) for _, text in corpus.gcide_documents(str(path))]
  assert entries == ['Abuse \\A*buse"\\, v. t.\n1. To misuse.',
                     'Zebra \\Ze"bra\\, n.\nA striped animal.']


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (groff-base)")
def test_man_pages_render_to_plain_text(tmp_path):
  source = tmp_path / "man1" / "hello.1.gz"
  source.parent.mkdir()
  with gzip.open(source, "wt") as f:
    f.write('.TH HELLO 1\n.SH NAME\nhello \\- say \\fBhello\\fR\n.SH DESCRIPTION\nGreets.\n')
  (language, text), = corpus.manpages_documents(str(tmp_path))
  assert language == "en"
  assert "hello - say hello" in text and "Greets." in text
  assert "\b" not in text and "\x1b" not in text  # No overstrike, no SGR escapes.


def test_pretraining_batches_read_the_corpus_mixture(built):
  from byteflax import input_pipeline  # pylint: disable=g-import-not-at-top
  from configs import pretrain_corpus  # pylint: disable=g-import-not-at-top
  out, _ = built
  config = pretrain_corpus.get_config("smoke")
  config.data.corpus_dir = out
  name = pretraining.register_corpus(out)
  for split, train in (("train", True), ("validation", False)):
    batch = next(input_pipeline.seq2seq_batches(name, split, config.data, train=train))
    assert batch["inputs"].shape[0] == batch["targets"].shape[0]
    assert batch["weights"].sum() > 0
