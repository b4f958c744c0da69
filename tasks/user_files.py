"""Reading a user's labelled text files: CSV / TSV / JSONL / JSON / Parquet, compressed or
not, in a bucket or on disk, as (text, labels) examples and train / validation / test
splits.

Real files are messy, so every problem is either read through, with a warning that names
the file and lines, or an error that names them: a byte that is not UTF-8 (`decode_text`),
UTF-16 / UTF-32 files, spreadsheet headers and blank rows, a stray quote that would merge
rows, labels that are class names (`positive_label`), repeated texts (every copy lands in
one split: `read_file_splits`). `tasks.toxicity.register_file_task` makes a SeqIO task of
the splits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import bz2
import codecs
import collections
import csv
import functools
import gzip
import io
import itertools
import json
import lzma
import math
import os
import re
import shlex

from absl import logging
from etils import epath
import numpy as np

from byteflax import cli
from tasks import fortunes

Example = tuple[str, tuple[int, ...]]  # (text, one 0/1 per label key)
# A probability label (e.g. Civil Comments' fraction of raters) reads as 1 at or above this:
# that dataset's own convention calls a comment toxic when at least half the raters did.
LABEL_THRESHOLD = 0.5
FILE_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
# Spreadsheets are not read: their rows reach us as CSV.
_SPREADSHEETS = (".xlsx", ".xls", ".xlsm", ".ods", ".numbers")
# A compressed file is read through the standard library: train.csv.gz is a CSV file.
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# A .csv file's delimiter is read off its header line: Excel writes ";" in many locales.
CSV_DELIMITERS = ",;\t|"
# The csv module refuses fields over 128 KiB by default; real comments can be longer (they
# are cut to data.max_length bytes later), so any field that fits in memory is read.
csv.field_size_limit(2**31 - 1)
# What reading a user file does with a byte that is not UTF-8: read it as U+FFFD, stop, or
# read it as its Windows-1252 character (a file saved by older Windows / Excel in Latin-1).
INVALID_UTF8 = ("replace", "error", "cp1252")


def _cp1252_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
  """A codecs error handler: the undecodable bytes as Windows-1252 characters (its five
  unassigned bytes as the Latin-1 control characters they are in Unicode)."""
  def character(byte: int) -> str:
    try:
      return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
      return chr(byte)
  return "".join(map(character, error.object[error.start:error.end])), error.end


codecs.register_error("byteflax_cp1252", _cp1252_bytes)


class DataFileError(cli.InputError):
  """A data file that cannot be read as it is: the message names the file, the line where
  there is one, and what to change (the CLIs print it without a traceback)."""


def _shown(value: object, limit: int = 100) -> str:
  """repr(value) for an error message, cut after `limit` characters (a whole text or a
  column of a JSON table would bury the message)."""
  shown = repr(value)
  return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown):,} characters)"


def _label(value: object) -> int | None:
  """0/1 from 0/1, a probability (>= 0.5 is 1), a bool, or "true"/"false"; else None."""
  if isinstance(value, str):
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
      return int(lowered == "true")
  if isinstance(value, (bool, int, float, str)):
    try:
      number = float(value)
    except ValueError:
      number = math.nan
    if 0.0 <= number <= 1.0:
      return int(number >= LABEL_THRESHOLD)
  return None


def _label_name(value: object) -> str:
  """A label field as the name `positive_label` is compared with."""
  return value.strip() if isinstance(value, str) else json.dumps(value)


def _parse_label(value: object, path: str, line: int, key: str,
                 positive_label: str | None) -> int:
  """`_label` of a record's field, or whether it is `positive_label` when that is set;
  raises naming the line if it is not a label."""
  if positive_label is not None:
    return int(_label_name(value) == positive_label)
  label = _label(value)
  if label is not None:
    return label
  raise DataFileError(
      f"{path}, line {line}: label {key!r} is {_shown(value)}; expected 0/1, a probability "
      f"in [0, 1] or true/false.")


def _example(record: Mapping[str, object], path: str, line: int, text_key: str,
             label_keys: Sequence[str], positive_label: str | None = None) -> Example:
  for key in (text_key, *label_keys):
    if record.get(key) is None:
      raise DataFileError(f"{path}, line {line}: {key!r} is missing or null; fields: "
                       f"{_shown([k for k in record if k is not None], 300)}.")
  text = record[text_key]
  if not isinstance(text, str):
    raise DataFileError(f"{path}, line {line}: {text_key!r} must be a string, got "
                     f"{_shown(text)}.")
  return text, tuple(_parse_label(record[key], path, line, key, positive_label)
                     for key in label_keys)


# A label column in which more than this share of the values is not a label (`_label`)
# holds classes (spam / ham, -1 / 1, 0 / 1 / 2), not a few typos.
CLASS_COLUMN_SHARE = 0.05


def _check_label_classes(records: Sequence[tuple[int, Mapping[str, object]]], path: str,
                       key: str, positive_label: str | None) -> None:
  """Says how a label column of classes (spam / ham, -1 / 1) reads.

  Without `positive_label`, a column whose values are not labels (`_label`) in
  over `CLASS_COLUMN_SHARE` of the rows is an error that lists the values and says how
  to name the class to detect (fewer such values are reported one by one, by
  `_parse_label`); with it, the log says which value reads as 1 and that the others read
  as 0, a warning if none is `positive_label`.
  """
  rows = [(line, record[key]) for line, record in records if record.get(key) is not None]
  others = [(line, value) for line, value in rows if _label(value) is None]
  if positive_label is None and len(others) <= CLASS_COLUMN_SHARE * len(rows):
    return
  names = collections.Counter(_label_name(value) for _, value in rows).most_common()
  listed = ", ".join(f"{_shown(name)} ({count:,} {'row' if count == 1 else 'rows'})"
                     for name, count in names[:10]) + (", ..." if len(names) > 10 else "")
  if positive_label is None:
    line, value = others[0]
    example = names[-1][0] if len(names[-1][0]) <= 50 else "CLASS"
    raise DataFileError(
        f"{path}, line {line}: label {key!r} is {_shown(value)}; expected 0/1, a "
        f"probability in [0, 1] or true/false. The column holds {listed}. If these are "
        f"classes, name the one to detect, e.g. --config.data.positive_label="
        f"{shlex.quote(example)} (every other value reads as 0).")
  if positive_label in dict(names):
    logging.info("%s: label %r reads as 1 where it is %r (data.positive_label), else 0: "
                 "%s.", path, key, positive_label, listed)
  else:
    logging.warning("%s: no label %r is %r (data.positive_label): every example reads as "
                    "0. Its values: %s.", path, key, positive_label, listed)


def _decode(path: str, invalid_utf8: str) -> str:
  """The file's text (`decode_text`), after a check for UTF-16 without its BOM."""
  data = read_bytes(path)
  first_line = data[:data.find(b"\n")] if b"\n" in data else data
  if _bom_encoding(data) is None and first_line.count(0) * 3 > len(first_line):
    # UTF-8 reads such a file without complaint, and the header then matches no column.
    raise DataFileError(
        f"{path}, line 1: {first_line.count(0)} of its {len(first_line)} bytes are NUL: the "
        "file looks UTF-16 or UTF-32 without a byte-order mark. Re-encode it as UTF-8 (e.g. "
        "iconv -f UTF-16LE -t UTF-8).")
  return decode_text(data, path, invalid_utf8)


