r"""Seeded obfuscation of texts: how toxic writers dodge word filters.

Byte models have no vocabulary, so a misspelt insult is still mostly the same bytes, while
a word n-gram or WordPiece model may never have seen the new spelling. This module makes a
perturbed copy of a split to measure that (benchmarks/compare.py --perturb_rate), and
distillation uses one of the training texts as extra text for the teacher to label
(`config.distill.transfer`).

Kinds (each rewrites one word of at least `MIN_WORD_LENGTH` letters):
  mask       one inner vowel becomes "*"                        idiot -> id*ot
  repeat     one letter is repeated 2-4 more times              stupid -> stuuupid
  space      letters are separated by spaces                    stupid -> s t u p i d
  leet       each letter with a digit/symbol look-alike becomes it, with probability 0.5
                                                                idiot -> 1d10t
  homoglyph  each Latin letter with a Cyrillic look-alike becomes it, with probability 0.5
                                                                idiot -> іdіоt (Cyrillic)
  typo       two adjacent inner letters swap, or one is dropped   stupid -> sutpid, stupd

`perturb_texts(texts, rate, kinds, seed)` rewrites each eligible word with probability
`rate`, by a kind drawn uniformly from `kinds`; everything else (spacing, punctuation,
short words) is kept. The same texts, rate, kinds and seed always give the same output.
Words are chosen at random, not by how toxic they are, so no model's lexicon decides
what gets obfuscated.

  python -m byteflax.perturb --rate=0.3 "you are a stupid idiot"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import random
import re
import sys

MIN_WORD_LENGTH = 3
DEFAULT_RATE = 0.3

_WORD = re.compile(r"[^\W\d_]+")  # Runs of letters (any script).
_VOWELS = "aeiouAEIOU"
_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "l": "1", "g": "9",
         "b": "8", "A": "4", "E": "3", "I": "1", "O": "0", "S": "$", "T": "7"}
# Cyrillic letters that render like Latin ones.
_HOMOGLYPHS = {"a": "а", "c": "с", "e": "е", "i": "і", "o": "о", "p": "р", "x": "х",
               "y": "у", "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "K": "К",
               "M": "М", "O": "О", "P": "Р", "T": "Т", "X": "Х"}


def _mask(word: str, rng: random.Random) -> str:
  inner = [i for i in range(1, len(word) - 1) if word[i] in _VOWELS]
  if not inner:
    return word
  i = rng.choice(inner)
  return word[:i] + "*" + word[i + 1:]


def _repeat(word: str, rng: random.Random) -> str:
  i = rng.randrange(len(word))
  return word[:i + 1] + word[i] * rng.randint(2, 4) + word[i + 1:]


def _space(word: str, rng: random.Random) -> str:
  del rng  # Deterministic.
  return " ".join(word)


def _substitute(table: dict[str, str]) -> Callable[[str, random.Random], str]:
  def substitute(word: str, rng: random.Random) -> str:
    return "".join(table[c] if c in table and rng.random() < 0.5 else c for c in word)
  return substitute


def _typo(word: str, rng: random.Random) -> str:
  i = rng.randrange(1, len(word) - 1)
  if rng.random() < 0.5:
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]
  return word[:i] + word[i + 1:]


PERTURBATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "mask": _mask,
    "repeat": _repeat,
    "space": _space,
    "leet": _substitute(_LEET),
    "homoglyph": _substitute(_HOMOGLYPHS),
    "typo": _typo,
}


def perturb_text(text: str, rate: float, kinds: Sequence[str], rng: random.Random) -> str:
  """`text` with each word of >= MIN_WORD_LENGTH letters rewritten with probability
  `rate` by a kind drawn from `kinds` (see the module docstring)."""

  def rewrite(match: re.Match) -> str:
    word = match.group()
    if len(word) < MIN_WORD_LENGTH or rng.random() >= rate:
      return word
    return PERTURBATIONS[rng.choice(kinds)](word, rng)

  return _WORD.sub(rewrite, text)


def perturb_texts(texts: Sequence[str], rate: float = DEFAULT_RATE,
                  kinds: Sequence[str] = tuple(PERTURBATIONS), seed: int = 0) -> list[str]:
  """A perturbed copy of `texts`, deterministic in (texts, rate, kinds, seed).

  Args:
    texts: the texts, e.g. a test split.
    rate: probability that an eligible word is rewritten, in [0, 1].
    kinds: names from PERTURBATIONS to draw from.
    seed: seed of the word and kind choices.

  Raises:
    ValueError: a rate outside [0, 1], or no or unknown kinds.
  """
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"rate must be in [0, 1], got {rate}.")
  unknown = sorted(set(kinds) - set(PERTURBATIONS))
  if unknown or not kinds or isinstance(kinds, str):
    raise ValueError(f"Unknown perturbation kinds {unknown or kinds!r}; choose from "
                     f"{sorted(PERTURBATIONS)}.")
  rng = random.Random(seed)
  kinds = tuple(kinds)
  return [perturb_text(text, rate, kinds, rng) for text in texts]


def main(argv: Sequence[str]) -> None:
  """Prints each argument perturbed, e.g. `--rate=1 --kinds=leet,space "text"`."""
  rate, kinds, texts = DEFAULT_RATE, tuple(PERTURBATIONS), []
  for arg in argv:
    if arg.startswith("--rate="):
      rate = float(arg.removeprefix("--rate="))
    elif arg.startswith("--kinds="):
      kinds = tuple(arg.removeprefix("--kinds=").split(","))
    else:
      texts.append(arg)
  print("\n".join(perturb_texts(texts, rate, kinds)))


if __name__ == "__main__":
  main(sys.argv[1:])
