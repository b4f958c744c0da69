"""Users' data files (tasks.user_files): formats, encodings, headers, labels, splits, and
the SeqIO tasks that tasks.toxicity.register_file_task makes of them."""

import bz2
import codecs
import csv
import gzip
import json
import re
import logging
import lzma

import pytest
import seqio

from byteflax import input_pipeline
from configs import byteqrnn_toxicity
from tasks import fortunes
from tasks import toxicity
from tasks import user_files
from tests import utils

_VOCAB = seqio.ByteVocabulary()


def _csv_rows(n: int) -> str:
  labels = ("0", "1", "true", "False", "0.7", "0.2")
  return "text,label,other\n" + "".join(
      f'"row {i}, quoted",{labels[i % len(labels)]},x\n' for i in range(n))


def _task_examples(name: str, split: str) -> list[tuple[str, list[float]]]:
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split=split, shuffle=False)
  return [(_VOCAB.decode(ex["inputs"].tolist()), ex["label"].tolist())
          for ex in ds.as_numpy_iterator()]


def test_csv_file_task_carves_validation_and_test(tmp_path):
  path = utils.write_file(tmp_path / "train.csv", _csv_rows(50))
  name = toxicity.register_file_task(path)
  assert toxicity.register_file_task(path) == name
  assert toxicity.register_file_task(path, seed=1) != name
  assert toxicity.label_names(name) == ("label",)
  splits = {split: _task_examples(name, split) for split in fortunes.SPLITS}
  # 25 texts of each class; each held-out split takes round(0.1 * 25) = 3 of each.
  assert [len(splits[s]) for s in fortunes.SPLITS] == [38, 6, 6]
  assert all(sum(label for _, (label,) in splits[s]) == 3 for s in ("validation", "test"))
  texts = sorted(text for examples in splits.values() for text, _ in examples)
  assert texts == sorted(f"row {i}, quoted" for i in range(50))
  labels = dict(example for examples in splits.values() for example in examples)
  assert [labels[f"row {i}, quoted"] for i in range(6)] == [[0], [1], [1], [0], [1], [0]]


def test_jsonl_file_task_with_given_splits_and_two_labels(tmp_path):
  def jsonl(n):
    return "".join(json.dumps({"body": f"t{i}", "a": i % 2, "b": bool(i % 3)}) + "\n\n"
                   for i in range(n))

  train = utils.write_file(tmp_path / "train.jsonl", jsonl(8))
  test = utils.write_file(tmp_path / "test.jsonl", jsonl(3))
  valid = utils.write_file(tmp_path / "valid.jsonl", jsonl(2))
  name = toxicity.register_file_task(train, test_path=test, validation_path=valid,
                                     text_key="body", label_keys=("a", "b"))
  assert toxicity.num_labels(name) == 2
  assert _task_examples(name, "test") == [("t0", [0, 0]), ("t1", [1, 1]), ("t2", [0, 1])]
  assert len(_task_examples(name, "train")) == 8
  ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 3}, split="validation",
                                                   shuffle=False)
  # Cut to 3 ids, the last one EOS.
  assert [ex["inputs"].tolist() for ex in ds.as_numpy_iterator()] == [
      _VOCAB.encode(text)[:2] + [_VOCAB.eos_id] for text in ("t0", "t1")]