def read_bytes(path: str) -> bytes:
  """The contents of `path` (on local disk or in a bucket, gs://...), decompressed if its
  name ends in one of `COMPRESSIONS`."""
  decompress = COMPRESSIONS.get(os.path.splitext(path)[1].lower())
  with epath.Path(path).open("rb") as f:
    if decompress is None:
      return f.read()
    try:
      with decompress(f, "rb") as decompressed:
        return decompressed.read()
    except (EOFError, OSError, lzma.LZMAError) as error:
      raise DataFileError(
          f"{path}: cannot decompress it ({type(error).__name__}: {error}).") from error


def file_format(path: str) -> str | None:
  """The format of a data file, one of `FILE_FORMATS`, from its name, past a compression
  suffix ("train.jsonl.gz" is ".jsonl"); None for any other name."""
  root, extension = os.path.splitext(path.lower())
  if extension in COMPRESSIONS:
    extension = os.path.splitext(root)[1]
  return extension if extension in FILE_FORMATS else None


def _bom_encoding(data: bytes) -> str | None:
  """"utf-32" / "utf-16" if `data` starts with that encoding's byte-order mark, else None.
  UTF-32's little-endian mark starts with UTF-16's, so it is tried first."""
  for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
    if data.startswith(bom):
      return encoding
  return None


