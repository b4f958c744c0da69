"""Training loop: learning, exact resume, NaN handling, config and checkpoint errors."""

import csv
import json
import logging
import os
import shutil
import subprocess
import sys

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seqio

from byteflax import classify
from byteflax import models
from byteflax import step
from byteflax import train
from configs import byteqrnn_toxicity
from tasks import toxicity
from tests import utils

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_csv(path, rows):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerows(rows)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
  """A separable toy task: offensive texts contain a marker word, clean ones do not."""
  rng = np.random.default_rng(0)
  words = ["apple", "river", "stone", "cloud", "green", "quiet", "table", "music"]
  root = tmp_path_factory.mktemp("toy")

  def rows(n):
    out = []
    for _ in range(n):
      label = int(rng.random() < 0.4)
      text = " ".join(rng.choice(words, size=rng.integers(3, 12)))
      if label:
        text += " dammit " + " ".join(rng.choice(words, size=2))
      out.append((text, label))
    return out

  _write_csv(root / "train.csv", rows(400))
  _write_csv(root / "test.csv", rows(100))
  return root


def _config(toy_data, **overrides):
  config = byteqrnn_toxicity.get_config("smoke")
  config.data.train_path = str(toy_data / "train.csv")
  config.data.test_path = str(toy_data / "test.csv")
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["train/loss"] for r in map(json.loads, f) if "train/loss" in r}


def test_tiny_run_learns_the_toy_task(toy_data, tmp_path):
  config = _config(toy_data, total_steps=80, **{"optim.learning_rate": 1e-2})
  report = train.train_and_evaluate(config, str(tmp_path))
  losses = _losses(tmp_path)
  assert losses[80] < 0.5 * losses[10], losses
  assert report["test"]["auc"] > 0.95
  assert report["num_params"] == train.count_params(
      train.Trainer(config).init_state().params)
  with open(tmp_path / "eval.json") as f:
    assert json.load(f)["test"]["auc"] == report["test"]["auc"]
  assert os.listdir(tmp_path / "checkpoints")
  # The run's config.json alone rebuilds its model and data (eval, export, classify use it).
  own_config = train.run_config(str(tmp_path))
  assert own_config.data.train_path == config.data.train_path
  assert train.evaluate_checkpoint(own_config, str(tmp_path))["test"]["auc"] == (
      report["test"]["auc"])
  # A copy of the run whose data files are not where they were still scores texts (the
  # model needs no data); training from it stops naming the missing file.
  copied = tmp_path.parent / f"{tmp_path.name}_copied"
  shutil.copytree(tmp_path, copied)
  with open(copied / train.CONFIG_FILE) as f:
    moved = json.load(f)
  moved["data"]["train_path"] = str(tmp_path / "gone" / "train.csv")
  moved["data"]["test_path"] = str(tmp_path / "gone" / "test.csv")
  with open(copied / train.CONFIG_FILE, "w") as f:
    json.dump(moved, f)
  # Checkpoints copied without config.json: the results saved with them may come from
  # another config, so the evaluation is computed afresh and goes beside eval.json.
  bare = tmp_path.parent / f"{tmp_path.name}_bare"
  shutil.copytree(tmp_path / "checkpoints", bare / "checkpoints")
  bare_report = train.evaluate_checkpoint(config, str(bare))
  assert bare_report["config_differences"] == [f"{train.CONFIG_FILE} is missing there"]
  assert (bare / train.eval_file(config, bare_report["config_differences"])).exists()
  assert bare_report["test"]["auc"] == pytest.approx(report["test"]["auc"], abs=1e-6)
  texts = ["apple river dammit stone", "quiet green table"]
  np.testing.assert_allclose(classify.load(str(copied)).predict(texts),
                             classify.load(str(tmp_path)).predict(texts), atol=1e-6)
  with pytest.raises(FileNotFoundError, match="gone/train.csv"):
    train.Trainer(train.run_config(str(copied)))


