"""Baselines: TF-IDF + LR and frozen MiniLM + LR (the `baselines` extra, installed in CI)."""

import json
import lzma
import os

import numpy as np
import pytest
from sklearn import feature_extraction

from byteflax import augment
from byteflax import baselines


def _texts(count, seed):
  """Offensive texts (label 1) swear; clean ones talk about the weather."""
  rng = np.random.default_rng(seed)
  clean = ["what a lovely sunny morning", "the garden looks green after the rain",
           "we walked along the quiet river", "a calm evening with soft music"]
  rude = ["shut up you stupid idiot", "get lost you worthless moron",
          "what a damn useless jerk", "you are a pathetic loser"]
  labels = (rng.random(count) < 0.5).astype(np.int64)
  texts = [f"{rng.choice(rude if y else clean)} {i}" for i, y in enumerate(labels)]
  return texts, labels[:, None]


def test_tfidf_tunes_c_on_validation_and_ranks_the_classes():
  model = baselines.TfidfLogisticRegression("char").fit(_texts(80, 0), _texts(40, 1))
  texts, labels = _texts(40, 2)
  scores = model.decision_function(texts)
  assert scores.shape == (40, 1)
  assert model.c in baselines.C_GRID
  assert baselines.macro_auc(labels, scores) == 1.0
  assert model.num_params() > 100 and model.size_bytes() > 1000
  # The kept models are the chosen C's, and its validation scores are theirs.
  np.testing.assert_allclose(model.validation_scores,
                             model.decision_function(_texts(40, 1)[0]), rtol=1e-6)
  refit = baselines.TfidfLogisticRegression("char").fit(_texts(80, 0), None, c=model.c)
  np.testing.assert_allclose(refit.decision_function(texts), scores, rtol=1e-6)
  # With C given, validation is not needed; a weaker C gives other scores.
  other = baselines.TfidfLogisticRegression("char").fit(_texts(80, 0), None, c=0.01)
  assert not np.allclose(other.decision_function(texts), scores)
  assert other.validation_scores is None


def test_tfidf_on_too_little_text_says_so():
  """Three texts that share no word leave no word in min_df=2 of them: sklearn's "After
  pruning, no terms remain" becomes an error that names the n-grams and the count."""
  texts = ["have a nice day", "you idiot", "thanks for the help"]
  model = baselines.TfidfLogisticRegression("word")
  with pytest.raises(ValueError, match=r"TF-IDF on word 1-2-grams: no n-gram occurs in 2 or "
                     r"more of the 3 texts it is fit on .*too little text"):
    model.fit((texts, np.array([[0], [1], [0]])), None, c=1.0)


def _chinese(count, seed):
  """Texts of random Han characters; the offensive ones (label 1) hold one of four insults."""
  rng = np.random.default_rng(seed)
  common = [chr(c) for c in range(0x4e00, 0x4e00 + 300)]
  insults = ["笨蛋", "混蛋", "白痴", "去死"]
  labels = (rng.random(count) < 0.3).astype(np.int64)
  texts = []
  for label in labels:
    text = "".join(rng.choice(common, size=rng.integers(6, 30)))
    cut = rng.integers(len(text) + 1)
    texts.append(text[:cut] + (rng.choice(insults) if label else "") + text[cut:] + "。")
  return texts, labels[:, None]


def test_tfidf_words_in_chinese_are_its_characters():
  """Written without spaces, each text is one scikit-learn word that no other text repeats
  ("After pruning, no terms remain"); as Unicode's word boundaries make them, the words are
  the characters, and the insults are found. English keeps its words."""
  (train, y_train), (test, y_test) = _chinese(600, 0), _chinese(200, 1)
  assert baselines.unspaced_share(train) > 0.95
  model = baselines.TfidfLogisticRegression("word").fit((train, y_train), None, c=10.0)
  assert baselines.macro_auc(y_test, model.decision_function(test)) > 0.95
  english = _texts(60, 0)[0] + ["a quote: 笨蛋 means fool"]
  assert baselines.unspaced_share(english) < baselines.UNSPACED_SHARE
  model = baselines.TfidfLogisticRegression("word")
  model.features(english, fit=True)
  default = feature_extraction.text.TfidfVectorizer(ngram_range=(1, 2), min_df=2)
  assert model._vectorizer.get_feature_names_out().tolist() == (
      default.fit(english).get_feature_names_out().tolist())