@pytest.mark.parametrize("filename, content, message", [
    ("a.csv", "text,lbl\nhi,1\n", r"a.csv, line 1: header has no column \['label'\]"),
    ("a.csv", "text,label\nhi,1\nshort\n", r"a.csv, line 3: 'label' is missing"),
    ("a.csv", "text,label\nhi,1\nhi,maybe\n", r"a.csv, line 3: label 'label' is 'maybe'"),
    ("a.csv", "text,label\nhi,2\n", r"line 2: label 'label' is '2'"),
    # Lines count as written: quoted line breaks (\r\n, \r, \n) and blank lines included.
    ("a.csv", 'text,label\n"two\r\nlines\rthree",1\n\nbad,x\n', r"a.csv, line 6: label"),
    ("a.csv", "", r"a.csv: no examples"),
    ("a.csv", "text,label\n", r"a.csv: no examples"),
    ("a.jsonl", "\n", r"a.jsonl: no examples"),
    ("a.jsonl", '{"text": "a", "label": 1}\n\n{"label": 0}\n', r"a.jsonl, line 3: 'text'"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b"', r"a.jsonl, line 2: invalid JSON"),
    ("a.jsonl", '["text", 1]\n', r"a.jsonl, line 1: expected a JSON object"),
    ("a.jsonl", '{"text": 5, "label": 1}\n', r"line 1: 'text' must be a string"),
    ("a.jsonl", '{"text": "a", "label": null}\n', r"line 1: 'label' is missing or null"),
    ("a.csv", "label,text\n1,hello\n0\n", r"a.csv, line 3: 'text' is missing or null"),
    ("a.txt", "text,label\n", r"unknown format '.txt'"),
])
def test_file_errors_name_file_and_line(tmp_path, filename, content, message):
  path = utils.write_file(tmp_path / filename, content)
  with pytest.raises(ValueError, match=message):
    toxicity.register_file_task(path)


def test_file_task_missing_path_and_too_few_examples(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    toxicity.register_file_task(str(tmp_path / "nope.csv"))
  train = utils.write_file(tmp_path / "train.csv", _csv_rows(50))
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    toxicity.register_file_task(train, test_path=str(tmp_path / "nope.jsonl"))
  small = utils.write_file(tmp_path / "small.csv", _csv_rows(5))
  with pytest.raises(ValueError, match="leaves none"):
    toxicity.register_file_task(small)
  with pytest.raises(ValueError, match="validation_fraction"):
    toxicity.register_file_task(train, validation_fraction=0.6)


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8], ids=["plain", "utf8_bom"])
@pytest.mark.parametrize("extension", ["csv", "jsonl"])
def test_invalid_utf8_reads_as_replacement_or_names_the_line(tmp_path, extension, bom,
                                                             caplog):
  def row(text, label):
    return (f"{text},{label}\n" if extension == "csv"
            else f'{{"text": "{text}", "label": {label}}}\n').encode("utf-8", "surrogateescape")

  header = b"text,label\n" if extension == "csv" else b""
  # "\udce9" encodes (surrogateescape) to the lone byte 0xe9: a Latin-1 "é".
  # Excel's "CSV UTF-8" starts with a BOM; the column still counts the line's bytes.
  data = bom + header + row("fine", 1) + row("also fine", 0) + row("caf\udce9 bad", 1)
  path = utils.write_file(tmp_path / f"mixed.{extension}", data)
  examples = user_files.read_labelled_file(path)
  assert examples[-1] == ("caf\ufffd bad", (1,))
  where = ("mixed.csv, line 4, column 4" if extension == "csv"
           else "mixed.jsonl, line 3, column 14")
  assert f"{where}: invalid UTF-8 byte 0xe9" in caplog.text
  with pytest.raises(ValueError, match=f"{where}: invalid UTF-8 byte 0xe9"):
    user_files.read_labelled_file(path, invalid_utf8="error")
  with pytest.raises(ValueError, match="invalid_utf8 must be one of"):
    user_files.read_labelled_file(path, invalid_utf8="ignore")


