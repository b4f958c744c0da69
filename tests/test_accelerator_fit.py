"""benchmarks/accelerator_fit.py: the GPU path sees the data as the CPU trainer does, and
what it trains evaluates the same through byteflax.main."""

import json

from flax import serialization
from flax import traverse_util
import numpy as np
import pytest

from benchmarks import accelerator_fit
from byteflax import splitter
from configs import byteqrnn_toxicity


def _ids(texts, length=16):
  return splitter.ByteSplitter(length).encode_batch(texts, length)[0]


def test_split_rebuilds_the_ids_bundle_stored(tmp_path):
  ids = _ids(["", "abc", "día 😀", "x" * 40])  # Empty, multi-byte, truncated to 15 + EOS.
  path = tmp_path / "split.npz"
  np.savez(path, **accelerator_fit._ragged(ids), labels=np.eye(4, 1, dtype=np.float32))
  split = accelerator_fit.Split(str(path), 16)
  np.testing.assert_array_equal(split.ids, ids)
  np.testing.assert_array_equal(split.lengths, (ids != splitter.PAD_ID).sum(axis=1))
  assert len(split) == 4 and split.labels.shape == (4, 1) and split.teacher_logits is None


def test_split_cut_shorter_is_the_ids_at_that_length(tmp_path):
  """Training texts cut to data.train_max_length: as the CPU pipeline and splitter cut."""
  texts = ["", "abc", "día 😀 día", "x" * 40]
  path = tmp_path / "split.npz"
  np.savez(path, **accelerator_fit._ragged(_ids(texts, 16)), labels=np.zeros((4, 1)))
  split = accelerator_fit.Split(str(path), 8)
  np.testing.assert_array_equal(split.ids, _ids(texts, 8))
  np.testing.assert_array_equal(split.lengths, [1, 4, 8, 8])


def test_epoch_batches_cover_every_example_once_within_length_buckets(tmp_path):
  lengths = np.random.default_rng(0).integers(0, 60, size=101)
  ids = _ids(["y" * n for n in lengths], 64)
  np.savez(tmp_path / "s.npz", **accelerator_fit._ragged(ids),
           labels=np.zeros((101, 1), np.float32))
  split = accelerator_fit.Split(str(tmp_path / "s.npz"), 64)
  boundaries = [16, 32, 64]
  batches = accelerator_fit._epoch_batches(split, boundaries, 8, np.random.default_rng(1))
  np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(101))
  for rows in batches:
    assert 1 <= len(rows) <= 8
    buckets = {accelerator_fit._boundary(int(n), boundaries) for n in split.lengths[rows]}
    assert len(buckets) == 1  # A batch pads to its bucket, as tf.data's bucketing does.
  again = accelerator_fit._epoch_batches(split, boundaries, 8, np.random.default_rng(2))
  assert [list(b) for b in again] != [list(b) for b in batches]  # Reshuffled per epoch.


@pytest.mark.slow
def test_bundle_fit_report_and_the_workdir_evaluates_the_same(tmp_path):
  from byteflax import train  # pylint: disable=g-import-not-at-top
  config = byteqrnn_toxicity.get_config("smoke")
  config.total_steps = 6
  config.distill.alpha = 0.5  # The teacher (TF-IDF) is fitted into the bundle.
  config.optim.ema_decay = 0.9  # The kept model is the average; the workdir's too.
  bundle_dir, fit_dir = str(tmp_path / "bundle"), str(tmp_path / "fit")
  accelerator_fit.bundle(config, bundle_dir, "distilled")
  scratch = config.copy_and_resolve_references()
  scratch.distill.alpha = 0.0
  accelerator_fit.bundle(scratch, bundle_dir, "scratch")  # Reuses the splits.
  other = config.copy_and_resolve_references()
  other.data.max_length = 64
  with pytest.raises(ValueError, match="splits of another config.data"):
    accelerator_fit.bundle(other, bundle_dir, "other")
  accelerator_fit.fit(bundle_dir, "distilled", fit_dir, [0, 1], deadline_s=None)
  results = json.loads((tmp_path / "fit" / "results.json").read_text())
  assert results["trained_steps"] == 6 and not results["stopped_early"]
  seeds = results["runs"]
  assert [run["seed"] for run in seeds] == [0, 1]
  assert seeds[0]["best"]["test_auc"] != seeds[1]["best"]["test_auc"]  # Seeds differ.

  accelerator_fit.report(fit_dir, str(tmp_path / "report"), str(tmp_path / "workdirs"))
  summary = json.loads((tmp_path / "report" / "results.json").read_text())["summary"]
  assert summary["best"]["test_auc"]["min"] <= summary["best"]["test_auc"]["mean"]
  assert (tmp_path / "report" / accelerator_fit.CURVE_FILE).stat().st_size > 0
  # The CPU trainer's evaluation of the written workdir gives the GPU path's numbers.
  evaluated = train.evaluate_checkpoint(config, str(tmp_path / "workdirs" / "seed_1"))
  assert evaluated["step"] == seeds[1]["best_step"]
  assert evaluated["validation"]["auc"] == pytest.approx(seeds[1]["best"]["validation_auc"],
                                                         abs=1e-5)
  assert evaluated["test"]["auc"] == pytest.approx(seeds[1]["best"]["test_auc"], abs=1e-5)

  # A run that starts from seed 1's parameters (config.init_from): the bundle carries
  # them and fit lays them over each seed's init.
  tuned = config.copy_and_resolve_references()
  tuned.init_from = str(tmp_path / "workdirs" / "seed_1")
  tuned.total_steps = 2
  accelerator_fit.bundle(tuned, bundle_dir, "tuned")
  with np.load(tmp_path / "bundle" / "tuned" / accelerator_fit.INIT_FILE) as overlay:
    overlay = dict(overlay)
  kept = serialization.msgpack_restore(
      (tmp_path / "fit" / "seed_1.msgpack").read_bytes())["params"]
  kept = traverse_util.flatten_dict(kept, sep="/")
  assert set(overlay) == set(kept)
  for key, value in kept.items():
    np.testing.assert_array_equal(overlay[key], value)
  accelerator_fit.fit(bundle_dir, "tuned", str(tmp_path / "tuned"), [3], deadline_s=None)
  tuned_results = json.loads((tmp_path / "tuned" / "results.json").read_text())
  assert any("init_from" in line for line in tuned_results["log"])
