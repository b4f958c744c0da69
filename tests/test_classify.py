"""Scoring texts (byteflax.classify): JAX and LiteRT agree on any input; files in and out."""

import gzip
import io
import json
import logging as std_logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from byteflax import classify
from byteflax import export
from byteflax import models

_LENGTH = 64
_TEXTS = ["", "you are a stupid idiot", "have a nice day " * 20, b"\xff\xfe broken bytes",
          "día 😀 ok", "x"]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
  """A smoke-sized ByteQRNN in its export form, its float .tflite and a manifest."""
  model = models.build_model("byte_qrnn", 2, {"embed_dim": 16, "qrnn_layers": 1,
                                              "qrnn_features": 8,
                                              **export.EXPORT_OVERRIDES["byte_qrnn"]})
  params = jax.jit(model.init)(jax.random.PRNGKey(0), np.ones((1, _LENGTH), np.int32))["params"]
  # Spread the logits, as a trained model's are; random-init ones are all ~0.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p * 20 if "head" in str(path) else p, params)
  out = tmp_path_factory.mktemp("classify")
  path = out / export.FLOAT_FILE
  path.write_bytes(export.convert(model, params, (16, 32, _LENGTH)))
  (out / export.MANIFEST_FILE).write_text(json.dumps({"labels": ["toxic", "insult"]}))
  return model, params, str(path)


def test_jax_and_tflite_agree_on_any_text_in_input_order(float_model):
  model, params, path = float_model
  # Batches of 2 over texts of mixed lengths: sorting by length must not reorder outputs.
  jax_classifier = classify.JaxClassifier(model, {"params": params}, ("toxic", "insult"),
                                          _LENGTH, boundaries=(16, 32, 64), batch_size=2)
  tflite_classifier = classify.load(path)
  assert tflite_classifier.label_names == ("toxic", "insult")
  assert tflite_classifier.max_length == _LENGTH
  jax_probs, tflite_probs = (c.predict(_TEXTS) for c in (jax_classifier, tflite_classifier))
  assert jax_probs.shape == (len(_TEXTS), 2)
  np.testing.assert_allclose(jax_probs, tflite_probs, atol=1e-4)
  # Each text alone gives what it gets in the batch (padding and batching change nothing).
  for text, row in zip(_TEXTS, jax_probs):
    np.testing.assert_allclose(jax_classifier.predict([text])[0], row, atol=1e-5)
  assert np.ptp(jax_probs[:, 0]) > 0.05  # The texts get different scores.
  assert classify.load(path).predict([]).shape == (0, 2)


def _texts(*args, **kwargs):
  texts, rows = classify.read_inputs(*args, **kwargs)
  assert len(rows) == len(texts)
  return texts


def test_inputs_from_arguments_files_and_stdin(tmp_path, caplog):
  assert _texts(["a", "b"], None, "text") == ["a", "b"]
  csv_file = tmp_path / "in.csv"
  csv_file.write_text('id,body\n1,"first, with a comma"\n2,second\n')
  assert _texts([], str(csv_file), "body") == ["first, with a comma", "second"]
  jsonl = tmp_path / "in.jsonl"
  jsonl.write_text('{"text": "one"}\n\n{"text": "two", "label": 1}\n')
  assert _texts([], str(jsonl), "text") == ["one", "two"]
  with pytest.raises(ValueError, match="line 1: header has no column"):
    _texts([], str(csv_file), "text")
  lines = tmp_path / "in.txt"
  lines.write_bytes(b"caf\xe9\r\n\nlast")
  with caplog.at_level(std_logging.WARNING):
    assert _texts([], str(lines), "text") == ["caf\ufffd", "", "last"]
  assert "line 1" in caplog.text
  assert _texts([], str(lines), "text", invalid_utf8="cp1252") == [
      "caf\u00e9", "", "last"]
  stdin = io.TextIOWrapper(io.BytesIO("hello\nwörld\n".encode()))
  assert _texts([], None, "text", stdin=stdin) == ["hello", "wörld"]
  # One text per "\n": separators that str.splitlines also splits at stay inside a text.
  inside = "a\u2028b\x85c\x0cd\re"
  stdin = io.TextIOWrapper(io.BytesIO(f"{inside}\r\n\n\nlast".encode()), newline="")
  assert _texts([], None, "text", stdin=stdin) == [inside, "", "", "last"]
  with pytest.raises(ValueError, match="not both"):
    _texts(["a"], str(lines), "text")
  # Compressed files are decompressed first, whatever their inner format.
  (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(jsonl.read_bytes()))
  assert _texts([], str(tmp_path / "in.jsonl.gz"), "text") == ["one", "two"]
  (tmp_path / "in.txt.gz").write_bytes(gzip.compress(b"x\ny\n"))
  assert _texts([], str(tmp_path / "in.txt.gz"), "text") == ["x", "y"]