def test_ema_params_are_the_moving_average_of_the_params():
  model = models.build_model("byte_qrnn", 1, {"embed_dim": 16, "qrnn_features": 8,
                                               "dropout_rate": 0.0, "zoneout": 0.0})
  ids = np.random.default_rng(0).integers(3, 259, (4, 40)).astype(np.int32)
  batch = {"inputs": jnp.asarray(ids), "labels": jnp.asarray([[1.0], [0.0], [1.0], [0.0]]),
           "weights": jnp.ones(4)}
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])
  state = step.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-2),
                                 rng=jax.random.PRNGKey(0), quant_stats={},
                                 ema_params=jax.tree.map(jnp.zeros_like, params))
  train_step = jax.jit(lambda s: step.train_step(s, batch, utils.LabelsObjective(),
                                                 ema_decay=0.5)[0])
  expected = None
  for t in range(4):
    state = train_step(state)
    # The first update copies the params; then decay min(0.5, t / (t + 10)) (t: steps done).
    decay = min(0.5, t / (t + 10))
    expected = state.params if expected is None else jax.tree.map(
        lambda e, p: decay * e + (1 - decay) * p, expected, state.params)
    jax.tree.map(lambda e, a: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7),
                 expected, state.ema_params)
  assert not np.allclose(state.ema_params["head"]["kernel"], state.params["head"]["kernel"])
  assert step.model_params(state) is state.ema_params
  assert step.model_params(state.replace(ema_params={})) is state.params
  for bad in (0.0, 1.0, 1.5):
    with pytest.raises(ValueError, match="ema_decay must be in"):
      step.check_ema_decay(bad)


def test_a_run_with_ema_evaluates_exports_and_resumes_its_average(toy_data, tmp_path):
  config = _config(toy_data, total_steps=20, log_every_steps=1,
                   **{"checkpoint.every_steps": 10, "evals.validation.every_steps": 0,
                      "optim.ema_decay": 0.9})
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  trainer = train.Trainer(config)
  manager = train.checkpoint_manager(str(tmp_path / "straight"), config)
  state = train.restore_latest(manager, trainer)
  manager.close()
  # Export, classify and init_from read the average, not the trained params.
  variables, _ = train.load_variables(str(tmp_path / "straight"), trainer)
  jax.tree.map(np.testing.assert_array_equal, variables["params"],
               jax.device_get(state.ema_params))
  assert not np.allclose(variables["params"]["head"]["kernel"], state.params["head"]["kernel"])
  assert trainer.evaluate(state, "test")["auc"] == straight["test"]["auc"]
  # A resumed run continues the same average.
  shutil.copytree(tmp_path / "straight" / "checkpoints" / "10",
                  tmp_path / "resumed" / "checkpoints" / "10")
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["test"]["auc"] == pytest.approx(straight["test"]["auc"], abs=1e-6)
  # Its checkpoints hold an average, so it resumes only with one at the same decay.
  with pytest.raises(ValueError, match="optim.ema_decay is 0.9 there, None here"):
    train.train_and_evaluate(_config(toy_data, total_steps=30), str(tmp_path / "straight"))


def test_run_config_needs_a_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a byteflax.main workdir"):
    train.run_config(str(tmp_path))


def test_resumed_run_equals_uninterrupted_run(toy_data, tmp_path):
  config = _config(toy_data, total_steps=20, log_every_steps=1,
                   **{"checkpoint.every_steps": 10, "evals.validation.every_steps": 0})
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  # A run killed after its step-10 checkpoint leaves exactly that checkpoint behind.
  shutil.copytree(tmp_path / "straight" / "checkpoints" / "10",
                  tmp_path / "resumed" / "checkpoints" / "10")
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))

  straight_losses, resumed_losses = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
  assert sorted(resumed_losses) == list(range(11, 21))
  np.testing.assert_allclose([resumed_losses[s] for s in range(11, 21)],
                             [straight_losses[s] for s in range(11, 21)], rtol=1e-5)
  assert resumed["test"]["auc"] == pytest.approx(straight["test"]["auc"], abs=1e-6)


def test_finished_run_is_not_retrained(toy_data, tmp_path):
  config = _config(toy_data, total_steps=10)
  train.train_and_evaluate(config, str(tmp_path))
  lines_before = len(_losses(tmp_path))
  report = train.train_and_evaluate(config, str(tmp_path))
  assert len(_losses(tmp_path)) == lines_before
  assert report["step"] == 10


def test_a_workdir_resumes_only_its_own_run(toy_data, tmp_path):
  config = _config(toy_data, total_steps=10)
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "config.json") as f:
    written = f.read()
  other_data = _config(toy_data, total_steps=10, **{"data.test_path": None})
  with pytest.raises(ValueError, match="data.test_path is .*test.csv' there, None here"):
    train.train_and_evaluate(other_data, str(tmp_path))
  with pytest.raises(ValueError, match="model"):
    train.train_and_evaluate(_config(toy_data, **{"model.qrnn_features": 16}), str(tmp_path))
  with open(tmp_path / "config.json") as f:
    assert f.read() == written
  # A longer budget resumes the same run.
  assert train.train_and_evaluate(_config(toy_data, total_steps=12), str(tmp_path))[
      "step"] == 12