def decode_text(data: bytes, source: str, invalid_utf8: str = "replace") -> str:
  """`data` as text: UTF-8 (optional BOM), or UTF-16 / UTF-32 when it starts with their
  byte-order mark (Excel's "Unicode text", Windows Notepad). A byte sequence that does not
  decode raises ("error") or, with a warning naming `source` (a path, "stdin") and, for
  UTF-8, the lines, reads as U+FFFD ("replace") or, in UTF-8 text, as its Windows-1252
  character ("cp1252"; valid UTF-8 around it is kept)."""
  if invalid_utf8 not in INVALID_UTF8:
    raise ValueError(f"invalid_utf8 must be one of {INVALID_UTF8}, got {invalid_utf8!r}.")
  encoding = _bom_encoding(data)
  if encoding is not None:
    try:
      return data.decode(encoding)
    except UnicodeDecodeError as error:
      where = f"{source}: invalid {encoding.upper()} at byte {error.start} ({error.reason})"
      if invalid_utf8 == "error":
        raise DataFileError(f"{where}. Re-encode the file as UTF-8, or set "
                         "invalid_utf8='replace'.") from error
      logging.warning("%s; the undecodable bytes read as U+FFFD.", where)
      return data.decode(encoding, errors="replace")
  if data.startswith(codecs.BOM_UTF8):  # Positions below count from after the mark.
    data = data[len(codecs.BOM_UTF8):]
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as error:
    line = data.count(b"\n", 0, error.start) + 1
    column = error.start - data.rfind(b"\n", 0, error.start)
    where = f"{source}, line {line}, column {column}: invalid UTF-8 byte 0x{data[error.start]:02x}"
    if invalid_utf8 == "error":
      raise DataFileError(f"{where} ({error.reason}). Re-encode the file as UTF-8 (e.g. iconv "
                       "-f cp1252 -t utf-8), or set invalid_utf8 to 'replace' or "
                       "'cp1252'.") from error
  bad_lines = sorted({number for number, raw in enumerate(data.split(b"\n"), start=1)
                      if not _is_utf8(raw)})
  more = (f" (and on {len(bad_lines) - 1} more lines: {_line_list(bad_lines[1:])})"
          if len(bad_lines) > 1 else "")
  if invalid_utf8 == "cp1252":
    logging.warning("%s%s; every invalid byte reads as its Windows-1252 character "
                    "(invalid_utf8='cp1252').", where, more)
    return data.decode("utf-8", errors="byteflax_cp1252")
  logging.warning("%s%s; every invalid byte reads as U+FFFD (invalid_utf8='replace'; a "
                  "file saved as Latin-1 / Windows-1252 reads right with invalid_utf8="
                  "'cp1252').", where, more)
  return data.decode("utf-8", errors="replace")


def _line_list(lines: Sequence[int], shown: int = 10) -> str:
  """"3, 7, 12" for a log: the first `shown` line numbers, then "..." if there are more."""
  return ", ".join(map(str, lines[:shown])) + (", ..." if len(lines) > shown else "")


def _is_utf8(data: bytes) -> bool:
  try:
    data.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return True


def read_records(path: str, required_keys: Sequence[str], invalid_utf8: str = "replace",
                 every_column: bool = False) -> Iterator[tuple[int, Mapping[str, object]]]:
  """(line number, record) of each record of a CSV file with a header row, a JSONL file or
  a Parquet file (whose rows count as its lines, from 1).

  The format comes from the extension (past a `COMPRESSIONS` suffix, e.g. train.csv.gz,
  which is decompressed): `.csv` (the delimiter, one of `CSV_DELIMITERS`,
  is the one the header line uses; quoting as the csv module reads it by default), `.tsv`
  (tab-separated), `.jsonl` (one JSON object per line; blank lines are skipped), `.json`
  (JSON Lines too, as Hugging Face's `to_json` writes it, one array of objects, or one
  object holding a table as pandas' `to_json` writes it: `_json_table`) or `.parquet`
  (the Hugging Face Hub's format); a key "a.b" that a JSON record or Parquet row lacks
  names field b of its nested object (struct) a. Text
  files are UTF-8 with an optional BOM, or UTF-16 / UTF-32 with one (`decode_text`).
  `invalid_utf8`: "replace" reads each byte that is not valid UTF-8 as U+FFFD and logs a
  warning naming the lines, "cp1252" reads it as its Windows-1252 character (a Latin-1
  file) with the same warning; "error" raises naming the first. A CSV header's column
  that differs from a required key only in case (Text for text) is read as that key (a
  Parquet column too). CSV and JSON records hold every field; a Parquet row holds
  `required_keys` only, unless `every_column`.

  Raises:
    FileNotFoundError: `path` does not exist.
    DataFileError: unknown extension, a CSV header without `required_keys`, or a bad line
      (the message names the line).
  """
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"No such data file: {path!r}.")
  extension = file_format(path)
  if extension is None:
    given = os.path.splitext(path)[1]
    hint = (" Save the sheet as CSV UTF-8." if given.lower() in _SPREADSHEETS else "")
    raise DataFileError(f"{path}: unknown format {given!r}; name it *{', *'.join(FILE_FORMATS)}"
                     f", each optionally compressed ({', '.join(COMPRESSIONS)}).{hint}")
  if extension == ".parquet":
    yield from _parquet_records(path, required_keys, every_column)
    return
  text = _decode(path, invalid_utf8)
  if extension in (".csv", ".tsv"):
    yield from _csv_records(text, path, "\t" if extension == ".tsv" else None, required_keys)
  else:
    for line, record in _json_records(text, path, extension, required_keys):
      yield line, _with_nested_keys(record, required_keys)