def test_cp1252_reads_a_latin1_file_and_keeps_valid_utf8_around_it(tmp_path, caplog):
  # A Windows / older Excel export: é as the lone byte 0xe9, € as 0x80; 0x81 is unassigned
  # in Windows-1252. The last row is valid UTF-8 and stays as written.
  data = ("text,label\n".encode() + "caf\u00e9 \u20ac5,1\n".encode("cp1252")
          + b"odd \x81,0\n" + "caf\u00e9 \U0001f600,0\n".encode())
  path = utils.write_file(tmp_path / "latin1.csv", data)
  assert user_files.read_labelled_file(path, invalid_utf8="cp1252") == [
      ("caf\u00e9 \u20ac5", (1,)), ("odd \x81", (0,)), ("caf\u00e9 \U0001f600", (0,))]
  assert ("latin1.csv, line 2, column 4: invalid UTF-8 byte 0xe9 (and on 1 more lines: 3); "
          "every invalid byte reads as its Windows-1252 character") in caplog.text
  assert user_files.read_labelled_file(path)[0] == ("caf\ufffd \ufffd5", (1,))
  assert "Windows-1252 reads right with invalid_utf8='cp1252'" in caplog.text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("extension", ["csv", "jsonl"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_read_as_utf8(tmp_path, encoding,
                                                                   extension):
  # Excel's "Unicode text" and Windows Notepad write UTF-16 with a byte-order mark.
  text = ("text,label\r\n\"caf\u00e9, \U0001f600\",1\r\nfine,0\r\n" if extension == "csv"
          else '{"text": "caf\u00e9, \U0001f600", "label": 1}\n{"text": "fine", "label": 0}\n')
  bom = {"utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")  # The others write their own.
  path = utils.write_file(tmp_path / f"wide.{extension}", bom + text.encode(encoding))
  assert user_files.read_labelled_file(path) == [("caf\u00e9, \U0001f600", (1,)), ("fine", (0,))]
  # A stray last byte (half a character) is an error naming the file under "error".
  cut = utils.write_file(tmp_path / f"cut.{extension}", bom + text.encode(encoding) + b"\x00")
  with pytest.raises(ValueError, match=f"cut.{extension}: invalid UTF-"):
    user_files.read_labelled_file(cut, invalid_utf8="error")


def test_json_files_are_json_lines_or_an_array_and_errors_name_the_line(tmp_path):
  rows = [{"text": "you idiot", "label": 1}, {"text": "nice day", "label": 0}]
  expected = [("you idiot", (1,)), ("nice day", (0,))]
  # Hugging Face's Dataset.to_json writes JSON Lines; pandas' to_json(orient="records") and
  # json.dump an array.
  lines = utils.write_file(tmp_path / "lines.json", "\n".join(map(json.dumps, rows)) + "\n")
  array = utils.write_file(tmp_path / "array.json", json.dumps(rows, indent=2))
  assert user_files.read_labelled_file(lines) == user_files.read_labelled_file(array) == expected
  assert [line for line, _ in user_files.read_records(array, ())] == [2, 6]
  for name, data, error in [
      ("bad.json", json.dumps(rows, indent=2).replace('"label": 0', '"label": 0,,'),
       "bad.json, line 8: invalid JSON"),
      ("number.json", '[{"text": "a", "label": 1},\n 7]',
       "number.json, line 2: expected a JSON object"),
      ("comma.json", '[{"text": "a", "label": 1}\n {"text": "b"}]',
       "comma.json, line 2: expected ','"),
      ("trailing.json", json.dumps(rows) + "\n[]", "trailing.json, line 2: text after"),
      ("empty.json", " [ ]\n", "empty.json: no examples")]:
    with pytest.raises(ValueError, match=error):
      user_files.read_labelled_file(utils.write_file(tmp_path / name, data))


def test_a_json_table_as_pandas_writes_it_reads_by_row(tmp_path, caplog):
  texts, labels = ["you idiot", "nice day", "go away"], [1, 0, 1]
  expected = [(text, (label,)) for text, label in zip(texts, labels)]
  index = [str(i) for i in range(3)]
  layouts = {  # DataFrame.to_json(orient=...): "columns" is its default.
      "columns": {"text": dict(zip(index, texts)), "label": dict(zip(index, labels))},
      "index": {i: {"text": t, "label": l} for i, t, l in zip(index, texts, labels)},
      "split": {"columns": ["text", "label"], "index": [0, 1, 2],
                "data": [list(row) for row in zip(texts, labels)]},
      "table": {"schema": {"fields": [{"name": "index"}, {"name": "text"},
                                      {"name": "label"}]},
                "data": [{"index": i, "text": t, "label": l}
                         for i, t, l in zip(range(3), texts, labels)]},
  }
  for name, table in layouts.items():
    path = utils.write_file(tmp_path / f"{name}.json", json.dumps(table))
    with caplog.at_level(logging.INFO, logger="absl"):
      assert user_files.read_labelled_file(path) == expected, name
    assert "one JSON object holding 3 rows" in caplog.text
  # One line holding one record is JSON Lines still.
  single = utils.write_file(tmp_path / "single.json", json.dumps({"text": "a", "label": 1}))
  assert user_files.read_labelled_file(single) == [("a", (1,))]
  # A null label (pandas' NaN) names its row; a null text reads as the empty text, as the
  # same frame saved as CSV has it. An error never prints a whole column or text.
  layouts["columns"]["label"]["1"] = None
  with pytest.raises(ValueError, match=r"nulls.json, line 2: 'label' is missing or null"):
    user_files.read_labelled_file(utils.write_file(tmp_path / "nulls.json",
                                                   json.dumps(layouts["columns"])))
  layouts["columns"]["label"]["1"], layouts["columns"]["text"]["1"] = 0, None
  with caplog.at_level(logging.WARNING, logger="absl"):
    assert user_files.read_labelled_file(utils.write_file(
        tmp_path / "null_text.json", json.dumps(layouts["columns"])))[1] == ("", (0,))
  assert "null_text.json: 1 null 'text' value(s) (line(s) 2) read as empty texts" in caplog.text
  wrong = {"text": dict(zip(index, texts)), "label": dict(zip(index, ["x" * 5000] * 3))}
  with pytest.raises(ValueError) as error:
    user_files.read_labelled_file(utils.write_file(tmp_path / "wrong.json", json.dumps(wrong)))
  assert "line 1: label 'label' is 'xxx" in str(error.value)
  assert "(5,002 characters)" in str(error.value) and len(str(error.value)) < 800
  assert "positive_label=CLASS" in str(error.value)


def test_dotted_keys_name_fields_of_nested_objects(tmp_path):
  rows = [{"post": {"body": "you idiot"}, "labels": {"toxic": 1, "scores": {"insult": 0.9}}},
          {"post": {"body": "nice day"}, "labels": {"toxic": 0, "scores": {"insult": 0.1}}}]
  keys = {"text_key": "post.body", "label_keys": ("labels.toxic", "labels.scores.insult")}
  expected = [("you idiot", (1, 1)), ("nice day", (0, 0))]
  lines = utils.write_file(tmp_path / "nested.jsonl", "\n".join(map(json.dumps, rows)))
  assert user_files.read_labelled_file(lines, **keys) == expected
  import pyarrow  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  parquet.write_table(pyarrow.Table.from_pylist(rows), str(tmp_path / "nested.parquet"))
  assert user_files.read_labelled_file(str(tmp_path / "nested.parquet"), **keys) == expected
  with pytest.raises(ValueError, match=r"nested.jsonl, line 1: 'labels.severe' is missing"):
    user_files.read_labelled_file(lines, "post.body", ("labels.severe",))


def test_parquet_files_read_by_column_and_errors_name_the_row(tmp_path):
  import pyarrow  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  # As the Hugging Face Hub stores a dataset: typed columns, other columns beside them.
  table = pyarrow.table({"id": [7, 8, 9], "Text": ["you idiot", "nice day", "caf\u00e9"],
                         "label": [1, 0, None]})
  parquet.write_table(table.slice(0, 2), tmp_path / "train.parquet")
  assert user_files.read_labelled_file(str(tmp_path / "train.parquet")) == [
      ("you idiot", (1,)), ("nice day", (0,))]
  parquet.write_table(table, tmp_path / "null.parquet")
  with pytest.raises(ValueError, match=r"null.parquet, line 3: 'label' is missing or null"):
    user_files.read_labelled_file(str(tmp_path / "null.parquet"))
  assert user_files.read_texts(str(tmp_path / "null.parquet")) == [
      "you idiot", "nice day", "caf\u00e9"]
  # A null text is an empty one; the row is kept, so classify's outputs stay aligned.
  parquet.write_table(pyarrow.table({"text": ["a", None], "label": [1, 0]}),
                      tmp_path / "null_text.parquet")
  assert user_files.read_texts(str(tmp_path / "null_text.parquet")) == ["a", ""]
  with pytest.raises(ValueError, match=r"null.parquet has no column \['comment'\]; columns: "):
    user_files.read_texts(str(tmp_path / "null.parquet"), text_key="comment")
  broken = utils.write_file(tmp_path / "broken.parquet", b"PAR1 not really")
  with pytest.raises(ValueError, match="broken.parquet: not a readable Parquet file"):
    user_files.read_texts(broken)
  sheet = utils.write_file(tmp_path / "train.xlsx", b"PK")
  with pytest.raises(ValueError, match=r"unknown format '.xlsx'.*Save the sheet as CSV UTF-8"):
    user_files.read_texts(sheet)


def test_a_csv_without_a_header_line_gets_the_line_to_add(tmp_path):
  # The SMS spam collection: label, tab, text; no header.
  sms = utils.write_file(tmp_path / "sms.tsv", "ham\tGo until jurong point, crazy..\n"
                         "spam\tFree entry in 2 a wkly comp\n")
  with pytest.raises(ValueError, match=r"sms.tsv, line 1: header has no column .*"
                     r"if the file has no header line, add one .* e.g. 'label\\ttext'"):
    user_files.read_labelled_file(sms)
  numbers = utils.write_file(tmp_path / "numbers.csv", "you idiot,1\nnice day,0\n")
  with pytest.raises(ValueError, match=r"add one naming its columns, e.g. 'text,label'"):
    user_files.read_labelled_file(numbers)
  # A header that names other columns is a header: no such hint.
  named = utils.write_file(tmp_path / "named.csv", "comment,toxic\nyou idiot,1\n")
  with pytest.raises(ValueError) as error:
    user_files.read_labelled_file(named)
  assert "no column ['text', 'label']" in str(error.value)
  assert "row of data" not in str(error.value)
  assert "(here probably --config.data.text_key=comment --config.data.label_keys=toxic)" in (
      str(error.value))


def test_missing_columns_get_the_flags_that_probably_name_them(tmp_path):
  """Jigsaw's layout: an id, the text, several 0/1 label columns."""
  rows = [("a1", "you are an idiot and a moron", 1, 1, 0.0), ("b2", "have a nice day", 0, 0, 0.5)]
  jigsaw = utils.write_file(tmp_path / "jigsaw.csv", "id,comment_text,toxic,insult,score\n" +
                            "".join(",".join(map(str, row)) + "\n" for row in rows))
  with pytest.raises(ValueError, match=re.escape(
      "Name yours with text_key / label_keys (here probably --config.data.text_key="
      "comment_text --config.data.label_keys=toxic,insult,score).")):
    user_files.read_labelled_file(jigsaw)
  with pytest.raises(ValueError, match=re.escape("(here probably --text_key=comment_text).")):
    user_files.read_texts(jigsaw)
  import pyarrow  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  parquet.write_table(pyarrow.table({"id": [7, 8], "body": ["you idiot", "nice day"],
                                     "labels": ["toxic", "clean"]}), tmp_path / "t.parquet")
  # No column of labels: the generic example.
  with pytest.raises(ValueError, match=re.escape("(e.g. --config.data.text_key=comment")):
    user_files.read_labelled_file(str(tmp_path / "t.parquet"))
  with pytest.raises(ValueError, match=re.escape("(here probably --text_key=body)")):
    user_files.read_texts(str(tmp_path / "t.parquet"))


def test_csv_header_names_are_stripped(tmp_path):
  path = utils.write_file(tmp_path / "spaced.csv", "text , label\nyou idiot, 1\nnice day, 0\n")
  assert user_files.read_labelled_file(path) == [("you idiot", (1,)), ("nice day", (0,))]


def test_csv_columns_match_the_keys_in_any_case_unless_one_matches_exactly(tmp_path):
  excel = utils.write_file(tmp_path / "excel.csv", "Text,LABEL\nyou idiot,1\nnice day,0\n")
  assert user_files.read_labelled_file(excel) == [("you idiot", (1,)), ("nice day", (0,))]
  both = utils.write_file(tmp_path / "both.csv", "Text,text,label\nA,you idiot,1\nB,nice day,0\n")
  assert user_files.read_labelled_file(both) == [("you idiot", (1,)), ("nice day", (0,))]
  two = utils.write_file(tmp_path / "two.csv", "Text,TEXT,label\nA,you idiot,1\n")
  with pytest.raises(ValueError, match=r"two.csv, line 1: header has no column \['text'\]"):
    user_files.read_labelled_file(two)


def test_labels_that_name_classes_need_the_positive_one_named(tmp_path, caplog):
  # The SMS spam collection's layout: class names, then the text.
  rows = [("ham", "see you at 5"), ("spam", "WIN a prize now"), ("ham", "ok thanks"),
          ("spam", "free entry, txt WIN")] * 5
  path = utils.write_file(tmp_path / "spam.csv", "v1,v2\n" + "".join(
      f"{name},{text} {i}\n" for i, (name, text) in enumerate(rows)))
  with pytest.raises(ValueError, match=(
      r"spam.csv, line 2: label 'v1' is 'ham'; expected 0/1, .*\. The column holds "
      r"'ham' \(10 rows\), 'spam' \(10 rows\)\. .*--config.data.positive_label=spam")):
    user_files.read_labelled_file(path, text_key="v2", label_keys=("v1",))
  with caplog.at_level(logging.INFO, logger="absl"):  # Whatever verbosity a test left.
    examples = user_files.read_labelled_file(path, text_key="v2", label_keys=("v1",),
                                           positive_label="spam")
  assert examples[:2] == [("see you at 5 0", (0,)), ("WIN a prize now 1", (1,))]
  assert "label 'v1' reads as 1 where it is 'spam' (data.positive_label), else 0" in caplog.text
  with pytest.raises(ValueError, match="label 'v1' is 0 in every training example"):
    user_files.read_file_splits(path, text_key="v2", label_keys=("v1",), positive_label="Spam")
  assert "no label 'v1' is 'Spam' (data.positive_label)" in caplog.text
  # -1 / 1 are classes too; the error names the first line that is not a label.
  signs = utils.write_file(tmp_path / "signs.csv", "text,label\na,1\nb,-1\nc,-1\n")
  with pytest.raises(ValueError, match=r"signs.csv, line 3: label 'label' is '-1'; .* The "
                                       r"column holds '-1' \(2 rows\), '1' \(1 row\)\."):
    user_files.read_labelled_file(signs)
  # A stray value among labels (under CLASS_COLUMN_SHARE) is reported by its line alone.
  with pytest.raises(ValueError, match=r"mixed.csv, line 22: label 'label' is 'ham'; "
                                       r"expected 0/1, a probability in \[0, 1\] or "
                                       r"true/false\.$"):
    user_files.read_labelled_file(
        utils.write_file(tmp_path / "mixed.csv", "text,label\n" + "a,1\n" * 20 + "b,ham\n"))
  # Through the config, as the CLI reads it; the flag names a different task.
  data = byteqrnn_toxicity.get_config().data
  data.update(train_path=path, text_key="v2", label_keys=("v1",), positive_label="spam")
  task = input_pipeline.resolve_task(data)
  data.positive_label = "ham"
  assert input_pipeline.resolve_task(data) != task
  # A run's config.json from before the field: the files read as they did then.
  del data.positive_label
  data.label_keys = ("label",)
  data.update(train_path=utils.write_file(tmp_path / "old.csv", _csv_rows(50)), text_key="text")
  assert toxicity.label_names(input_pipeline.resolve_task(data)) == ("label",)


def test_csv_rows_of_bare_delimiters_are_skipped_and_logged(tmp_path, caplog):
  """Spreadsheets export blank rows as ",,"; a row with a text but no label still fails."""
  path = utils.write_file(tmp_path / "sheet.csv",
                          "text,label\nyou idiot,1\n,,,\nnice day,0\n , \n,\n")
  with caplog.at_level(logging.WARNING):
    assert user_files.read_labelled_file(path) == [("you idiot", (1,)), ("nice day", (0,))]
  assert "sheet.csv: skipped 3 rows with every field empty (lines 3, 5, 6)" in caplog.text
  user_files.read_labelled_file(
      utils.write_file(tmp_path / "one.csv", "text,label\n,\nnice day,0\n"))
  assert "one.csv: skipped 1 row with every field empty (line 2)" in caplog.text
  with pytest.raises(ValueError, match=r"half.csv, line 3: label 'label' is ''"):
    user_files.read_labelled_file(utils.write_file(tmp_path / "half.csv", "text,label\na,1\nb,\n"))


def test_a_csv_header_naming_a_needed_column_twice_is_an_error(tmp_path):
  path = utils.write_file(tmp_path / "twice.csv", "text,label,label\nyou idiot,1,0\nnice day,0,1\n")
  with pytest.raises(ValueError, match=r"twice.csv, line 1: header names column \['label'\] "
                                       "more than once"):
    user_files.read_labelled_file(path)
  assert user_files.read_texts(path) == ["you idiot", "nice day"]  # Labels unused: no clash.


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress),
                                              (".xz", lzma.compress)])
