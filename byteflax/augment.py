r"""Seeded augmented copies of texts: more text for a teacher to label (Tang et al., 2019).

A student learns from its teacher only through the texts the teacher scores. Tang et al.
("Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", 2019) brought a
BiLSTM close to BERT by scoring ~20 augmented copies of every training sentence; this module
makes such copies for `config.distill.transfer` ("augmented:K": K copies per training text).

Per copy, each word (a run of non-space characters) is, with probability
  `drop_rate` (0.1)     dropped, with the space after it (Tang et al.'s masking: a byte
                        model has no [MASK] token, and a gap says the same: "this word is
                        not there, what is the text now?");
  `replace_rate` (0.1)  replaced by a word drawn from all words of `texts` by frequency
                        (Tang et al. draw from words of the same part of speech; we have no
                        tagger for every language, and frequency keeps function words common);
then with probability `ngram_rate` (0.25) the copy becomes a random span of 1 to `max_ngram`
(5) of its words (n-gram sampling). Spacing and line breaks between kept words are kept.

  python -m byteflax.augment --copies=3 "you are a stupid idiot and everybody knows it"
"""

from __future__ import annotations

from collections.abc import Sequence
import random
import re
import sys

_SPLIT = re.compile(r"(\s+)")  # Keeps the separators: words at even indices.


def augment_text(text: str, words: Sequence[str], rng: random.Random,
                 drop_rate: float = 0.1, replace_rate: float = 0.1,
                 ngram_rate: float = 0.25, max_ngram: int = 5) -> str:
  """One augmented copy of `text`; `words` is the pool replacements are drawn from."""
  pieces = _SPLIT.split(text.strip())
  kept = []  # (word, separator after it)
  for i in range(0, len(pieces), 2):
    word, separator = pieces[i], pieces[i + 1] if i + 1 < len(pieces) else ""
    draw = rng.random()
    if draw < drop_rate:
      continue
    if draw < drop_rate + replace_rate and words:
      word = rng.choice(words)
    kept.append((word, separator))
  if kept and rng.random() < ngram_rate:
    n = rng.randint(1, min(max_ngram, len(kept)))
    start = rng.randrange(len(kept) - n + 1)
    kept = kept[start:start + n]
  return "".join(word + separator for word, separator in kept).strip()


def augment_texts(texts: Sequence[str], copies: int, seed: int = 0, **rates) -> list[str]:
  """`copies` augmented copies of every text, copy-major (`copies * len(texts)` strings,
  deterministic in texts, seed and rates). Fewer copies are a prefix of more: the first
  k * len(texts) strings of K copies are the k copies, so a teacher that scored
  "augmented:8" also covers "augmented:2". An empty result (e.g. every word of a one-word
  text dropped) is kept as the untouched text.

  Raises:
    ValueError: copies < 1, or a rate outside [0, 1].
  """
  if copies < 1:
    raise ValueError(f"copies must be >= 1, got {copies}.")
  for name, rate in rates.items():
    if name.endswith("_rate") and not 0.0 <= rate <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {rate}.")
  rng = random.Random(seed)
  words = [word for text in texts for word in text.split()]
  return [augment_text(text, words, rng, **rates) or text
          for _ in range(copies) for text in texts]


def main(argv: Sequence[str]) -> None:
  """Prints `--copies=K` (default 1) augmented copies of each argument."""
  copies = int(next((a.removeprefix("--copies=") for a in argv if a.startswith("--copies=")), 1))
  texts = [a for a in argv if not a.startswith("--copies=")]
  print("\n".join(augment_texts(texts, copies)))


if __name__ == "__main__":
  main(sys.argv[1:])
