"""The obfuscation benchmark's perturbations (byteflax/perturb.py)."""

import itertools
import random

import pytest

from byteflax import perturb

_TEXT = "You are a stupid idiot, go away!! ok?"


@pytest.mark.parametrize("kind", sorted(perturb.PERTURBATIONS))
def test_each_kind_rewrites_every_long_word_and_nothing_else(kind):
  out = perturb.perturb_texts([_TEXT], rate=1.0, kinds=(kind,), seed=3)[0]
  assert out != _TEXT
  # Punctuation, short words ("a", "go", "ok") and the spacing between words survive.
  assert out.endswith("!! ok?") and " a " in out and " go " in out


def test_kinds_do_what_their_names_say():
  rng = random.Random(0)
  assert perturb.PERTURBATIONS["space"]("idiot", rng) == "i d i o t"
  masked = perturb.PERTURBATIONS["mask"]("idiot", rng)
  assert masked.count("*") == 1 and masked[0] == "i" and masked[-1] == "t"
  repeated = perturb.PERTURBATIONS["repeat"]("idiot", rng)
  assert 7 <= len(repeated) <= 9
  assert "".join(letter for letter, _ in itertools.groupby(repeated)) == "idiot"
  assert set(perturb.PERTURBATIONS["leet"]("aeiost" * 5, rng)) - set("aeiost") <= set("431057")
  homoglyphs = perturb.PERTURBATIONS["homoglyph"]("aceiopxy" * 5, rng)
  assert any("\u0400" <= c <= "\u04ff" for c in homoglyphs)  # Cyrillic.
  for _ in range(20):
    typo = perturb.PERTURBATIONS["typo"]("stupid", rng)
    swapped = len(typo) == 6 and sorted(typo) == sorted("stupid")
    dropped = any(typo == "stupid"[:i] + "stupid"[i + 1:] for i in range(1, 5))
    assert typo != "stupid" and typo[0] == "s" and (swapped or dropped), typo


def test_rate_seed_and_determinism():
  texts = [f"{_TEXT} number {i}" for i in range(200)]
  assert perturb.perturb_texts(texts, rate=0.0) == texts
  once = perturb.perturb_texts(texts, rate=0.3, seed=1)
  assert once == perturb.perturb_texts(texts, rate=0.3, seed=1)
  assert once != perturb.perturb_texts(texts, rate=0.3, seed=2)
  changed = sum(a != b for a, b in zip(once, texts))
  # 6 eligible words a text, each rewritten with p = 0.3: 1 - 0.7^6 = 88% of texts would
  # change, a little fewer because a leet / homoglyph draw may substitute no letter.
  assert 0.65 * len(texts) < changed < 0.9 * len(texts)


def test_bad_arguments():
  with pytest.raises(ValueError, match="rate"):
    perturb.perturb_texts(["x"], rate=1.5)
  with pytest.raises(ValueError, match="Unknown perturbation kinds"):
    perturb.perturb_texts(["x"], kinds=("upside_down",))
  with pytest.raises(ValueError, match="Unknown perturbation kinds"):
    perturb.perturb_texts(["x"], kinds="leet")


def test_perturb_spread_scores_one_fit_on_each_seeds_copy(tmp_path):
  """benchmarks/perturb_spread.py: one TF-IDF fit, a perturbed test AUC per seed; copies of
  other seeds differ, the clean AUC does not depend on them."""
  from benchmarks import perturb_spread  # pylint: disable=g-import-not-at-top
  from configs import byteqrnn_toxicity  # pylint: disable=g-import-not-at-top
  from tests import utils  # pylint: disable=g-import-not-at-top
  utils.write_toy_jsonl(tmp_path, numbered=True)
  config = byteqrnn_toxicity.get_config("smoke")
  config.data.train_path = str(tmp_path / "train.jsonl")
  config.data.test_path = str(tmp_path / "test.jsonl")
  results = perturb_spread.spread(config, ["tfidf_word", "tfidf_char"], c=10.0, seeds=3,
                                  rate=1.0)
  assert results["test_examples"] == 120 and results["task"].startswith("file_")
  for row in results["rows"]:
    assert row["auc"] > 0.95  # The marker word separates the classes.
    assert len(row["auc_perturbed"]) == 3 and len(set(row["auc_perturbed"])) > 1
    assert all(0 <= auc < row["auc"] for auc in row["auc_perturbed"])
  table = perturb_spread.format_table(results)
  assert table.splitlines()[2].startswith("| tfidf_word | ")
  assert "perturbed, seed 2 | range |" in table.splitlines()[0]
