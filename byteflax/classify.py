r"""Scores texts with a trained classifier: a byteflax.main workdir (JAX) or a .tflite (LiteRT).

  # Texts as arguments; probabilities as JSON lines on stdout.
  python -m byteflax.classify --model=/tmp/byteqrnn "you are an idiot" "have a nice day"
  # One text per line from stdin, through the exported int8 model.
  cat comments.txt | python -m byteflax.classify --model=/tmp/export/model_int8.tflite
  # A CSV or JSONL file (its `text` column / key) to a CSV or JSONL file.
  python -m byteflax.classify --model=/tmp/byteqrnn --input=comments.csv --output=scores.csv

Each output row holds the input row (a file's every field: ids and labels come through) and
one probability per label, named as the run's labels (for a .tflite, those of the
manifest.json beside it), or "<label>_probability" where the input has a field of that
name. Any input works: a byte model has no out-of-vocabulary text; empty texts are scored
(as the end-of-text id alone), longer ones cut to the model's length, and bytes that are
not UTF-8 in a file read as U+FFFD (with a warning naming the line). From Python:

  from byteflax import classify
  classifier = classify.load("/tmp/byteqrnn")   # or ".../model_int8.tflite"
  classifier.predict(["you are an idiot", "have a nice day"])  # -> [2, labels] probabilities

The JAX path batches texts of similar length together, padded to the run's length buckets
(so each bucket compiles once); the LiteRT path runs one text at a time at the shortest
exported signature length that holds it, as a phone does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
import csv
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from byteflax import cli
from byteflax import export
from byteflax import input_pipeline
from byteflax import splitter
from byteflax import train
from tasks import user_files


class Classifier:
  """Texts in, probabilities `[texts, labels]` out; `label_names` and `max_length` say
  what the columns are and where texts are cut."""

  label_names: tuple[str, ...]
  max_length: int

  def logits(self, texts: Sequence[str | bytes]) -> np.ndarray:
    raise NotImplementedError

  def predict(self, texts: Sequence[str | bytes]) -> np.ndarray:
    """Probabilities `[texts, labels]` (sigmoid of the logits)."""
    return 1 / (1 + np.exp(-self.logits(texts).astype(np.float64)))


class JaxClassifier(Classifier):
  """A Flax classifier and its variables; `load` builds one from a workdir."""

  def __init__(self, model, variables, label_names: Sequence[str], max_length: int,
               boundaries: Sequence[int], batch_size: int = 64):
    self.label_names, self.max_length = tuple(label_names), max_length
    self._boundaries, self._batch_size = sorted(boundaries), batch_size
    self._variables = variables
    self._apply = jax.jit(lambda v, ids: model.apply(v, ids, train=False))

  def logits(self, texts):
    encode = splitter.ByteSplitter(self.max_length).encode
    return self.logits_of_ids([encode(t) for t in texts])

  def logits_of_ids(self, encoded: Sequence[Sequence[int]]) -> np.ndarray:
    """Logits `[n, labels]` of texts already split into ids (each ending in EOS, at most
    max_length long), e.g. the rows of a split as training saw them."""
    logits = np.zeros((len(encoded), len(self.label_names)), np.float32)
    order = np.argsort([len(e) for e in encoded], kind="stable")
    for start in range(0, len(order), self._batch_size):
      rows = order[start:start + self._batch_size]
      longest = max(len(encoded[i]) for i in rows)
      length = next(b for b in self._boundaries if b >= longest)
      # Full batches of bucket lengths: one compilation per bucket, whatever the input.
      ids = np.zeros((self._batch_size, length), np.int32)
      for row, i in enumerate(rows):
        ids[row, :len(encoded[i])] = encoded[i]
      logits[rows] = np.asarray(self._apply(self._variables, ids))[:len(rows)]
    return logits


class TFLiteTextClassifier(Classifier):
  """An exported .tflite in the LiteRT interpreter (export.TFLiteClassifier), fed texts."""

  def __init__(self, path: str, num_threads: int = 1):
    self._model = export.TFLiteClassifier(path, num_threads=num_threads)
    self.max_length = self._model.length
    manifest = os.path.join(os.path.dirname(path), export.MANIFEST_FILE)
    if os.path.exists(manifest):
      with open(manifest) as f:
        self.label_names = tuple(json.load(f)["labels"])
    else:
      count = self._model.interpreter.get_output_details()[0]["shape"][-1]
      self.label_names = tuple(f"label_{i}" for i in range(count))
      logging.warning("No %s beside %s; labels are named %s.", export.MANIFEST_FILE, path,
                      ", ".join(self.label_names))

  def logits(self, texts):
    if not len(texts):
      return np.zeros((0, len(self.label_names)), np.float32)
    ids = splitter.ByteSplitter(self.max_length).encode_batch(texts, self.max_length)[0]
    return self._model(ids)["logits"]


def load(model: str, batch_size: int = 64, num_threads: int = 1) -> Classifier:
  """A classifier from a byteflax.main workdir (its model: the selected checkpoint,
  `train.Selection`) or a .tflite file."""
  if model.endswith(".tflite"):
    if not os.path.isfile(model):
      raise FileNotFoundError(f"No such TFLite model: {model!r} (python -m byteflax.export "
                              f"writes {', '.join(export.FILES.values())}).")
    return TFLiteTextClassifier(model, num_threads)
  config = train.run_config(model)  # Raises naming the workdir if it is not a run.
  trainer = train.Trainer(config, training=False)
  variables, _ = train.load_variables(model, trainer)
  return JaxClassifier(trainer.model, variables, trainer.label_names, config.data.max_length,
                       input_pipeline.bucket_boundaries(config.data), batch_size)


def read_inputs(texts: Sequence[str], path: str | None, text_key: str,
                stdin=sys.stdin, invalid_utf8: str = "replace"
                ) -> tuple[list[str], list[dict[str, object]]]:
  """The texts to score and the rows their output carries.

  Texts come from the arguments, else a file (.csv / .tsv / .jsonl / .json / .parquet:
  `text_key`; anything else: one text per line; .gz / .bz2 / .xz decompressed), else stdin
  (one per line). A table file's rows keep every field (ids, labels: `write_outputs` writes
  them beside the scores); any other text's row is {"text": text}. `invalid_utf8`: what a
  byte that is not UTF-8 reads as (`user_files.decode_text`).
  """
  if texts and path:
    raise ValueError("Give texts as arguments or --input, not both.")
  if path and user_files.file_format(path):
    rows = user_files.read_text_rows(path, text_key, invalid_utf8)
    return [text for text, _ in rows], [row for _, row in rows]
  if path:
    texts = _lines(user_files.decode_text(user_files.read_bytes(path), path, invalid_utf8))
  elif not texts:
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode()
    texts = _lines(user_files.decode_text(data, "stdin", invalid_utf8))
  return list(texts), [{"text": text} for text in texts]


def _lines(text: str) -> list[str]:
  """One text per line, split at "\n" (or "\r\n") only, as `wc -l` counts: str.splitlines
  would also split at U+2028, U+0085 or a form feed inside a text, and the scores would no
  longer line up with the input's lines."""
  lines = text.split("\n")
  if lines[-1] == "":
    lines.pop()
  return [line.removesuffix("\r") for line in lines]