def test_out_of_fold_logits_name_a_class_that_one_fold_holds_whole():
  """One offensive text among 30: the fold that holds it leaves the other folds' fit one
  class; the error says which label, and what to change (sklearn's says neither)."""
  texts, labels = _texts(30, 0)
  labels[:] = 0
  labels[7] = 1
  model = baselines.TfidfLogisticRegression("char")
  with pytest.raises(ValueError, match=r"label column 0's 1 example\(s\) of class 1 among the "
                     r"30 training examples all fall in fold \d of 5.*teacher_folds"):
    baselines.out_of_fold_logits(model, texts, labels, c=1.0, folds=5, seed=0)
  # With examples of both classes outside every fold, each example gets held-out logits.
  labels[:4] = 1
  logits = baselines.out_of_fold_logits(model, texts, labels, c=1.0, folds=2, seed=0)
  assert logits.shape == (30, 1) and np.all(np.isfinite(logits))


def test_unknown_baselines_are_errors():
  with pytest.raises(ValueError, match="tfidf_char, tfidf_word, minilm, minilm_finetuned"):
    baselines.build("bert")
  with pytest.raises(ValueError, match="Unknown TF-IDF features"):
    baselines.TfidfLogisticRegression("bytes")


def test_subsample_draws_text_label_pairs_and_leaves_small_sets_whole():
  texts, labels = _texts(50, 0)
  rng = np.random.default_rng(3)
  small, small_labels = baselines.subsample((texts, labels), 20, rng)
  assert len(small) == 20 == len(set(small)) and small_labels.shape == (20, 1)
  for text, label in zip(small, small_labels):
    assert labels[texts.index(text), 0] == label[0]
  again = baselines.subsample((texts, labels), 20, np.random.default_rng(3))[0]
  assert again == small  # Seeded.
  for cap in (None, 50, 80):  # No cap, or one the set fits: all, in order, rng untouched.
    state = rng.bit_generator.state
    whole, whole_labels = baselines.subsample((texts, labels), cap, rng)
    assert whole == texts and np.array_equal(whole_labels, labels)
    assert rng.bit_generator.state == state


@pytest.mark.slow  # Importing torch + transformers alone takes ~10-60 s here.
def test_frozen_minilm_embeddings_separate_the_classes():
  model = baselines.build("minilm")  # Loads from the installed wheel; nothing downloads.
  embeddings = model.features(["hello there", "good morning"])
  assert embeddings.shape == (2, 384)
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
  model.fit(_texts(60, 0), _texts(30, 1))
  texts, labels = _texts(30, 2)
  assert baselines.macro_auc(labels, model.decision_function(texts)) > 0.95
  assert 22_000_000 < model.num_params() < 23_000_000  # all-MiniLM-L6-v2: 22.7 M.
  assert model.size_bytes() > 80_000_000  # Its float32 weight file.
  # max_train_examples: the LR sees a subsample of the training texts' embeddings.
  sizes = []
  model = baselines.build("minilm", max_train_examples=25)
  encode = model.features
  model.features = lambda texts, fit=False: sizes.append(len(texts)) or encode(texts, fit)
  model.fit(_texts(60, 0), _texts(30, 1))
  assert sizes == [25, 30]