def _json_records(text: str, path: str, extension: str, required_keys: Sequence[str]
                  ) -> Iterator[tuple[int, dict[str, object]]]:
  """`read_records` of a .json or .jsonl file: an array, a table or JSON Lines."""
  if extension == ".json" and text.lstrip().startswith("["):
    yield from _json_array_records(text, path)
    return
  table = _json_table(text, required_keys)
  if table is None:
    yield from _json_lines_records(text, path)
    return
  rows, layout = table
  logging.info("%s: one JSON object holding %d rows as %s; rows count as lines.", path,
               len(rows), layout)
  for row_number, row in enumerate(rows, start=1):
    yield row_number, _json_object(row, path, row_number)


def _with_nested_keys(record: dict[str, object], keys: Sequence[str]) -> dict[str, object]:
  """`record` with each of `keys` that it lacks and that is a dotted path through nested
  objects ("labels.toxic" for {"labels": {"toxic": 1}}) set to the value there (None
  where the path breaks off, which the caller reports as missing)."""
  for key in keys:
    if key not in record and "." in key:
      value = record
      for name in key.split("."):
        value = value.get(name) if isinstance(value, dict) else None
      record[key] = value
  return record


def _parquet_records(path: str, required_keys: Sequence[str], every_column: bool
                     ) -> Iterator[tuple[int, dict[str, object]]]:
  """`read_records` of a Parquet file: its rows, numbered from 1, with `required_keys` only
  unless `every_column`."""
  import pyarrow  # pylint: disable=g-import-not-at-top
  from pyarrow import parquet  # pylint: disable=g-import-not-at-top
  try:
    table = parquet.read_table(io.BytesIO(read_bytes(path)))
  except pyarrow.ArrowException as error:
    raise DataFileError(f"{path}: not a readable Parquet file ({error}).") from error
  while not set(required_keys) <= set(table.column_names) and any(
      pyarrow.types.is_struct(column.type) for column in table.schema):
    table = table.flatten()  # A struct column's fields as columns "labels.toxic".
  table = table.rename_columns(_columns(
      table.column_names, required_keys, path, path,
      first_rows=lambda: table.slice(0, _SUGGESTION_ROWS).to_pylist()))
  if not every_column:
    table = table.select(list(dict.fromkeys(required_keys)))
  yield from enumerate(table.to_pylist(), start=1)


def _csv_records(text: str, path: str, delimiter: str | None, required_keys: Sequence[str]
                 ) -> Iterator[tuple[int, dict[str, object]]]:
  """`read_records` of CSV `text` (`delimiter` None: the header line's)."""
  # newline="": the csv module sees line endings (and newlines inside quotes) as written.
  f = io.StringIO(text, newline="")
  delimiter = delimiter or _delimiter(f)
  reader = csv.DictReader(f, delimiter=delimiter)
  try:
    if reader.fieldnames is None:
      raise DataFileError(f"{path}: no examples (empty file).")
    # Hand-written headers often read "text, label".
    fieldnames = [name.strip() for name in reader.fieldnames]

    def first_rows():
      rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
      next(rows)  # The header.
      return [dict(zip(fieldnames, row)) for row in itertools.islice(rows, _SUGGESTION_ROWS)]

    reader.fieldnames = _columns(fieldnames, required_keys, path, f"{path}, line 1: header",
                                 _headerless_hint(reader.fieldnames, required_keys, delimiter),
                                 first_rows)
    repeated = [k for k in required_keys if reader.fieldnames.count(k) > 1]
    if repeated:  # DictReader would silently keep the last of them.
      raise DataFileError(f"{path}, line 1: header names column {repeated} more than once; "
                       f"columns: {reader.fieldnames}. Rename all but one.")
    label_columns = [reader.fieldnames.index(k) for k in required_keys[1:]]
    # The file's lines as the reader counts them, split once a record spans several.
    text_lines = functools.cache(lambda: io.StringIO(text, newline="").readlines())
    empty_rows = []
    end_of_previous = reader.line_num  # The header's last line.
    for record in reader:
      # A record is numbered by the line it starts on: its last line less the line breaks
      # inside its quoted fields (blank lines before it are skipped; a quote left open at
      # the end of the file also holds the last line's break).
      line = end_of_previous + 1
      if reader.line_num > line:  # Most records are one line: no fields to scan.
        line = max(line, reader.line_num - sum(
            len(_LINE_BREAK.findall(value)) for value in _fields(record) if value))
      end_of_previous = reader.line_num
      # Spreadsheets export their blank rows as bare delimiters (",,"): skipped, as the csv
      # module skips empty lines, rather than read as an example whose label is "".
      if _is_blank_row(record):
        empty_rows.append(line)
        continue
      swallowed = reader.line_num > line and _swallowed_row(
          record, text_lines(), line, reader.line_num, delimiter, len(reader.fieldnames),
          label_columns)
      if swallowed:  # Training on it would lose those rows.
        raise DataFileError(
            f"{path}, lines {line}-{reader.line_num}: a field opens with a quote and runs to "
            f"line {reader.line_num}, taking in lines that read as rows of their own (e.g. "
            f"{_shown(swallowed)}). Remove the stray quote, or quote the whole text with its "
            'quotes doubled ("""Hi"" she said").')
      # DictReader fills short rows with None, which callers report as missing.
      yield line, record
  except csv.Error as error:  # E.g. a field over csv.field_size_limit.
    # line_num counts the lines of the records read whole; the bad one starts after them.
    raise DataFileError(f"{path}, line {reader.line_num + 1}: unreadable CSV ({error}).") from error
  if empty_rows:
    rows, lines = ("row", "line") if len(empty_rows) == 1 else ("rows", "lines")
    logging.warning("%s: skipped %d %s with every field empty (%s %s).", path,
                    len(empty_rows), rows, lines, _line_list(empty_rows))