def test_compressed_files_read_as_their_inner_format(tmp_path, suffix, compress):
  rows = "text;label\nyou idiot;1\nnice day;0\n"
  path = utils.write_file(tmp_path / f"train.csv{suffix}", compress(rows.encode()))
  assert user_files.read_labelled_file(path) == [("you idiot", (1,)), ("nice day", (0,))]
  jsonl = utils.write_file(tmp_path / f"t.JSONL{suffix}", compress(b'{"text": "a", "label": 1}\n'))
  assert user_files.read_labelled_file(jsonl) == [("a", (1,))]
  broken = utils.write_file(tmp_path / f"broken.csv{suffix}", compress(rows.encode())[:-8])
  with pytest.raises(ValueError, match=f"broken.csv{suffix}: cannot decompress it"):
    user_files.read_labelled_file(broken)
  with pytest.raises(ValueError, match=r"a.txt.gz: unknown format '.gz'; name it \*.csv"):
    user_files.read_labelled_file(utils.write_file(tmp_path / "a.txt.gz", gzip.compress(b"x")))


@pytest.mark.parametrize("name, delimiter", [("a.csv", ","), ("a.tsv", "\t")])
def test_a_stray_quote_that_swallows_rows_is_an_error_naming_the_lines(tmp_path, name,
                                                                        delimiter):
  d = delimiter
  rows = [f"text{d}label", f'"Hi there{d}1', f"normal text{d}0", f'another "quoted" word{d}1',
          f"last one{d}0"]
  path = utils.write_file(tmp_path / name, "\n".join(rows) + "\n")
  with pytest.raises(ValueError, match=rf"{name}, lines 2-4: a field opens with a quote .* "
                                       r"\(e.g. 'Hi there"):
    user_files.read_labelled_file(path)
  unclosed = utils.write_file(tmp_path / f"unclosed{name}", "\n".join(rows[:3] + rows[4:]) + "\n")
  with pytest.raises(ValueError, match=r"lines 2-4: a field opens with a quote and runs to"):
    user_files.read_labelled_file(unclosed)
  # Multi-line texts quoted as CSV quotes them read as they are, even with lines that would
  # parse as rows; so does a quote that opens a one-line text (the csv module drops it).
  texts = ["Two paragraphs.\n\n1,000 edits\nTrue, it works", 'He said "no"', "plain"]
  with open(tmp_path / f"fine{name}", "w", newline="", encoding="utf-8") as f:
    csv.writer(f, delimiter=delimiter).writerows(
        [["label", "text"], *[[i % 2, text] for i, text in enumerate(texts)]])
  with open(tmp_path / f"fine{name}", "a", encoding="utf-8") as f:
    f.write(f'1{d}"Hello" is what she said\n')
  assert user_files.read_labelled_file(str(tmp_path / f"fine{name}")) == [
      (texts[0], (0,)), (texts[1], (1,)), (texts[2], (0,)), ("Hello is what she said", (1,))]