@pytest.mark.slow  # torch + transformers, and a few dozen fine-tuning steps.
def test_fine_tuned_minilm_learns_and_keeps_its_best_epoch():
  model = baselines.build("minilm_finetuned", epochs=2, learning_rate=1e-4, batch_size=8,
                          max_tokens=16, max_train_examples=48)
  model.fit(_texts(80, 0), _texts(30, 1))
  assert len(model.validation_aucs) == 2
  texts, labels = _texts(30, 2)
  scores = model.decision_function(texts)
  assert scores.shape == (30, 1)
  assert baselines.macro_auc(labels, scores) > 0.95
  # The kept weights are the best epoch's: validation scores reproduce its AUC.
  validation_texts, validation_labels = _texts(30, 1)
  assert baselines.macro_auc(validation_labels, model.decision_function(
      validation_texts)) == pytest.approx(max(model.validation_aucs))
  np.testing.assert_allclose(model.validation_scores,
                             model.decision_function(validation_texts), atol=1e-4)
  assert 22_000_000 < model.num_params() < 23_000_000
  with pytest.raises(ValueError, match="takes no options"):
    baselines.build("tfidf_char", epochs=2)


@pytest.mark.slow  # torch + transformers; three tiny fine-tunings per task.
def test_minilm_teacher_scores_every_set_and_the_training_texts_out_of_fold(tmp_path):
  from benchmarks import minilm_teacher  # pylint: disable=g-import-not-at-top
  data = {}
  for seed, task in enumerate(minilm_teacher.TASKS):
    data[task] = {}
    for offset, (split, count) in enumerate([("train", 40), ("validation", 16),
                                             ("test", 16)]):
      texts, labels = _texts(count, 10 * seed + offset)
      data[task][split] = {"texts": texts, "labels": labels.tolist()}
    data[task]["transfer"] = {"sources": "augmented:2", "texts": augment.augment_texts(
        data[task]["train"]["texts"], 2)}
  with lzma.open(tmp_path / minilm_teacher.TEXTS_FILE, "wt", encoding="utf-8") as f:
    json.dump(data, f)
  os.symlink(baselines.minilm_dir(), tmp_path / "model")
  tasks = list(minilm_teacher.TASKS)
  epochs = dict.fromkeys(tasks, 1)
  minilm_teacher.fit(str(tmp_path), str(tmp_path / "late"), epochs, folds=2, device="cpu",
                     deadline_s=0.0, seed=0, tasks=tasks)
  assert not os.listdir(tmp_path / "late")  # Past the deadline nothing starts.
  minilm_teacher.fit(str(tmp_path), str(tmp_path / "out"), epochs, folds=2, device="cpu",
                     deadline_s=float("inf"), seed=0, tasks=tasks)
  with pytest.raises(ValueError, match="--folds must be 0"):
    minilm_teacher.fit(str(tmp_path), str(tmp_path / "one"), epochs, folds=1, device="cpu",
                       deadline_s=float("inf"), seed=0, tasks=tasks)
  minilm_teacher.fit(str(tmp_path), str(tmp_path / "in_fold"), epochs, folds=0, device="cpu",
                     deadline_s=float("inf"), seed=0, tasks=tasks[:1])
  with np.load(tmp_path / "in_fold" / f"{tasks[0]}.npz") as f:
    assert json.loads(str(f["result"]))["folds"] == 0
    assert "logits_train_out_of_fold" not in f.files and f["logits_transfer"].shape == (80, 1)
  for task in tasks:
    with np.load(tmp_path / "out" / f"{task}.npz") as f:
      result = json.loads(str(f["result"]))
      sizes = {name: f[name].shape for name in f.files if name != "result"}
      in_fold, out_of_fold = f["logits_train"], f["logits_train_out_of_fold"]
    assert result["folds"] == 2 and len(result["validation_aucs"]) == 1
    assert result["transfer"] == "augmented:2"
    assert sizes == {"logits_validation": (16, 1), "logits_test": (16, 1),
                     "logits_test_perturbed": (16, 1), "logits_train": (40, 1),
                     "logits_train_out_of_fold": (40, 1), "logits_transfer": (80, 1)}
    assert np.all(np.isfinite(out_of_fold)) and not np.allclose(in_fold, out_of_fold)