def _headerless_hint(fields: Sequence[str], required_keys: Sequence[str], delimiter: str
                     ) -> str:
  """For a CSV whose first line reads as data (a field that is a label, or a sentence of 4
  or more words; e.g. the SMS spam collection's "ham<TAB>Go until jurong point..."), how
  to add the header it lacks: the longest field's column named as the text, the others as
  the labels (then "other")."""
  if len(required_keys) < 2 or not any(
      _label(name) is not None or len(name.split()) >= 4 for name in fields):
    return ""
  text_column = max(range(len(fields)), key=lambda i: len(fields[i]))
  names = iter(required_keys[1:])
  header = [required_keys[0] if i == text_column else next(names, f"other{i}")
            for i in range(len(fields))]
  return (f" Line 1 reads as a row of data: if the file has no header line, add one "
          f"naming its columns, e.g. {delimiter.join(header)!r}.")


# How many rows of a table `_key_suggestion` reads to guess its text and label columns.
_SUGGESTION_ROWS = 100


def _key_suggestion(rows: Sequence[Mapping[str, object]], keys: Sequence[str]) -> str:
  """The flags that probably name the text and the labels among a table's first `rows`:
  the text is the column whose values are longest on average, the labels the other
  columns whose every value is a label (`_label`). "" where no column holds text. Labelled
  files are read under a config (--config.data.*); texts alone by byteflax.classify."""
  columns = [c for c in (rows[0] if rows else {}) if c is not None]
  lengths = {c: sum(len(row.get(c)) for row in rows if isinstance(row.get(c), str)) / len(rows)
             for c in columns}
  if not lengths or max(lengths.values()) == 0:
    return ""
  text = max(columns, key=lengths.get)
  if len(keys) == 1:
    return f" (here probably --text_key={text})"
  labels = [c for c in columns
            if c != text and all(_label(row.get(c)) is not None for row in rows)]
  if not labels:
    return ""
  return (f" (here probably --config.data.text_key={text} "
          f"--config.data.label_keys={','.join(labels)})")


def _columns(columns: Sequence[str], keys: Sequence[str], path: str, where: str,
             hint: str = "",
             first_rows: Callable[[], Sequence[Mapping[str, object]]] | None = None
             ) -> list[str]:
  """`columns` with each one that is the only case-insensitive match of a key with no
  exact match renamed to that key (a spreadsheet's "Text" for text_key "text").

  Raises:
    DataFileError: naming `where` (the header's line), a key that matches no column, the
      flags that probably name the columns (`_key_suggestion` of `first_rows()`, a callable
      called only then) unless `hint` says the header is a row of data, and `hint`.
  """
  columns = list(columns)
  for key in keys:
    matches = [i for i, name in enumerate(columns) if name.casefold() == key.casefold()]
    if key not in columns and len(matches) == 1:
      logging.info("%s: column %r read as %r.", path, columns[matches[0]], key)
      columns[matches[0]] = key
  missing = [key for key in keys if key not in columns]
  if missing:
    example = (not hint and first_rows and _key_suggestion(first_rows(), keys)) or (
        " (e.g. --config.data.text_key=comment --config.data.label_keys=toxic,insult)")
    raise DataFileError(
        f"{where} has no column {missing}; columns: {_shown(columns, 300)}. Name yours with "
        f"text_key / label_keys{example}.{hint}")
  return columns