def test_eval_under_another_config_keeps_the_runs_own_records(toy_data, tmp_path):
  """--mode=eval on a new test file (or another representation_dims): its results go to
  a file of their own, computed afresh (the validation AUC saved with the checkpoint was
  computed under the run's config), and eval.json and metrics.jsonl stay as they are."""
  config = _config(toy_data, total_steps=10)
  train.train_and_evaluate(config, str(tmp_path))
  records = {"eval.json": (tmp_path / "eval.json").read_text()}
  # The run's own config: eval.json again, as it was.
  assert train.evaluate_checkpoint(config, str(tmp_path))["test"] == json.loads(
      records["eval.json"])["test"]
  assert (tmp_path / "eval.json").read_text() == records["eval.json"]
  metrics = (tmp_path / "metrics.jsonl").read_text()  # With that eval's lines.
  # Another test file: the toy test file's first 40 rows.
  lines = (toy_data / "test.csv").read_text().splitlines(keepends=True)
  new_test = utils.write_file(tmp_path / "new_test.csv", "".join(lines[:41]))
  other = _config(toy_data, total_steps=10, **{"data.test_path": new_test})
  report = train.evaluate_checkpoint(other, str(tmp_path))
  assert report["config_differences"] == [
      f"data.test_path is {str(toy_data / 'test.csv')!r} there, {new_test!r} here"]
  written = json.loads((tmp_path / train.eval_file(other, ["data.test_path"])).read_text())
  assert written == json.loads(json.dumps(report))
  assert written["test"]["auc"] != json.loads(records["eval.json"])["test"]["auc"]
  # Validation was run again, under this config, and gives the run's own numbers.
  assert written["validation"]["auc"] == pytest.approx(
      json.loads(records["eval.json"])["validation"]["auc"], abs=1e-6)
  assert (tmp_path / "eval.json").read_text() == records["eval.json"]
  assert (tmp_path / "metrics.jsonl").read_text() == metrics