def test_utf16_without_a_byte_order_mark_is_an_error_naming_the_encoding(tmp_path):
  path = utils.write_file(tmp_path / "wide.csv", "text,label\nfine,0\nbad,1\n".encode("utf-16-le"))
  with pytest.raises(ValueError, match="wide.csv, line 1: .* looks UTF-16"):
    user_files.read_labelled_file(path)


def test_csv_with_long_fields_and_nul_bytes_reads_and_csv_errors_name_the_line(tmp_path):
  long_text = "word " * 60_000  # 300 kB, over the csv module's default field limit.
  path = utils.write_file(tmp_path / "long.csv", f"text,label\nshort\0,0\n{long_text},1\n")
  assert user_files.read_labelled_file(path) == [("short\0", (0,)), (long_text, (1,))]
  limit = csv.field_size_limit(1000)  # Whatever the csv module rejects is named by line.
  try:
    with pytest.raises(ValueError, match=r"long.csv, line 3: unreadable CSV \(field larger"):
      user_files.read_labelled_file(path)
  finally:
    csv.field_size_limit(limit)


def test_duplicate_texts_in_a_file_are_kept(tmp_path):
  path = utils.write_file(tmp_path / "dup.csv", "text,label\nsame,1\nsame,1\nsame,0\n")
  assert user_files.read_labelled_file(path) == [("same", (1,)), ("same", (1,)), ("same", (0,))]