def _swallowed_row(record: Mapping[str | None, object], lines: Sequence[str], first: int,
                   last: int, delimiter: str, num_columns: int,
                   label_columns: Sequence[int]) -> str | None:
  """A row of the file that a stray quote swallowed into the record of lines first-last,
  or None. A field that opens with a quote runs to the next quote; the csv module then
  reads on past a quote that does not end the field (strict=False). So a record is
  suspect only if its lines are not strict CSV, and is caught if one of its multi-line
  fields holds a line that parses as a row (as many fields as the header, a label in each
  of `label_columns`). A real multi-line text, quoted as CSV quotes it, is strict: the
  95,383 multi-line comments of toxic_comments_en's CSV all are, though lines of some of
  them parse as rows ("1,000 edits are ...", "True, it works ...")."""
  try:
    for _ in csv.reader(lines[first - 1:last], delimiter=delimiter, strict=True):
      pass
    return None
  except csv.Error:
    pass
  inner = [line for value in _fields(record) if value and _LINE_BREAK.search(value)
           for line in _LINE_BREAK.split(value)]
  for line, fields in zip(inner, csv.reader(inner, delimiter=delimiter)):
    if len(fields) == num_columns and all(_label(fields[i]) is not None
                                          for i in label_columns):
      return line
  return None


def _fields(record: Mapping[str | None, object]) -> list[str | None]:
  """The fields of a `csv.DictReader` record: those past the header's come as a list under
  the key None, those missing in a short row as None."""
  return [value for key, value in record.items() if key is not None] + (record.get(None) or [])


# The line ends that a text file read with newline="" yields lines at, as the csv module
# counts them (in `line_num`) and keeps them inside quoted fields.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _is_blank_row(record: Mapping[str | None, object]) -> bool:
  """Whether a `csv.DictReader` record holds nothing but whitespace."""
  return not any(field and field.strip() for field in _fields(record))


def _json_lines_records(text: str, path: str) -> Iterator[tuple[int, dict[str, object]]]:
  """`read_records` of JSON Lines `text`: one object per line, blank lines skipped."""
  for line_number, line in enumerate(io.StringIO(text, newline=""), start=1):
    if line.strip():
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataFileError(f"{path}, line {line_number}: invalid JSON ({e}).") from e
      yield line_number, _json_object(record, path, line_number)


def _json_array_records(text: str, path: str) -> Iterator[tuple[int, dict[str, object]]]:
  """`read_records` of a JSON array of objects (e.g. pandas' `to_json(orient="records")`),
  each numbered by the line it starts on. Read element by element, so that an error names
  the line of the element that is wrong."""
  decoder = json.JSONDecoder()
  skip_whitespace = re.compile(r"\s*").match
  lines_before = [0, 0]  # Newlines in text[:position], and that position.

  def line_at(position: int) -> int:  # Positions only grow: count each newline once.
    lines_before[0] += text.count("\n", lines_before[1], position)
    lines_before[1] = position
    return lines_before[0] + 1

  position = skip_whitespace(text, text.index("[") + 1).end()
  separator = "]" if text.startswith("]", position) else ","
  if separator == "]":  # An empty array.
    position = skip_whitespace(text, position + 1).end()
  while separator == ",":
    line_number = line_at(position)
    try:
      record, position = decoder.raw_decode(text, position)
    except json.JSONDecodeError as e:
      raise DataFileError(f"{path}, line {e.lineno}: invalid JSON ({e}).") from e
    yield line_number, _json_object(record, path, line_number)
    position = skip_whitespace(text, position).end()
    separator = text[position:position + 1]
    if separator not in (",", "]"):
      raise DataFileError(f"{path}, line {line_at(position)}: expected ',' or ']' after an "
                       f"element of the JSON array, got {separator!r}.")
    position = skip_whitespace(text, position + 1).end()
  if position < len(text):
    raise DataFileError(f"{path}, line {line_at(position)}: text after the JSON array.")


def _json_table(text: str, required_keys: Sequence[str]
                ) -> tuple[list[object], str] | None:
  """(rows, layout) of a file that is one JSON object holding a whole table, as pandas'
  `DataFrame.to_json` writes it: its default orient "columns" ({column: {index: value}}),
  "index" ({index: {column: value}}), "split" ({"columns", "index", "data": [[value]]}) or
  "table" ({"schema", "data": [object]}), or a {"data": [object]} wrapper. None for
  anything else: JSON Lines (one object per line), of which one line may be the file."""
  if not text.lstrip().startswith("{"):
    return None
  try:
    table = json.loads(text)
  except json.JSONDecodeError:  # Several lines of objects (or a broken one): JSON Lines.
    return None
  keys = set(required_keys)
  if not isinstance(table, dict) or not keys or keys <= {
      key for key, value in table.items() if not isinstance(value, (dict, list))}:
    return None
  data = table.get("data")
  if isinstance(data, list) and isinstance(table.get("columns"), list):
    return [dict(zip(table["columns"], row)) if isinstance(row, list) else row
            for row in data], "pandas' orient='split'"
  if isinstance(data, list):
    return data, "its 'data' array"
  if not all(isinstance(value, dict) for value in table.values()):
    return None
  if keys & set(table):
    index = list(dict.fromkeys(key for column in table.values() for key in column))
    return ([{name: column.get(key) for name, column in table.items()} for key in index],
            "pandas' orient='columns' (to_json's default)")
  if keys & set(next(iter(table.values()))):
    return list(table.values()), "pandas' orient='index'"
  return None