def test_a_gs_workdir_keeps_every_file_in_the_bucket(toy_data, tmp_path, monkeypatch):
  """--workdir=gs://BUCKET/run, a TPU pod's shared workdir: what a run writes and reads (its
  data files, config, metrics, teacher file, checkpoints, eval.json) is in the bucket, and
  nothing lands in a local folder named gs:. A local folder stands in for the bucket behind
  etils.epath (orbax's path library, which the loop uses); orbax's and TensorBoard's own
  gs:// writers (tensorstore, tf.io.gfile) are handed the same folder and checked to be
  asked for gs://."""
  bucket = tmp_path / "bucket"
  shutil.copytree(toy_data, bucket / "data")
  monkeypatch.chdir(tmp_path)  # Where os.path would have put gs:/bucket/run.
  config = _config(toy_data, total_steps=10,
                   **{"distill.alpha": 0.5, "distill.teacher": "tfidf_char",
                      "data.train_path": "gs://bucket/data/train.csv",
                      "data.test_path": "gs://bucket/data/test.csv"})
  texts = ["apple river dammit stone", "quiet green table"]
  asked_for = []
  with utils.fake_bucket(bucket, monkeypatch) as local:

    class BucketCheckpoints(train._CheckpointManager):  # pylint: disable=protected-access

      def __init__(self, directory, *args, **kwargs):
        asked_for.append(str(directory))
        super().__init__(local(directory), *args, **kwargs)

    monkeypatch.setattr(train, "_CheckpointManager", BucketCheckpoints)
    create_writer = train.metric_writers.create_default_writer
    monkeypatch.setattr(train.metric_writers, "create_default_writer",
                        lambda logdir, **kwargs: create_writer(local(logdir), **kwargs))
    report = train.train_and_evaluate(config, "gs://bucket/run")
    own_config = train.run_config("gs://bucket/run")
    assert train.evaluate_checkpoint(own_config, "gs://bucket/run")["test"]["auc"] == (
        report["test"]["auc"])
    scores = classify.load("gs://bucket/run").predict(texts)
    # A run that starts from the bucket's run (config.init_from) reads its checkpoint there.
    finetune = _config(toy_data, total_steps=2, init_from="gs://bucket/run")
    train.train_and_evaluate(finetune, "gs://bucket/finetune")

  run = bucket / "run"
  assert {"config.json", "metrics.jsonl", "eval.json", "teacher_tfidf_char.npz"} <= {
      path.name for path in run.iterdir()}
  assert json.loads((run / "eval.json").read_text())["test"]["auc"] == report["test"]["auc"]
  assert 10 in _losses(run)
  assert os.listdir(run / "checkpoints") and os.listdir(bucket / "finetune" / "checkpoints")
  assert set(asked_for) == {"gs://bucket/run/checkpoints", "gs://bucket/finetune/checkpoints"}
  assert list(tmp_path.iterdir()) == [bucket], "a file went to local disk, not the bucket"
  # The same run read from local disk: the bucket held the model itself.
  np.testing.assert_allclose(classify.load(str(run)).predict(texts), scores, atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(toy_data, tmp_path):
  config = _config(toy_data, total_steps=40, log_every_steps=1,
                   **{"checkpoint.every_steps": 1, "optim.learning_rate": 1e30,
                      "optim.warmup_steps": 0, "optim.grad_clip_norm": 1e30})
  with pytest.raises(FloatingPointError, match="Loss became"):
    train.train_and_evaluate(config, str(tmp_path))
  losses = _losses(tmp_path)
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert saved and all(np.isfinite(losses[s]) for s in saved)


def test_corrupt_latest_checkpoint_falls_back_to_previous(toy_data, tmp_path):
  config = _config(toy_data, total_steps=20, **{"checkpoint.every_steps": 10})
  train.train_and_evaluate(config, str(tmp_path))
  latest = tmp_path / "checkpoints" / "20"
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  trainer = train.Trainer(config)
  state = train.restore_latest(train.checkpoint_manager(str(tmp_path), config), trainer)
  assert int(jax.device_get(state.step)) == 10


def _scripted_evaluate(validation_aucs):
  """Trainer.evaluate with a scripted validation AUC per step; "test" reports the step of
  the state it was given, so a test can see which checkpoint the final eval scored."""
  def evaluate(self, state, split, thresholds=None):
    del thresholds  # Unused.
    step = int(jax.device_get(state.step))
    return {"auc": validation_aucs[step] if split == "validation" else float(step),
            **{f"f1_threshold/{label}": 0.5 for label in self.label_names}}
  return evaluate


def test_the_model_is_the_checkpoint_with_the_best_validation_auc(toy_data, tmp_path,
                                                                 monkeypatch):
  monkeypatch.setattr(train.Trainer, "evaluate", _scripted_evaluate(
      {10: 0.6, 20: 0.9, 30: float("nan"), 40: 0.8}))
  config = _config(toy_data, total_steps=40, **{
      "checkpoint.every_steps": 10, "checkpoint.keep": 1, "evals.validation.every_steps": 10,
      "evals.validation.every_epochs": 0.0})
  report = train.train_and_evaluate(config, str(tmp_path))
  assert (report["step"], report["last_step"], report["selected_by"]) == (
      20, 40, "validation/auc")
  assert report["validation"]["auc"] == 0.9
  assert report["test"]["auc"] == 20.0  # The step-20 state was restored and scored.
  with open(tmp_path / "eval.json") as f:
    assert json.load(f)["step"] == 20
  # keep=1 keeps the newest (to resume from) and the selected one.
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [20, 40]
  assert train.load_variables(str(tmp_path), train.Trainer(config))[1] == 20
  # The finished run run again, and --mode=eval, choose the same checkpoint.
  assert train.train_and_evaluate(config, str(tmp_path))["test"]["auc"] == 20.0
  assert train.evaluate_checkpoint(config, str(tmp_path))["step"] == 20
  config.checkpoint.select_by = ""  # The newest is the model.
  assert train.load_variables(str(tmp_path), train.Trainer(config))[1] == 40
  assert train.evaluate_checkpoint(config, str(tmp_path))["test"]["auc"] == 40.0


def test_validation_runs_every_epoch_so_a_short_run_has_checkpoints_to_select(toy_data):
  """360 training examples at batch 16: an epoch is 23 steps."""
  trainer = train.Trainer(_config(toy_data, total_steps=80))
  assert trainer.epoch_steps == 23
  def due(**evaluation):
    trainer.config.evals.validation.update(evaluation)
    return [step for step in range(1, 81) if trainer.eval_is_due("validation", step)]
  assert due(every_steps=20, every_epochs=0.0) == [20, 40, 60, 80]
  assert due(every_steps=0, every_epochs=1.0) == [23, 46, 69]
  assert due(every_steps=0, every_epochs=0.5) == [12, 23, 35, 46, 58, 69]
  assert due(every_steps=40, every_epochs=1.0) == [23, 40, 46, 69, 80]
  assert due(every_steps=0, every_epochs=0.0) == []
  assert not trainer.eval_is_due("test", 23)


class _StoredMetrics:
  """What Selection reads of a CheckpointManager: steps and the metrics saved with them."""

  def __init__(self, metrics):
    self._metrics = metrics

  def all_steps(self):
    return sorted(self._metrics)

  def metrics(self, step):
    return self._metrics[step]


def test_selection_rule_modes_ties_nan_and_config_errors():
  stored = _StoredMetrics({
      5: None,  # A periodic checkpoint saved without an eval.
      10: {"validation": {"auc": 0.7, "loss": 0.5}},
      20: {"validation": {"auc": float("nan"), "loss": 0.4}},
      30: {"validation": {"auc": 0.7, "loss": 0.6}}})
  config = byteqrnn_toxicity.get_config("smoke")
  assert train.Selection.from_config(config).best_step(stored) == 30  # Ties: the newer.
  config.checkpoint.update(select_by="validation/loss", select_mode="min")
  assert train.Selection.from_config(config).best_step(stored) == 20
  config.checkpoint.select_mode = "max"
  assert train.Selection.from_config(config).best_step(_StoredMetrics({5: None})) is None
  config.checkpoint.select_by = ""
  assert train.Selection.from_config(config) is None
  for select_by, mode, match in (("valdation/auc", "max", "valdation"),
                                 ("validation", "max", "<eval name>/<metric>"),
                                 ("validation/auc", "best", "select_mode")):
    config.checkpoint.update(select_by=select_by, select_mode=mode)
    with pytest.raises(ValueError, match=match):
      train.Selection.from_config(config)


def test_a_selection_metric_the_eval_lacks_is_a_clear_error(toy_data, tmp_path):
  config = _config(toy_data, total_steps=5, **{"checkpoint.select_by": "validation/rocauc"})
  with pytest.raises(ValueError, match=r"reports \[.*'auc'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_model_grads_are_finite():
  model = models.build_model("byte_qrnn", 3, {"embed_dim": 16, "qrnn_features": 8})
  ids = np.random.default_rng(0).integers(3, 259, (4, 40)).astype(np.int32)
  ids[1, 10:] = 0
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), ids)

  def loss(params):
    logits = model.apply({"params": params}, ids, train=True,
                         rngs={"dropout": jax.random.PRNGKey(1)})
    return (logits ** 2).sum()

  grads = jax.jit(jax.grad(loss))(variables["params"])  # One compile, not one per op.
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert model.apply(variables, ids).shape == (4, 3)


