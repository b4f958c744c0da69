"""Distillation: the loss, teacher files, their lookup in the input pipeline, the CLI."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from byteflax import augment
from byteflax import corpus
from byteflax import distill
from byteflax import input_pipeline
from byteflax import splitter
from byteflax import step
from byteflax import train
from configs import byteqrnn_toxicity
from configs import pretrain_fortunes
from configs import transformer_toxicity

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
  """Offensive texts contain a marker word; 10% of labels are flipped, so a teacher's
  out-of-fold logits are informative but not the labels."""
  rng = np.random.default_rng(0)
  words = ["apple", "river", "stone", "cloud", "green", "quiet", "table", "music"]
  root = tmp_path_factory.mktemp("toy")
  for split, count in (("train", 300), ("test", 80)):
    with open(root / f"{split}.csv", "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["text", "label"])
      for i in range(count):
        offensive = rng.random() < 0.4
        text = " ".join(rng.choice(words, size=rng.integers(3, 10))) + f" {i}"
        writer.writerow([text + (" dammit" if offensive else ""),
                         int(offensive != (rng.random() < 0.1))])
  return root


def _config(toy_data, tmp_path, alpha=0.5):
  config = byteqrnn_toxicity.get_config("smoke")
  config.data.train_path = str(toy_data / "train.csv")
  config.data.test_path = str(toy_data / "test.csv")
  config.distill.update(alpha=alpha, teacher_path=str(tmp_path / "teacher.npz"),
                        teacher_folds=3)
  return config


def test_default_config_distills_and_its_variants_opt_out():
  assert byteqrnn_toxicity.get_config().distill.alpha > 0
  # Word n-grams teach on the 147k comments (char costs ~10x the fit), char on the fortunes.
  assert byteqrnn_toxicity.get_config().distill.teacher == "tfidf_word"
  # The fortunes learn from the fine-tuned MiniLM's shipped logits, with transfer texts.
  fortunes = byteqrnn_toxicity.get_config("fortunes")
  assert fortunes.distill.teacher == "minilm_finetuned"
  assert os.path.exists(fortunes.distill.teacher_path) and fortunes.distill.transfer
  assert fortunes.distill.feature_weight == 1.0  # The file holds the teacher's features.
  assert byteqrnn_toxicity.get_config("multilingual").distill.teacher == "tfidf_char"
  assert byteqrnn_toxicity.get_config("multilingual").distill.alpha > 0
  for variant in ("scratch", "smoke", "qat", "multilingual,scratch", "fortunes,scratch"):
    assert byteqrnn_toxicity.get_config(variant).distill.alpha == 0, variant
  scratch = byteqrnn_toxicity.get_config("fortunes,scratch")
  assert not scratch.init_from and scratch.max_steps == 2000
  # Built on it, labels only: the encoder benchmark's rivals, and pretraining (no labels).
  for config in (transformer_toxicity.get_config("funnel"), pretrain_fortunes.get_config()):
    assert config.distill.alpha == 0
  pretraining = pretrain_fortunes.get_config("smoke")
  pretraining.distill.alpha = 0.5
  with pytest.raises(ValueError, match="distils a classifier's logits"):
    train.Trainer(pretraining)


@pytest.mark.slow
def test_shipped_fortunes_teacher_holds_every_text_the_recipe_trains_on():
  """`:fortunes` reads a teacher file from the repository; training stops at the first
  text it lacks, so every training fortune and every transfer text must have a logit
  and, for the feature term, a feature row."""
  config = byteqrnn_toxicity.get_config("fortunes")
  with np.load(config.distill.teacher_path) as teacher:
    keys = set(teacher["keys"].tolist())
    assert str(teacher["task"]) == input_pipeline.resolve_task(config.data)
    assert int(teacher["max_length"]) == config.data.max_length
    assert teacher["features"].dtype == np.int8
    assert teacher["features"].shape[0] == teacher["feature_scales"].shape[0] == len(keys)
    assert np.all(np.isfinite(teacher["feature_scales"]))
    assert teacher["logits"].shape[0] == len(keys)
  train_ids, _ = input_pipeline.task_examples(config.data, "train", config.data.max_length)
  transfer_ids = input_pipeline.transfer_ids(config.data, config.distill.transfer)
  assert len(transfer_ids) == 4 * len(train_ids) + 20_000  # augmented:4,toxic_comments_en:20000
  for ids in (train_ids, transfer_ids):
    assert set(input_pipeline.teacher_keys(ids).tolist()) <= keys


def _cross_entropy_sum(logits, targets, weights):
  return np.sum(optax.sigmoid_binary_cross_entropy(logits, targets).mean(-1) * weights)


def test_distillation_loss_mixes_label_and_teacher_cross_entropies():
  rng = np.random.default_rng(0)
  logits, teacher = rng.normal(size=(2, 6, 2)).astype(np.float32)
  labels = (rng.random((6, 2)) < 0.5).astype(np.float32)
  weights = np.array([1, 1, 1, 1, 0, 0], np.float32)
  total, weight = step.distillation_loss(logits, labels, teacher, weights, 0.0, 3.0)
  np.testing.assert_allclose(total, _cross_entropy_sum(logits, labels, weights), rtol=1e-6)
  assert weight == 4
  # At T = 1, the mix equals cross-entropy with the mixed target (it is linear in the target).
  mixed = 0.7 * labels + 0.3 * jax.nn.sigmoid(teacher)
  total, _ = step.distillation_loss(logits, labels, teacher, weights, 0.3, 1.0)
  np.testing.assert_allclose(total, _cross_entropy_sum(logits, mixed, weights), rtol=1e-5)
  # The teacher term at temperature T: T^2 x cross-entropy of the softened distributions,
  # whose gradient vanishes where the student matches the teacher.
  total, _ = step.distillation_loss(logits, labels, teacher, weights, 1.0, 2.0)
  np.testing.assert_allclose(
      total, 4 * _cross_entropy_sum(logits / 2, jax.nn.sigmoid(teacher / 2), weights),
      rtol=1e-5)
  grad = jax.grad(lambda z: step.distillation_loss(z, labels, teacher, weights, 1.0, 2.0)[0])
  np.testing.assert_allclose(grad(jnp.asarray(teacher)), 0, atol=1e-6)


def test_logit_mse_teacher_term_matches_half_the_squared_log_odds_difference():
  rng = np.random.default_rng(1)
  logits, teacher = (4 * rng.normal(size=(2, 5, 1))).astype(np.float32)
  labels = (rng.random((5, 1)) < 0.5).astype(np.float32)
  weights = np.array([1, 0, 1, 1, 1], np.float32)
  total, _ = step.distillation_loss(logits, labels, teacher, weights, 0.25, 3.0,
                                    soft_loss="logit_mse")
  expected = sum(weights[i] * (0.75 * float(optax.sigmoid_binary_cross_entropy(
      logits[i, 0], labels[i, 0])) + 0.25 * 0.5 * float(logits[i, 0] - teacher[i, 0])**2)
                 for i in range(5))
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  # Unlike the cross-entropy term, its gradient keeps the log-odds gap where both sides
  # are confident (teacher 8, student 5: sigmoid gradient ~0.006, here 3).
  confident = lambda loss: jax.grad(lambda z: step.distillation_loss(
      z, np.ones((1, 1), np.float32), np.full((1, 1), 8.0, np.float32),
      np.ones(1, np.float32), 1.0, 1.0, soft_loss=loss)[0])(jnp.full((1, 1), 5.0))
  np.testing.assert_allclose(confident("logit_mse"), [[-3.0]], rtol=1e-6)
  assert abs(float(confident("cross_entropy")[0, 0])) < 0.01


def test_distillation_settings_reject_an_unknown_soft_loss():
  config = ml_collections.ConfigDict(dict(distill=dict(alpha=0.5, temperature=1.0,
                                                       soft_loss="kl")))
  with pytest.raises(ValueError, match="soft_loss 'kl'"):
    step.distillation_settings(config)
  config.distill.soft_loss = "logit_mse"
  assert step.distillation_settings(config)["distill_soft_loss"] == "logit_mse"


def _naive_similarity_loss(features, teacher_features, weights):
  real = weights > 0

  def cosines(x):
    x = x[real] - x[real].mean(0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return [[float(a @ b) for b in x] for a in x]

  student, teacher = cosines(features), cosines(teacher_features)
  n = len(student)
  return sum((student[i][j] - teacher[i][j])**2 for i in range(n) for j in range(n)) / n**2


def test_similarity_loss_compares_the_batchs_cosine_similarities():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(7, 5)).astype(np.float32)
  teacher = rng.normal(size=(7, 9)).astype(np.float32)
  weights = np.array([1, 1, 1, 0, 1, 1, 0], np.float32)
  loss = step.similarity_loss(features, teacher, weights)
  np.testing.assert_allclose(loss, _naive_similarity_loss(features, teacher, weights),
                             rtol=1e-5)
  assert float(loss) > 0.05
  # Padding rows do not count, whatever they hold.
  padded = features.copy()
  padded[[3, 6]] = 1e3
  np.testing.assert_allclose(step.similarity_loss(padded, teacher, weights), loss, rtol=1e-6)
  # Only similarities count: a shifted, rotated, scaled teacher is the same teacher, and a
  # student that is one is a perfect copy, at any width.
  rotation = np.linalg.qr(rng.normal(size=(9, 9)))[0]
  moved = (3.0 * teacher @ rotation + 7.0).astype(np.float32)
  np.testing.assert_allclose(step.similarity_loss(features, moved, weights), loss, rtol=1e-4)
  widened = np.concatenate([teacher, np.zeros((7, 4), np.float32)], axis=1) @ np.linalg.qr(
      rng.normal(size=(13, 13)))[0]
  assert float(step.similarity_loss(widened.astype(np.float32), teacher, weights)) < 1e-10
  grad = jax.grad(step.similarity_loss)(jnp.asarray(features), teacher, weights)
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0
  np.testing.assert_array_equal(np.asarray(grad)[[3, 6]], 0)
  # A row at the batch mean (its centred vector zero) keeps the gradient finite.
  at_mean = np.round(4 * features)  # Small integers: the means below are exact.
  at_mean[1] = at_mean[[0, 2, 4, 5]].mean(0)  # Then also the mean of all five real rows.
  assert np.isfinite(jax.grad(step.similarity_loss)(jnp.asarray(at_mean), teacher,
                                                    weights)).all()


def test_distillation_settings_check_the_feature_weight():
  config = ml_collections.ConfigDict(dict(distill=dict(alpha=0.5, temperature=1.0,
                                                       feature_weight=0.0)))
  assert "distill_feature_weight" not in step.distillation_settings(config)
  config.distill.feature_weight = 2.0
  assert step.distillation_settings(config)["distill_feature_weight"] == 2.0
  config.distill.feature_weight = -1.0
  with pytest.raises(ValueError, match="feature_weight must be >= 0"):
    step.distillation_settings(config)
  config.distill.update(alpha=0.0, feature_weight=2.0)  # No teacher: not silently ignored.
  with pytest.raises(ValueError, match="needs a teacher"):
    step.distillation_settings(config)


def _add_features(config, dims=3):
  """Rewrites the config's teacher file with features `[n, dims]` made from its logits;
  returns them by key."""
  ids = distill.split_texts(config, "train")[0]
  with np.load(config.distill.teacher_path) as teacher:
    by_key = dict(zip(teacher["keys"], teacher["logits"]))
    task, max_length = str(teacher["task"]), int(teacher["max_length"])
  logits = np.stack([by_key[key] for key in input_pipeline.teacher_keys(ids)])
  features = np.concatenate([logits * (d + 1) + d for d in range(dims)], axis=1)
  distill.save_teacher(config.distill.teacher_path, ids, logits, task=task,
                       max_length=max_length, teacher="tfidf_word", summary={},
                       features=features)
  with np.load(config.distill.teacher_path) as teacher:
    assert teacher["features"].dtype == np.int8
    stored = input_pipeline.dequantize_rows(teacher["features"], teacher["feature_scales"])
    by_key = dict(zip(teacher["keys"], stored))
  for key, row in zip(input_pipeline.teacher_keys(ids), features):
    np.testing.assert_allclose(by_key[key], row, atol=np.abs(row).max() / 254 + 1e-6)
  return by_key


def test_rows_quantize_to_int8_within_half_a_step():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(50, 16)).astype(np.float32) * rng.uniform(0.01, 100, (50, 1))
  features[3] = 0.0  # An all-zero row stays zero, not NaN.
  codes, scales = input_pipeline.quantize_rows(features)
  assert codes.dtype == np.int8 and scales.shape == (50, 1)
  restored = input_pipeline.dequantize_rows(codes, scales)
  assert np.all(np.abs(restored - features) <= scales / 2 * (1 + 1e-6))
  np.testing.assert_array_equal(restored[3], 0.0)
  assert np.all(np.abs(codes).max(axis=1)[np.arange(50) != 3] == 127)  # Full range per row.


def test_teacher_features_are_read_back_with_the_logits(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  distill.write_teacher(config, config.distill.teacher_path)
  task_name = train.Trainer(config).task_name
  batches = lambda: input_pipeline.train_batches(
      task_name, config.data, seed=0, teacher_features=True,
      teacher_path=config.distill.teacher_path)
  with pytest.raises(ValueError, match=r"holds no \(int8\) teacher features"):
    next(batches())
  features = _add_features(config)
  batch = next(batches())
  assert batch["teacher_features"].shape == (config.data.batch_size, 3)
  for key, row in zip(input_pipeline.teacher_keys(batch["inputs"]), batch["teacher_features"]):
    np.testing.assert_array_equal(row, features[key])


@pytest.mark.slow
def test_train_step_is_unchanged_without_distillation(toy_data, tmp_path):
  """alpha = 0 (`:scratch`) is the plain label loss, teacher logits or not."""
  plain = train.Trainer(_config(toy_data, tmp_path, alpha=0.0))
  distilled = train.Trainer(_config(toy_data, tmp_path))  # alpha 0.5
  batch = next(input_pipeline.train_batches(plain.task_name, plain.config.data, seed=0))
  with_teacher = {**batch, "teacher_logits": np.full_like(batch["labels"], 5.0)}
  # Steps donate their state: each gets a fresh (identical, seeded) one.
  state, metrics = plain.run_train_step(plain.init_state(), batch)
  ignored, ignored_metrics = plain.run_train_step(plain.init_state(), with_teacher)
  assert float(metrics["loss"]) == float(ignored_metrics["loss"])
  jax.tree.map(np.testing.assert_array_equal, state.params, ignored.params)
  _, distilled_metrics = distilled.run_train_step(distilled.init_state(), with_teacher)
  assert float(distilled_metrics["loss"]) != float(metrics["loss"])


@pytest.mark.slow
def test_feature_term_adds_its_weight_times_the_similarity_loss(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  distill.write_teacher(config, config.distill.teacher_path)
  _add_features(config)
  batch = next(input_pipeline.train_batches(train.Trainer(config).task_name, config.data,
                                            seed=0, teacher_features=True,
                                            teacher_path=config.distill.teacher_path))
  losses = {}
  for weight in (0.0, 1.0, 2.0):
    config.distill.feature_weight = weight
    trainer = train.Trainer(config)
    losses[weight] = float(trainer.run_train_step(trainer.init_state(), batch)[1]["loss"])
  assert losses[1.0] - losses[0.0] > 1e-3
  np.testing.assert_allclose(losses[2.0] - losses[0.0], 2 * (losses[1.0] - losses[0.0]),
                             rtol=1e-3)
  # The training loop hands the features to the step.
  config.total_steps = 20
  report = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(report["test"]["loss"])


def test_teacher_file_is_read_back_for_every_training_example(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  summary = distill.write_teacher(config, config.distill.teacher_path)
  ids, texts, labels = distill.split_texts(config, "train")
  assert summary["examples"] == len(ids) == 270  # 300 minus the carved 10% validation.
  # 10% of labels flipped caps the AUC near 0.82; 0.5 would be an uninformative teacher.
  assert summary["teacher_test_auc"] > 0.75 and summary["teacher_train_out_of_fold_auc"] > 0.75
  assert texts[0].split()[0] in ("apple", "river", "stone", "cloud", "green", "quiet",
                                 "table", "music")
  with np.load(config.distill.teacher_path) as teacher:
    by_key = dict(zip(teacher["keys"], teacher["logits"]))
    # Out of fold: not the labels themselves, but ranked by them.
    logits = np.stack([by_key[key] for key in input_pipeline.teacher_keys(ids)])
  assert 0.8 < distill.baselines.macro_auc(labels, logits) < 1.0

  batches = input_pipeline.train_batches(train.Trainer(config).task_name, config.data, seed=1,
                                         teacher_path=distill.prepare_teacher(config, "unused"))
  for _ in range(20):  # More than one epoch of the 270 examples.
    batch = next(batches)
    keys = input_pipeline.teacher_keys(batch["inputs"])
    for key, teacher_logits in zip(keys, batch["teacher_logits"]):
      np.testing.assert_array_equal(teacher_logits, by_key[key])


def test_training_texts_cut_to_train_max_length_keep_their_teacher_logits(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  distill.write_teacher(config, config.distill.teacher_path)
  ids, _, _ = distill.split_texts(config, "train")
  with np.load(config.distill.teacher_path) as teacher:
    by_key = dict(zip(teacher["keys"], teacher["logits"]))
  logits = np.stack([by_key[key] for key in input_pipeline.teacher_keys(ids)])
  config.data.train_max_length = 24
  batches = input_pipeline.train_batches(train.Trainer(config).task_name, config.data, seed=0,
                                         teacher_path=config.distill.teacher_path)
  cut = 0
  for _ in range(20):  # More than one epoch of the 270 examples.
    batch = next(batches)
    assert batch["inputs"].shape[1] == 24  # smoke's buckets, (64, 128), give way to 24.
    for row, teacher_logits in zip(batch["inputs"][batch["weights"] > 0],
                                   batch["teacher_logits"]):
      length = int((row != 0).sum())
      assert row[length - 1] == splitter.EOS_ID
      # The training texts it may be: the same ids, or (cut) the same first 23.
      same = (ids[:, :length - 1] == row[:length - 1]).all(axis=1)
      if length < 24:
        same &= ids[:, length - 1] == splitter.EOS_ID
      else:
        cut += 1
      assert same.any()
      assert any(np.array_equal(teacher_logits, candidate) for candidate in logits[same])
  assert cut > 100  # Most toy texts are longer than 23 bytes.
  for length in (1, 129):  # smoke's max_length is 128.
    config.data.train_max_length = length
    with pytest.raises(ValueError, match=r"train_max_length must be in \[2, data.max_length"):
      next(input_pipeline.train_batches(train.Trainer(config).task_name, config.data, seed=0))


def test_transfer_texts_are_taught_by_the_teacher_alone(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  config.distill.transfer = "perturbed"
  config.distill.transfer_rate = 0.25
  transfer = input_pipeline.transfer_ids(config.data, "perturbed")
  ids, texts, _ = distill.split_texts(config, "train")
  assert transfer.shape == ids.shape
  np.testing.assert_array_equal(transfer, input_pipeline.transfer_ids(config.data, "perturbed"))
  perturbed = input_pipeline.texts_from_ids(transfer)
  changed = sum(a != b for a, b in zip(texts, perturbed))
  assert len(texts) / 2 < changed < len(texts)  # Most texts have a word of >= 3 letters.
  summary = distill.write_teacher(config, config.distill.teacher_path)
  assert summary["transfer_examples"] == len(transfer) and summary["examples"] == len(ids)
  with np.load(config.distill.teacher_path) as teacher:
    by_key = dict(zip(teacher["keys"], teacher["logits"]))
  transfer_keys = set(input_pipeline.teacher_keys(transfer)) - set(
      input_pipeline.teacher_keys(ids))
  assert transfer_keys <= set(by_key)

  batches = input_pipeline.train_batches(
      train.Trainer(config).task_name, config.data, seed=0,
      teacher_path=config.distill.teacher_path, transfer="perturbed", transfer_rate=0.25)
  label_weights, seen_transfer = [], 0
  for _ in range(30):
    batch = next(batches)
    real = batch["weights"] > 0
    label_weights.append(batch["label_weights"][real])
    for key, weight, labels, teacher_logits in zip(
        input_pipeline.teacher_keys(batch["inputs"]), batch["label_weights"],
        batch["labels"], batch["teacher_logits"]):
      np.testing.assert_array_equal(teacher_logits, by_key[key])
      if weight == 0:  # A transfer text: no label, only the teacher.
        assert not labels.any()
        seen_transfer += key in transfer_keys
  share = 1 - np.concatenate(label_weights).mean()
  assert 0.15 < share < 0.35 and seen_transfer > 0
  # The label term is off for transfer texts: their labels do not change the loss.
  rng = np.random.default_rng(0)
  logits, teacher = rng.normal(size=(2, 4, 1)).astype(np.float32)
  label_weights = np.array([1, 0, 1, 0], np.float32)
  losses = [step.distillation_loss(logits, labels, teacher, np.ones(4, np.float32), 0.5, 1.0,
                                    label_weights)[0]
            for labels in (np.array([[1], [0], [1], [0]], np.float32),
                           np.array([[1], [1], [1], [1]], np.float32))]
  assert float(losses[0]) == float(losses[1])


def test_augmented_transfer_texts_are_k_copies_of_the_training_texts(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  ids, texts, _ = distill.split_texts(config, "train")
  transfer = input_pipeline.transfer_ids(config.data, "augmented:3,perturbed")
  assert transfer.shape == (4 * len(ids), ids.shape[1])
  np.testing.assert_array_equal(transfer[:len(ids)],
                                input_pipeline.transfer_ids(config.data, "augmented"))
  copies = input_pipeline.texts_from_ids(transfer[:3 * len(ids)])
  assert copies == augment.augment_texts(texts, 3, seed=input_pipeline.TRANSFER_AUGMENT_SEED)
  assert sum(a != b for a, b in zip(copies, texts * 3)) > len(copies) / 2


def test_a_tasks_transfer_texts_are_a_seeded_sample_of_its_training_texts(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  task_name = input_pipeline.resolve_task(config.data)
  every = input_pipeline.transfer_ids(config.data, task_name)
  assert len(every) == len(distill.split_texts(config, "train")[0])
  rows = lambda ids: {tuple(row) for row in ids}
  fifty = input_pipeline.transfer_ids(config.data, f"{task_name}:50")
  assert len(fifty) == 50 and rows(fifty) <= rows(every)
  np.testing.assert_array_equal(fifty, input_pipeline.transfer_ids(config.data,
                                                                   f"{task_name}:50"))
  assert rows(input_pipeline.transfer_ids(config.data, f"{task_name}:20")) < rows(fifty)
  with pytest.raises(ValueError, match=f"has {len(every)} texts, fewer than 100,000"):
    input_pipeline.transfer_ids(config.data, f"{task_name}:100000")
  with pytest.raises(ValueError, match="number of texts must be an integer >= 1"):
    input_pipeline.transfer_ids(config.data, f"{task_name}:0")


def test_corpus_transfer_texts_are_new_english_documents(toy_data, tmp_path, monkeypatch):
  """`corpus_<source>`: a corpus source's English documents, none a text of the task (in
  any split, up to whitespace) or a held-out text of another task; each once."""
  config = _config(toy_data, tmp_path)
  train_text = distill.split_texts(config, "train")[1][0]
  test_text = distill.split_texts(config, "test")[1][0]
  documents = [("en", "A fortune the task lacks.\n\t\t-- Anon"), ("de", "Ein Glückskeks."),
               ("en", " \n"), ("en", train_text.replace(" ", "\n  ", 1)), ("en", test_text),
               ("en", "Held out elsewhere."), ("en", "Another new one."),
               ("en", "A fortune the task lacks.\n\t\t-- Anon")]
  monkeypatch.setattr(corpus, "_source_documents", lambda source, workers: iter(documents))
  monkeypatch.setattr(corpus, "held_out_keys",
                      lambda: {corpus.dedup_key("Held  out elsewhere.")})
  transfer = input_pipeline.transfer_ids(config.data, "corpus_fortunes")
  assert input_pipeline.texts_from_ids(transfer) == [
      "A fortune the task lacks.\n\t\t-- Anon", "Another new one."]
  np.testing.assert_array_equal(
      input_pipeline.transfer_ids(config.data, "corpus_fortunes:1"),
      input_pipeline.transfer_ids(config.data, "corpus_fortunes:1"))
  with pytest.raises(ValueError, match="'corpus_fortunes' has 2 texts, fewer than 3"):
    input_pipeline.transfer_ids(config.data, "corpus_fortunes:3")
  with pytest.raises(ValueError, match="no corpus source 'tweets'"):
    input_pipeline.transfer_ids(config.data, "corpus_tweets")

  def not_installed(source, workers):
    raise FileNotFoundError("/usr/share/dictd/gcide.dict.dz")
  monkeypatch.setattr(corpus, "_source_documents", not_installed)
  with pytest.raises(FileNotFoundError, match="install: apt-get install dict-gcide"):
    input_pipeline.transfer_ids(config.data, "corpus_gcide")


def test_transfer_errors(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  with pytest.raises(ValueError, match="Unknown transfer source 'tweets'"):
    input_pipeline.transfer_ids(config.data, "perturbed,tweets")
  for source in ("augmented:0", "augmented:x", "augmented:-1"):
    with pytest.raises(ValueError, match="number of copies must be an integer >= 1"):
      input_pipeline.transfer_ids(config.data, source)
  with pytest.raises(ValueError, match="'perturbed' takes no count"):
    input_pipeline.transfer_ids(config.data, "perturbed:2")
  task_name = train.Trainer(config).task_name
  with pytest.raises(ValueError, match="need a teacher"):
    next(input_pipeline.train_batches(task_name, config.data, seed=0, transfer="perturbed"))
  distill.write_teacher(config, config.distill.teacher_path)  # Without transfer texts.
  with pytest.raises(Exception, match="has no teacher logits"):
    batches = input_pipeline.train_batches(task_name, config.data, seed=0,
                                           teacher_path=config.distill.teacher_path,
                                           transfer="perturbed", transfer_rate=0.9)
    for _ in range(5):
      next(batches)


def test_examples_with_the_same_ids_share_one_mean_teacher_value(toy_data, tmp_path):
  keys, logits = distill._mean_per_key(np.array([5, 3, 5, 7]),
                                       np.array([[1.0], [2.0], [4.0], [8.0]], np.float32))
  np.testing.assert_array_equal(keys, [3, 5, 7])
  np.testing.assert_array_equal(logits, [[2.0], [2.5], [8.0]])

  with open(toy_data / "train.csv") as f:
    lines = f.readlines()
  duplicated = tmp_path / "train.csv"
  duplicated.write_text("".join(lines + lines[1:41]))  # 40 exact duplicates.
  config = _config(toy_data, tmp_path)
  config.data.train_path = str(duplicated)
  summary = distill.write_teacher(config, config.distill.teacher_path)
  ids = distill.split_texts(config, "train")[0]
  unique = len(set(map(tuple, ids)))
  assert summary["examples"] == len(ids) and summary["examples_sharing_ids"] == len(ids) - unique
  assert summary["examples_sharing_ids"] > 20  # Most duplicates stay in the training split.
  with np.load(config.distill.teacher_path) as teacher:
    assert teacher["keys"].dtype == np.int64 and len(set(teacher["keys"])) == unique
  batches = input_pipeline.train_batches(train.Trainer(config).task_name, config.data, seed=0,
                                         teacher_path=config.distill.teacher_path)
  assert np.isfinite(next(batches)["teacher_logits"]).all()


def test_prepare_teacher_fits_into_the_workdir_once(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  config.distill.teacher_path = None
  workdir = tmp_path / "run"
  path = workdir / "teacher_tfidf_word.npz"
  assert distill.prepare_teacher(config, str(workdir)) == str(path)
  assert [p.name for p in workdir.iterdir()] == [path.name]  # No ".partial" left behind.
  with np.load(path) as teacher:
    assert teacher["logits"].shape == (270, 1)
  written = path.stat().st_mtime_ns
  # A restarted run reuses the file rather than fitting again.
  assert distill.prepare_teacher(config, str(workdir)) == str(path)
  assert path.stat().st_mtime_ns == written


def test_prepare_teacher_averages_the_fitted_teacher_with_named_files(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  given = config.distill.teacher_path
  char = config.copy_and_resolve_references()
  char.distill.teacher = "tfidf_char"
  summary = distill.write_teacher(char, given)
  config.distill.average_with = given
  with pytest.raises(ValueError, match="byteflax.distill --average"):
    distill.prepare_teacher(config, str(tmp_path / "both"))  # teacher_path and average_with.
  config.distill.teacher_path = None
  workdir = tmp_path / "run"
  path = distill.prepare_teacher(config, str(workdir))
  assert path == str(workdir / "teacher_tfidf_word_averaged.npz")
  with np.load(path) as mean, np.load(given) as other, np.load(
      workdir / "teacher_tfidf_word.npz") as fitted:
    assert str(mean["teacher"]) == "tfidf_word+tfidf_char" and len(mean["keys"]) == 270
    np.testing.assert_array_equal(mean["keys"], fitted["keys"])
    assert not np.allclose(fitted["logits"], other["logits"])
    np.testing.assert_allclose(mean["logits"], (fitted["logits"] + other["logits"]) / 2,
                               rtol=1e-6)
  assert summary["examples"] == 270
  # A restart with the same files reuses the mean; with other files it averages again.
  written = os.stat(path).st_mtime_ns
  assert distill.prepare_teacher(config, str(workdir)) == path
  assert os.stat(path).st_mtime_ns == written
  copy = tmp_path / "teacher_copy.npz"
  shutil.copyfile(given, copy)
  config.distill.average_with = f"{given},{copy}"
  distill.prepare_teacher(config, str(workdir))
  with np.load(path) as mean, np.load(given) as other, np.load(
      workdir / "teacher_tfidf_word.npz") as fitted:
    np.testing.assert_allclose(mean["logits"], (fitted["logits"] + 2 * other["logits"]) / 3,
                               rtol=1e-6)


def test_prepare_teacher_without_distillation_or_with_a_given_file(toy_data, tmp_path):
  plain = _config(toy_data, tmp_path, alpha=0.0)
  plain.distill.teacher_path = None
  assert distill.prepare_teacher(plain, str(tmp_path / "plain")) is None
  assert not (tmp_path / "plain").exists()
  given = _config(toy_data, tmp_path)  # teacher_path names a file not written yet.
  with pytest.raises(FileNotFoundError, match="python -m byteflax.distill"):
    distill.prepare_teacher(given, str(tmp_path / "given"))
  distill.write_teacher(given, given.distill.teacher_path)
  assert distill.prepare_teacher(given, str(tmp_path / "given")) == str(tmp_path / "teacher.npz")
  assert not (tmp_path / "given").exists()  # Read from where it is, nothing fitted.


def test_teacher_file_errors(toy_data, tmp_path):
  config = _config(toy_data, tmp_path)
  distill.write_teacher(config, config.distill.teacher_path)
  config.data.max_length = 64  # Other byte ids: the file does not fit this config.
  task_name = train.Trainer(config).task_name
  with pytest.raises(ValueError, match="at max_length 128"):
    next(input_pipeline.train_batches(task_name, config.data, seed=0,
                                      teacher_path=config.distill.teacher_path))
  config.distill.alpha = 1.5
  with pytest.raises(ValueError, match="0 < alpha <= 1"):
    train.Trainer(config)


def test_average_teachers_is_the_mean_over_shared_examples(tmp_path):
  ids = np.array([[10, 1, 0], [11, 12, 1], [13, 1, 0], [14, 15, 1]], np.int32)
  keys = input_pipeline.teacher_keys(ids)
  first, second, mean = (str(tmp_path / name) for name in ("a.npz", "b.npz", "mean.npz"))
  distill.save_teacher(first, ids, np.array([[1.0], [2.0], [3.0], [4.0]]), "t", 3, "x", {})
  distill.save_teacher(second, ids[1:], np.array([[-2.0], [5.0], [0.0]]), "t", 3, "y", {})
  summary = distill.average_teachers([first, second], mean, "t", 3)
  assert summary["teacher"] == "x+y" and summary["examples"] == 3
  assert summary["averaged"][first]["dropped"] == 1
  with np.load(mean) as f:
    logits_of = dict(zip(f["keys"].tolist(), f["logits"][:, 0].tolist()))
  assert logits_of == {keys[1]: 0.0, keys[2]: 4.0, keys[3]: 2.0}
  with pytest.raises(ValueError, match="for task 't' at max_length 3, not 'u'"):
    distill.average_teachers([first, second], mean, "u", 3)
  with pytest.raises(ValueError, match="two or more"):
    distill.average_teachers([first], mean, "t", 3)
  with pytest.raises(ValueError, match="named twice"):
    distill.average_teachers([first, second, first], mean, "t", 3)


@pytest.mark.slow
def test_cli_writes_the_teacher_then_trains_the_student(toy_data, tmp_path):
  flags = ["--config=configs/byteqrnn_toxicity.py:smoke", "--config.distill.alpha=0.5",
           "--config.distill.teacher_folds=3",
           f"--config.data.train_path={toy_data / 'train.csv'}",
           f"--config.data.test_path={toy_data / 'test.csv'}",
           "--config.optim.learning_rate=0.01", "--config.total_steps=60"]

  def run(module, *args):
    result = subprocess.run([sys.executable, "-m", module, *flags, *args], cwd=_REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result

  # Two commands: the teacher to a file of the user's choice, then the student reads it.
  teacher = f"--config.distill.teacher_path={tmp_path / 'teacher.npz'}"
  assert json.loads(run("byteflax.distill", teacher).stdout)["examples"] == 270
  # Writing over a teacher file (a shipped one, say) takes --overwrite.
  again = subprocess.run([sys.executable, "-m", "byteflax.distill", *flags, teacher],
                         cwd=_REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "pass --overwrite" in again.stderr
  run("byteflax.main", teacher, f"--workdir={tmp_path / 'student'}")
  # One command, as the default config runs: main fits the teacher into the workdir first.
  fitted = run("byteflax.main", f"--workdir={tmp_path / 'one'}")
  assert "Teacher written" in fitted.stderr
  assert (tmp_path / "one" / "teacher_tfidf_word.npz").exists()
  for workdir in ("student", "one"):
    with open(tmp_path / workdir / "eval.json") as f:
      assert json.load(f)["test"]["auc"] > 0.75, workdir  # 10% of test labels are flipped.