def score_columns(label_names: Sequence[str], fields: Collection[str]) -> list[str]:
  """The output's column for each label's probability: the label's name, or
  "<name>_probability" where the input already has a field of that name (scoring a
  labelled file must not overwrite its labels)."""
  return [f"{name}_probability" if name in fields else name for name in label_names]


def write_outputs(rows: Sequence[Mapping[str, object]], probabilities: np.ndarray,
                  label_names: Sequence[str], path: str | None, stdout=sys.stdout) -> None:
  """Each input row (`read_inputs`) with one probability per label (`score_columns`): CSV
  when `path` ends in .csv, else JSON lines (stdout when path is None)."""
  # Every field that some row has, in the order the rows first have them.
  fields = list(dict.fromkeys(key for row in rows for key in row))
  columns = score_columns(label_names, fields)
  f = open(path, "w", newline="", encoding="utf-8") if path else stdout
  try:
    if path and path.lower().endswith(".csv"):
      writer = csv.writer(f)
      writer.writerow([*fields, *columns])
      writer.writerows([*(_csv_field(row.get(key)) for key in fields),
                        *(f"{p:.6f}" for p in scores)]
                       for row, scores in zip(rows, probabilities))
    else:
      for row, scores in zip(rows, probabilities):
        scored = {**row, **{column: round(float(p), 6) for column, p in zip(columns, scores)}}
        f.write(json.dumps(scored, ensure_ascii=False) + "\n")
  finally:
    if path:
      f.close()


def _csv_field(value: object) -> str:
  """An input field as CSV writes it: a nested value (a JSON object or list) as JSON, a
  missing or null one empty, anything else as str() has it."""
  if value is None:
    return ""
  if isinstance(value, (dict, list)):
    return json.dumps(value, ensure_ascii=False)
  return str(value)


def main():
  """The CLI; its flags are defined here so that importing this module defines none."""
  model = flags.DEFINE_string(
      "model", None,
      "A byteflax.main workdir (JAX, its selected checkpoint) or a .tflite file.")
  input_path = flags.DEFINE_string(
      "input", None, "Texts to score: .csv / .tsv / .jsonl / .json / .parquet (the "
      "--text_key field) or one per line; default: the arguments, else stdin.")
  output_path = flags.DEFINE_string(
      "output", None, "Where to write: .csv, else JSON lines; default stdout (JSON lines).")
  text_key = flags.DEFINE_string("text_key", "text", "The text column / key of --input.")
  invalid_utf8 = flags.DEFINE_enum(
      "invalid_utf8", "replace", user_files.INVALID_UTF8,
      "A byte of the input that is not UTF-8 reads as U+FFFD, as its Windows-1252 (Latin-1) "
      "character, or stops with an error naming the line.")
  batch_size = flags.DEFINE_integer("batch_size", 64, "Texts per JAX batch.")
  num_threads = flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.")
  flags.mark_flags_as_required(["model"])

  @cli.clean_input_errors
  def run(argv):
    texts, rows = read_inputs(argv[1:], input_path.value, text_key.value,
                              invalid_utf8=invalid_utf8.value)
    classifier = load(model.value, batch_size.value, num_threads.value)
    write_outputs(rows, classifier.predict(texts), classifier.label_names,
                  output_path.value)
    logging.info("Scored %d texts with %s.", len(texts), model.value)

  app.run(run)


if __name__ == "__main__":
  main()