def test_unknown_model_key_is_a_clear_error():
  with pytest.raises(ValueError, match="qrnn_layrs"):
    models.build_model("byte_qrnn", 1, {"qrnn_layrs": 2})
  with pytest.raises(ValueError, match="Unknown model_name"):
    models.build_model("byte_qrnnn", 1, {})


def _main(*args):
  return subprocess.run([sys.executable, "-m", "byteflax.main", *args], cwd=_REPO,
                        capture_output=True, text=True, timeout=300)


def test_cli_rejects_a_typoed_config_key(tmp_path):
  result = _main("--config=configs/byteqrnn_toxicity.py:smoke", f"--workdir={tmp_path}",
                 "--config.optim.learning_rat=0.1")
  assert result.returncode != 0
  assert "learning_rat" in result.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_cli_stops_on_a_bad_data_file_with_its_message_not_a_traceback(tmp_path):
  data = utils.write_file(tmp_path / "train.csv",
                          "text,label\n" + "you idiot,1\n" * 30 + "nice day,maybe\n")
  result = _main("--config=configs/byteqrnn_toxicity.py:smoke",
                 f"--workdir={tmp_path / 'run'}", f"--config.data.train_path={data}")
  assert result.returncode == 1
  assert result.stderr.rstrip().splitlines()[-1] == (
      f"Error: {data}, line 32: label 'label' is 'maybe'; expected 0/1, a probability in "
      "[0, 1] or true/false.")
  assert "Traceback" not in result.stderr


def test_cli_list_tasks():
  result = _main("--list_tasks")
  assert result.returncode == 0, result.stderr
  assert "fortunes_offensive_en" in result.stdout.split()