def _json_object(record: object, path: str, line: int) -> dict[str, object]:
  if not isinstance(record, dict):
    raise DataFileError(f"{path}, line {line}: expected a JSON object, got "
                     f"{type(record).__name__}.")
  return record


def _delimiter(f: io.StringIO) -> str:
  """The delimiter of the CSV text `f` (rewound after): the one its header line uses."""
  header = f.readline()
  f.seek(0)
  try:
    return csv.Sniffer().sniff(header, delimiters=CSV_DELIMITERS).delimiter
  except csv.Error:  # A single column: no delimiter to find.
    return ","


def read_labelled_file(path: str, text_key: str = "text",
                       label_keys: Sequence[str] = ("label",),
                       invalid_utf8: str = "replace",
                       positive_label: str | None = None) -> list[Example]:
  """Reads (text, labels) from a CSV or JSONL file (`read_records`). Duplicate texts are
  kept (the split and the training see them as the file has them).

  Args:
    path: the file.
    text_key: column/key holding the text.
    label_keys: columns/keys holding the labels, each 0/1, a probability thresholded at
      0.5, a JSON bool, or "true"/"false".
    invalid_utf8: what a byte that is not UTF-8 does (one of `INVALID_UTF8`).
    positive_label: labels that are class names (spam / ham): the one that reads as 1;
      every other value, numbers too, reads as 0.

  Returns:
    (text, labels) pairs in file order, labels a tuple of 0/1 ints, one per label key.

  Raises:
    FileNotFoundError: `path` does not exist.
    DataFileError: unknown extension, empty file, or a bad line (the message names the line).
  """
  if isinstance(label_keys, str) or not label_keys:
    raise ValueError(f"label_keys must be a non-empty sequence of names, got {label_keys!r}.")
  records = _null_texts_as_empty(
      list(read_records(path, (text_key, *label_keys), invalid_utf8)), path, text_key)
  if not records:
    raise DataFileError(f"{path}: no examples (empty file).")
  for key in label_keys:
    _check_label_classes(records, path, key, positive_label)
  return [_example(record, path, line, text_key, label_keys, positive_label)
          for line, record in records]


def read_texts(path: str, text_key: str = "text", invalid_utf8: str = "replace"
               ) -> list[str]:
  """The texts of a CSV or JSONL file (`read_records`; labels, if any, are ignored)."""
  return [text for text, _ in read_text_rows(path, text_key, invalid_utf8)]


def read_text_rows(path: str, text_key: str = "text", invalid_utf8: str = "replace"
                   ) -> list[tuple[str, dict[str, object]]]:
  """(text, row) for each row of a CSV, JSON or Parquet file: the `text_key` field's text
  (`read_texts`) and every field of the row, for an output that keeps them (ids, labels)."""
  records = _null_texts_as_empty(
      list(read_records(path, (text_key,), invalid_utf8, every_column=True)), path, text_key)
  # A CSV row's fields beyond the header's come under the key None: not a column.
  return [(_example(record, path, line, text_key, ())[0],
           {key: value for key, value in record.items() if key is not None})
          for line, record in records]


def _null_texts_as_empty(records: list[tuple[int, Mapping[str, object]]], path: str,
                         text_key: str) -> list[tuple[int, Mapping[str, object]]]:
  """`records` of a JSON or Parquet file with a null text read as the empty text, as the
  same table saved as CSV has it (pandas writes an empty text as NaN, and NaN as null),
  with a warning naming the lines. A key that is absent stays an error, and so does a CSV
  row without a text field: it is a short row, not a null."""
  if file_format(path) in (".csv", ".tsv"):
    return records
  lines = [line for line, record in records if text_key in record and record[text_key] is None]
  if not lines:
    return records
  logging.warning("%s: %d null %r value(s) (line(s) %s) read as empty texts.", path,
                  len(lines), text_key, _line_list(lines))
  null = set(lines)
  return [(line, {**record, text_key: ""} if line in null else record)
          for line, record in records]


