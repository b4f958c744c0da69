"""byteflax/augment.py: Tang et al.'s augmented copies, seeded."""

import random

import pytest

from byteflax import augment

TEXTS = ["you are a stupid idiot and everybody\nknows it", "what a lovely day today",
         "one", "never give up on your dreams, said the fortune cookie"]


def test_copies_are_deterministic_copy_major_and_change_most_texts():
  copies = augment.augment_texts(TEXTS, 5, seed=3)
  assert len(copies) == 5 * len(TEXTS)
  assert copies == augment.augment_texts(TEXTS, 5, seed=3)
  assert copies != augment.augment_texts(TEXTS, 5, seed=4)
  changed = [copy != text for copy, text in zip(copies, TEXTS * 5)]
  assert sum(changed) > len(copies) / 2
  assert all(copies)  # Never empty.
  # Fewer copies are a prefix: a teacher file scored for augmented:5 serves augmented:2.
  assert augment.augment_texts(TEXTS, 2, seed=3) == copies[:2 * len(TEXTS)]


def test_zero_rates_keep_the_text_and_its_line_breaks():
  assert augment.augment_texts(TEXTS, 2, drop_rate=0.0, replace_rate=0.0,
                               ngram_rate=0.0) == TEXTS * 2


def test_each_operation_alone():
  words = TEXTS[3].split()
  rng = random.Random(0)
  # Every word dropped: the untouched text instead of an empty one.
  assert augment.augment_texts([TEXTS[3]], 1, drop_rate=1.0) == [TEXTS[3]]
  dropped = augment.augment_text(TEXTS[3], [], rng, drop_rate=0.5, replace_rate=0.0,
                                 ngram_rate=0.0)
  assert 0 < len(dropped.split()) < len(words)
  assert all(word in words for word in dropped.split())
  replaced = augment.augment_text(TEXTS[3], ["ZZZ"], rng, drop_rate=0.0, replace_rate=1.0,
                                  ngram_rate=0.0)
  assert replaced.split() == ["ZZZ"] * len(words)
  for _ in range(20):  # A span of 1 to 3 consecutive words.
    span = augment.augment_text(TEXTS[3], [], rng, drop_rate=0.0, replace_rate=0.0,
                                ngram_rate=1.0, max_ngram=3).split()
    assert 1 <= len(span) <= 3 and " ".join(span) in " ".join(words)


def test_errors():
  with pytest.raises(ValueError, match="copies must be >= 1"):
    augment.augment_texts(TEXTS, 0)
  with pytest.raises(ValueError, match="drop_rate must be in"):
    augment.augment_texts(TEXTS, 1, drop_rate=1.5)