def test_copies_of_a_text_land_in_one_split(tmp_path, caplog):
  """Repeated texts must not straddle train and a carved held-out split (a leak)."""
  rows = [f"text {i},{i % 2}\n" for i in range(40)]
  rows += [f"text {i},{i % 2}\n" for i in range(0, 40, 2)] * 3  # 20 texts, 4 copies each.
  path = utils.write_file(tmp_path / "dup.csv", "text,label\n" + "".join(rows))
  splits = user_files.read_file_splits(path, seed=3)
  texts = {split: [text for text, _ in examples] for split, examples in splits.items()}
  assert sum(map(len, texts.values())) == 100
  assert not set(texts["train"]) & (set(texts["validation"]) | set(texts["test"]))
  assert not set(texts["validation"]) & set(texts["test"])
  assert len(set(texts["validation"])) == len(set(texts["test"])) == 4  # 10% of 40 texts.
  for split in fortunes.SPLITS:  # Each text comes with all its copies.
    assert all(texts[split].count(t) == (4 if int(t.split()[1]) % 2 == 0 else 1)
               for t in texts[split])
  test = utils.write_file(tmp_path / "test.csv", "text,label\ntext 0,0\nnew,1\n")
  with caplog.at_level(logging.WARNING):
    user_files.read_file_splits(path, test_path=test)
  assert "1 of the 2 examples of" in caplog.text and "also in" in caplog.text


