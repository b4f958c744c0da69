"""Span-corruption training through the shared Trainer, and fine-tuning from its encoder."""

import json
import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from byteflax import objectives
from byteflax import pretrained
from byteflax import train
from configs import byteqrnn_toxicity
from configs import pretrain_fortunes


def _save_initial_state(config, workdir):
  """Writes a run's step-0 checkpoint (as a pretraining run's would be) -> its params."""
  trainer = train.Trainer(config)
  state = trainer.init_state()
  with train.checkpoint_manager(workdir, config) as manager:
    manager.save(0, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()
  return jax.device_get(state.params)


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_finetune_init_picks_exactly_the_pretrained_encoder(tmp_path):
  pretrained = _save_initial_state(pretrain_fortunes.get_config("smoke"), tmp_path)
  classifier = train.Trainer(byteqrnn_toxicity.get_config("smoke"))
  assert train.is_encoder_decoder_run(str(tmp_path))
  fresh = classifier.init_state().params
  loaded = train.load_pretrained_encoder(str(tmp_path), classifier, fresh)
  loaded, fresh, source = _flat(loaded), _flat(fresh), _flat(pretrained["encoder"])
  assert set(loaded) == set(fresh)
  from_pretraining = {path for path in loaded if path.split("/")[0] in ("embed", "gbst",
                                                                       "encoder")}
  assert from_pretraining == set(source)  # Every encoder param, nothing of the decoder.
  for path in loaded:
    expected = source[path] if path in from_pretraining else fresh[path]
    np.testing.assert_array_equal(loaded[path], expected, err_msg=path)
  # The pretrained values really differ from the classifier's own initialisation.
  assert not np.array_equal(loaded["embed/embedding"], fresh["embed/embedding"])


def test_finetune_init_names_the_mismatched_param(tmp_path):
  _save_initial_state(pretrain_fortunes.get_config("smoke"), tmp_path)
  config = byteqrnn_toxicity.get_config("smoke")
  config.model.qrnn_features = 16  # The pretraining encoder has 32.
  classifier = train.Trainer(config)
  with pytest.raises(ValueError, match=r"parameter encoder/layer_0.*has shape(.|\n)*"
                     r"random weights instead, pass --config.init_from= "):
    train.load_pretrained_encoder(str(tmp_path), classifier, classifier.init_state().params)


def test_shipped_encoder_file_loads_exactly_and_checks_its_hash(tmp_path, monkeypatch):
  config = pretrain_fortunes.get_config("smoke")
  source = _save_initial_state(config, tmp_path / "pre")
  (tmp_path / "pre" / "config.json").write_text(config.to_json_best_effort())
  manifest = pretrained.write(str(tmp_path / "pre"), "tiny", out_dir=str(tmp_path / "ship"))
  path = str(tmp_path / "ship" / "tiny.npz")
  assert manifest["sha256"] == pretrained.sha256(path) and manifest["dtype"] == "float16"
  assert manifest["num_params"] == sum(v.size for v in _flat(source["encoder"]).values())
  monkeypatch.setattr(pretrained, "PRETRAINED_DIR", str(tmp_path / "ship"))
  assert pretrained.names() == ["tiny"] and pretrained.path_of("tiny") == path
  assert pretrained.path_of(str(tmp_path / "pre")) is None  # A workdir.

  finetune = byteqrnn_toxicity.get_config("smoke")
  finetune.init_from = "tiny"
  classifier = train.Trainer(finetune)
  fresh = classifier.init_state().params
  loaded, fresh = _flat(train.initial_params(classifier, fresh)), _flat(fresh)
  for path_key, value in _flat(source["encoder"]).items():  # float16, exactly as stored.
    np.testing.assert_array_equal(loaded[path_key], value.astype(np.float16).astype(np.float32))
  for path_key in set(loaded) - set(_flat(source["encoder"])):  # Pooling and head: fresh.
    np.testing.assert_array_equal(loaded[path_key], fresh[path_key])

  finetune.init_from = "tiny_q192"  # A name that is not shipped: says what is.
  with pytest.raises(FileNotFoundError, match=r"init_from='tiny_q192' is no shipped encoder "
                     r"\(\['tiny'\]\)"):
    train.initial_params(classifier, fresh)
  finetune.init_from = "tiny"
  with open(path, "ab") as f:
    f.write(b"\0")
  with pytest.raises(ValueError, match="does not match the sha256"):
    train.initial_params(classifier, classifier.init_state().params)


@pytest.mark.slow
def test_pretraining_loss_decreases_then_finetuning_starts_from_it(tmp_path):
  config = pretrain_fortunes.get_config("smoke")
  config.evals.validation.every_steps = 0
  report = train.train_and_evaluate(config, str(tmp_path / "pretrain"))
  with open(tmp_path / "pretrain" / "metrics.jsonl") as f:
    losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
  assert losses[-1] < losses[0] - 0.5, losses  # Byte entropy ~5.5 nats at the start.
  assert report["validation"]["loss"] < losses[0]
  assert 0 < report["validation"]["accuracy"] <= 1

  finetune = byteqrnn_toxicity.get_config("smoke")
  finetune.total_steps = 2
  finetune.init_from = str(tmp_path / "pretrain")
  train.train_and_evaluate(finetune, str(tmp_path / "finetune"))
  assert os.path.isdir(tmp_path / "finetune" / "checkpoints" / "2")


def test_pretraining_on_local_text_files(tmp_path):
  (tmp_path / "notes.txt").write_text("one line\nanother line\n", encoding="utf-8")
  config = pretrain_fortunes.get_config("smoke")
  config.data.train_path = str(tmp_path / "*.txt")
  objective = objectives.for_config(config)
  assert objective.task_name.startswith("span_corruption_files_")
  batch = next(objective.eval_batches("validation"))
  assert batch["inputs"].shape[1] == 64 and batch["weights"].sum() == 1


def test_the_shipped_corpus_encoder_loads_into_the_default_classifier_exactly():
  path = pretrained.path_of("byteqrnn_corpus")
  assert path and "byteqrnn_corpus" in pretrained.names()
  with open(path[:-4] + ".json") as f:
    manifest = json.load(f)
  assert pretrained.sha256(path) == manifest["sha256"]
  assert os.path.getsize(path) <= 8 * 2**20
  config = byteqrnn_toxicity.get_config()  # The default fine-tunes from it.
  assert config.init_from == "byteqrnn_corpus"
  assert byteqrnn_toxicity.get_config("scratch").init_from is None
  classifier = train.Trainer(config)
  loaded = _flat(train.initial_params(classifier, classifier.init_state().params))
  shipped = pretrained.load(path)
  assert sum(v.size for v in shipped.values()) == manifest["num_params"]
  for key, value in shipped.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_pretraining_curves_group_the_fine_tunes_by_their_start(tmp_path):
  from benchmarks import pretraining_curves  # pylint: disable=g-import-not-at-top
  def write(directory, rows, auc=None):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
    if auc is not None:
      with open(os.path.join(directory, "eval.json"), "w") as f:
        json.dump({"test": {"auc": auc}}, f)
  write(tmp_path, [{"step": 10, "train/loss": 3.0}, {"step": 20, "validation/loss": 2.5}])
  loss = [{"step": 100, "train/loss": 0.4}, {"step": 200, "train/loss": 0.3}]
  write(tmp_path / "finetune_toxic_s0", loss, auc=0.96)
  write(tmp_path / "finetune_toxic_s1", loss, auc=0.95)
  write(tmp_path / "scratch_toxic_s0", loss, auc=0.94)
  os.makedirs(tmp_path / "finetune_fortunes")  # No seed, no metrics: not a curve.
  aucs = pretraining_curves.plot(str(tmp_path), str(tmp_path / "curves.png"))
  assert aucs == {"pretrained": [0.96, 0.95], "random": [0.94]}
  assert os.path.getsize(tmp_path / "curves.png") > 0