def test_cli_needs_a_config_to_train(tmp_path):
  result = _main(f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert "--config is required to train" in result.stderr
  assert not os.listdir(tmp_path)


def test_eval_mode_without_checkpoint_is_a_clear_error(tmp_path):
  result = _main("--config=configs/byteqrnn_toxicity.py:smoke", f"--workdir={tmp_path}",
                 "--mode=eval")
  assert result.returncode != 0
  assert "No checkpoint" in result.stderr


def test_budget_follows_the_data(toy_data):
  """360 training examples (400 minus the carved validation): epochs, then the cap."""
  config = _config(toy_data, total_steps=None, num_epochs=5, max_steps=None,
                   **{"data.batch_size": 32})
  task = train.Trainer(config).task_name
  assert train.training_steps(config, task) == (
      60, "5 epochs of 360 training examples at batch 32 = 60 steps")
  config.distill.update(alpha=0.5, transfer="perturbed", transfer_rate=0.25)
  assert train.training_steps(config, task) == (  # Epochs of the labelled examples.
      75, "5 epochs of 360 training examples at batch 32 (75% of each, the rest transfer "
      "texts: config.distill.transfer_rate) = 75 steps")
  config.distill.alpha = 0.0  # No teacher, no transfer texts.
  assert train.training_steps(config, task)[0] == 60
  config.max_steps = 25
  steps, why = train.training_steps(config, task)
  assert steps == 25 and why.endswith("capped at config.max_steps = 25 (2.08 epochs)")
  config.total_steps = 7
  assert train.training_steps(config, task) == (7, "7 steps (config.total_steps)")
  config.total_steps, config.num_epochs = None, 0
  with pytest.raises(ValueError, match="Set config.total_steps"):
    train.training_steps(config, task)


def test_budget_needs_total_steps_when_the_task_has_no_size():
  config = byteqrnn_toxicity.get_config()
  name = "test_task_of_unknown_size"
  if name not in seqio.TaskRegistry.names():  # A source that does not count its examples.
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(
        lambda split, shuffle_files, seed=None: None, splits=("train",)),
                           output_features=toxicity.OUTPUT_FEATURES)
  with pytest.raises(ValueError, match=f"{name}.*set config.total_steps"):
    train.training_steps(config, name)
  # The defaults: 1,500 steps on the 147k comments; 4.66 passes over the 13.7k fortunes,
  # 6,000 steps when transfer texts fill 2/3 of each batch, 2,000 on the labels alone.
  assert train.training_steps(config, "toxic_comments_en")[0] == 1500
  assert train.training_steps(byteqrnn_toxicity.get_config("fortunes"),
                              "fortunes_offensive_en")[0] == 6000
  assert train.training_steps(byteqrnn_toxicity.get_config("fortunes,scratch"),
                              "fortunes_offensive_en")[0] == 2000


def test_cli_stops_on_too_little_text_for_the_teacher_with_its_message(tmp_path):
  # Twenty comments without a word in common: the word-n-gram teacher that the default
  # command fits finds no n-gram in two of them.
  rows = "".join(f"word{i}a word{i}b,{i % 2}\n" for i in range(20))
  data = utils.write_file(tmp_path / "tiny.csv", "text,label\n" + rows)
  result = _main("--config=configs/byteqrnn_toxicity.py", f"--workdir={tmp_path / 'run'}",
                 f"--config.data.train_path={data}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  message = result.stderr[result.stderr.index("Error: "):].rstrip().splitlines()
  assert message[0].startswith("Error: TF-IDF on word 1-2-grams: no n-gram occurs in 2 or more")
  assert message[-1].endswith("--config.distill.alpha=0 trains on the labels alone.")


def test_checkpoints_saved_between_evals_are_kept_for_resuming_never_selected(
    toy_data, tmp_path, monkeypatch, caplog):
  monkeypatch.setattr(train.Trainer, "evaluate", _scripted_evaluate({20: 0.9, 40: 0.8}))
  config = _config(toy_data, total_steps=40, **{
      "checkpoint.every_steps": 10, "checkpoint.keep": 1, "evals.validation.every_steps": 20,
      "evals.validation.every_epochs": 0.0})
  with caplog.at_level(logging.WARNING):
    report = train.train_and_evaluate(config, str(tmp_path))
  assert (report["step"], report["last_step"]) == (20, 40)
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [20, 40]
  # Orbax warns on a save without metrics when it tracks a best; those saves store none.
  assert "did not provide metrics" not in caplog.text