def test_a_rare_label_reaches_both_carved_splits(tmp_path, caplog):
  rows = "".join(f"text {i},{int(i % 50 == 7)}\n" for i in range(300))  # 6 positives.
  path = utils.write_file(tmp_path / "rare.csv", "text,label\n" + rows)
  splits = user_files.read_file_splits(path, seed=0)
  assert [sum(label for _, (label,) in splits[s]) for s in fortunes.SPLITS] == [4, 1, 1]
  assert [len(splits[s]) for s in fortunes.SPLITS] == [240, 30, 30]
  assert user_files.read_file_splits(path, seed=0) == splits
  assert user_files.read_file_splits(path, seed=1)["test"] != splits["test"]
  with caplog.at_level(logging.WARNING):  # 2 positives: held-out splits get none.
    user_files.read_file_splits(utils.write_file(tmp_path / "two.csv", "text,label\n" + "".join(
        f"t{i},{int(i < 2)}\n" for i in range(40))))
  assert "The validation split (4 examples, carved from" in caplog.text
  assert "ROC AUC for 'label' is undefined" in caplog.text


def test_one_class_training_file_is_an_error(tmp_path):
  path = utils.write_file(tmp_path / "zeros.csv",
                          "text,label\n" + "".join(f"t{i},0\n" for i in range(40)))
  with pytest.raises(ValueError, match=r"zeros.csv: label 'label' is 0 in every training"):
    user_files.read_file_splits(path)