def test_outputs_as_csv_or_json_lines(tmp_path):
  texts, probs = ["a, b", 'say "hi"'], np.array([[0.25, 0.5], [1.0, 0.0]])
  _, rows = classify.read_inputs(texts, None, "text")
  classify.write_outputs(rows, probs, ("toxic", "insult"), str(tmp_path / "out.csv"))
  assert _texts([], str(tmp_path / "out.csv"), "text") == texts
  assert (tmp_path / "out.csv").read_text().splitlines()[1] == '"a, b",0.250000,0.500000'
  stdout = io.StringIO()
  classify.write_outputs(rows, probs, ("toxic", "insult"), None, stdout=stdout)
  rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
  assert rows == [{"text": "a, b", "toxic": 0.25, "insult": 0.5},
                  {"text": 'say "hi"', "toxic": 1.0, "insult": 0.0}]


def test_a_scored_file_keeps_its_columns_and_its_labels(tmp_path):
  """Ids and labels come through beside the scores, so they can be joined or evaluated; a
  label column of the model's label name keeps its values, the score gets its own name."""
  probs = np.array([[0.25], [0.75], [0.5]])
  (tmp_path / "in.csv").write_text("id,comment,label\n7,nice,0\n8,idiot,1\n9,,0\n")
  texts, rows = classify.read_inputs([], str(tmp_path / "in.csv"), "comment")
  assert texts == ["nice", "idiot", ""]
  classify.write_outputs(rows, probs, ("label",), str(tmp_path / "out.csv"))
  assert (tmp_path / "out.csv").read_text().splitlines() == [
      "id,comment,label,label_probability", "7,nice,0,0.250000", "8,idiot,1,0.750000",
      "9,,0,0.500000"]
  # JSON keeps its types and nested fields, to JSON lines and to CSV; a null text is empty.
  (tmp_path / "in.jsonl").write_text(
      '{"id": 7, "text": "nice", "meta": {"lang": "en"}}\n{"id": 8, "text": null}\n'
      '{"id": 9, "text": "idiot", "score": 0.125}\n')
  texts, rows = classify.read_inputs([], str(tmp_path / "in.jsonl"), "text")
  assert texts == ["nice", "", "idiot"]
  stdout = io.StringIO()
  classify.write_outputs(rows, probs, ("toxic",), None, stdout=stdout)
  assert [json.loads(line) for line in stdout.getvalue().splitlines()] == [
      {"id": 7, "text": "nice", "meta": {"lang": "en"}, "toxic": 0.25},
      {"id": 8, "text": "", "toxic": 0.75},
      {"id": 9, "text": "idiot", "score": 0.125, "toxic": 0.5}]
  classify.write_outputs(rows, probs, ("toxic",), str(tmp_path / "out.csv"))
  assert (tmp_path / "out.csv").read_text().splitlines() == [
      "id,text,meta,score,toxic", '7,nice,"{""lang"": ""en""}",,0.250000',
      "8,,,,0.750000", "9,idiot,,0.125,0.500000"]


def test_missing_models_are_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="byteflax.export"):
    classify.load(str(tmp_path / "model_int8.tflite"))
  with pytest.raises(FileNotFoundError, match="not a byteflax.main workdir"):
    classify.load(str(tmp_path))


def test_cli_stops_on_a_bad_input_file_with_its_message_not_a_traceback(tmp_path):
  bad = tmp_path / "in.csv"
  bad.write_text("body\nhello\n")
  # The input is read before the model is loaded, so no model is needed to see the error.
  result = subprocess.run(
      [sys.executable, "-m", "byteflax.classify", f"--model={tmp_path}", f"--input={bad}"],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.rstrip().splitlines()[-1].startswith(
      f"Error: {bad}, line 1: header has no column ['text']")
  assert "Traceback" not in result.stderr