def read_file_splits(train_path: str, test_path: str | None = None,
                     validation_path: str | None = None, *, text_key: str = "text",
                     label_keys: Sequence[str] = ("label",), validation_fraction: float = 0.1,
                     seed: int = 0, invalid_utf8: str = "replace",
                     positive_label: str | None = None) -> dict[str, list[Example]]:
  """The train/validation/test examples of `register_file_task` (same arguments).

  Splits without a file get `validation_fraction` of the train file's distinct texts each,
  carved by `_stratified_carve` with `seed` (so a rare label still reaches them); train
  keeps the rest. Every copy of a text goes where the text goes, so a text repeated in the
  file never sits on both sides of a held-out split (it would inflate the held-out AUC).
  Given held-out files are used as they are; texts they share with the training file are
  counted in a warning, as is a held-out split whose labels are all equal (its ROC AUC is
  undefined).

  Raises:
    DataFileError: a bad file (`read_labelled_file`), a label with one value in all
      training examples, or a carved split left empty.

  Returns:
    {"train": [...], "validation": [...], "test": [...]} of (text, labels) pairs.
  """
  if not 0.0 < validation_fraction < 0.5:
    raise ValueError(f"validation_fraction must be in (0, 0.5), got {validation_fraction}.")
  read = functools.partial(read_labelled_file, text_key=text_key, label_keys=label_keys,
                           invalid_utf8=invalid_utf8, positive_label=positive_label)
  train = read(train_path)
  copies: dict[str, list[Example]] = {}  # Text -> its examples, in file order.
  for example in train:
    copies.setdefault(example[0], []).append(example)
  carve_validation = validation_fraction if validation_path is None else 0.0
  carve_test = validation_fraction if test_path is None else 0.0
  carved = _stratified_carve({text: examples[0][1] for text, examples in copies.items()},
                             seed, (carve_validation, carve_test))
  splits = {split: [example for text in texts for example in copies[text]]
            for split, texts in carved.items()}
  for key, value in _one_class_labels(splits["train"], label_keys).items():
    raise DataFileError(f"{train_path}: label {key!r} is {value} in every training example; a "
                     "classifier needs examples of both classes.")
  for split, path in (("validation", validation_path), ("test", test_path)):
    if path is not None:
      splits[split] = read(path)
      shared = sum(text in copies for text, _ in splits[split])
      if shared:
        logging.warning("%d of the %d examples of %s have a text that is also in %s: the "
                        "%s AUC counts them as held out.", shared, len(splits[split]), path,
                        train_path, split)
    elif not splits[split]:
      raise DataFileError(
          f"{train_path} has {len(copies)} distinct texts; carving validation_fraction="
          f"{validation_fraction} of them for {split} leaves none. Pass {split}_path.")
    for key, value in _one_class_labels(splits[split], label_keys).items():
      logging.warning(
          "The %s split (%d examples, %s) has label %r = %d in every example: its ROC AUC "
          "for %r is undefined (nan). Pass a %s_path with both classes, or more data.",
          split, len(splits[split]), path or f"carved from {train_path}", key, value, key,
          split)
  return splits


def _one_class_labels(examples: Sequence[Example], label_keys: Sequence[str]
                      ) -> dict[str, int]:
  """The label keys whose label is the same in every one of `examples` (non-empty) ->
  that label."""
  values = [{labels[index] for _, labels in examples} for index in range(len(label_keys))]
  return {key: next(iter(v)) for key, v in zip(label_keys, values) if len(v) == 1}


def _stratified_carve(labels_of: Mapping[str, tuple[int, ...]], seed: int,
                      fractions: tuple[float, float]) -> dict[str, list[str]]:
  """Texts -> {"train", "validation", "test"}, carved per label combination.

  Each group of texts with the same labels is shuffled (seeded) and gives validation and
  test `round(fraction * size)` of its texts each; train keeps the rest. Rounding rather
  than flooring lets a rare class (e.g. 6 positives in 300) reach the held-out splits.
  """
  groups: dict[tuple[int, ...], list[str]] = {}
  for text, labels in labels_of.items():
    groups.setdefault(labels, []).append(text)
  rng = np.random.RandomState(seed)
  splits: dict[str, list[str]] = {split: [] for split in fortunes.SPLITS}
  for labels in sorted(groups):
    texts = [groups[labels][i] for i in rng.permutation(len(groups[labels]))]
    num_validation, num_test = (int(f * len(texts) + 0.5) for f in fractions)
    bounds = np.cumsum([0, len(texts) - num_validation - num_test, num_validation, num_test])
    for split, start, stop in zip(fortunes.SPLITS, bounds[:-1], bounds[1:]):
      splits[split] += texts[start:stop]
  # Mixed, so that a split is not sorted by label.
  return {split: [texts[i] for i in rng.permutation(len(texts))]
          for split, texts in splits.items()}