@pytest.mark.parametrize("name, delimiter", [("a.csv", ";"), ("a.csv", "\t"), ("a.csv", "|"),
                                             ("a.tsv", "\t")])
def test_delimiters_read_off_the_header_or_extension(tmp_path, name, delimiter):
  rows = [["text", "label"], ["one, two; three", "1"], ["four|five\tsix", "0"]]
  with open(tmp_path / name, "w", newline="", encoding="utf-8") as f:
    csv.writer(f, delimiter=delimiter).writerows(rows)
  assert user_files.read_labelled_file(str(tmp_path / name)) == [
      ("one, two; three", (1,)), ("four|five\tsix", (0,))]


def test_label_keys_may_be_comma_separated(tmp_path):
  path = utils.write_file(tmp_path / "two.csv", "comment,a,b\n" + "".join(
      f"t{i},{i % 2},{int(i % 3 == 0)}\n" for i in range(40)))
  data = byteqrnn_toxicity.get_config().data
  data.update(train_path=path, text_key="comment", label_keys=("a, b",))
  assert input_pipeline.label_keys(data) == ("a", "b")
  assert toxicity.label_names(input_pipeline.resolve_task(data)) == ("a", "b")
  data.label_keys = ("x",)
  with pytest.raises(ValueError, match=r"no column \['x'\].*--config.data.label_keys=a,b\)"):
    input_pipeline.resolve_task(data)
