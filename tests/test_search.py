"""Latency-budget architecture search: candidates, Pareto front, and the CLI end to end."""

import json
import os
import subprocess
import sys

import pytest

from byteflax import search
from configs import byteqrnn_toxicity
from tests import test_train

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

toy_data = test_train.toy_data


def test_candidates_start_with_the_configs_own_model_and_are_distinct():
  config = byteqrnn_toxicity.get_config()
  points = search.candidates(config, search.SPACE, count=12, seed=0)
  assert points[0] == {name: config.model[name] for name in search.SPACE}
  assert len({json.dumps(p, sort_keys=True) for p in points}) == 12
  for point in points:
    assert all(point[name] in choices for name, choices in search.SPACE.items())
  assert points == search.candidates(config, search.SPACE, count=12, seed=0)
  assert points != search.candidates(config, search.SPACE, count=12, seed=1)
  # A space no bigger than the count gives every point once.
  assert len(search.candidates(config, {"qrnn_layers": [1, 2, 3]}, count=12, seed=0)) == 3
  with pytest.raises(ValueError, match="hidden_size"):
    search.candidates(config, {"hidden_size": [1]}, count=2, seed=0)


def test_pareto_front():
  points = [(1.0, 0.80), (2.0, 0.90), (2.0, 0.85), (3.0, 0.88), (0.5, 0.70), (1.0, 0.80)]
  # (2.0, 0.85) is beaten by (2.0, 0.90); (3.0, 0.88) by (2.0, 0.90); ties stay on it.
  assert search.pareto_front(points) == [True, True, False, False, True, True]


@pytest.mark.slow
def test_search_cli_measures_trains_under_budget_and_writes_a_config_main_takes(
    toy_data, tmp_path):
  data = [f"--config.data.train_path={toy_data / 'train.csv'}",
          f"--config.data.test_path={toy_data / 'test.csv'}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")

  def run(*args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=_REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout

  workdir = tmp_path / "search"
  space = json.dumps({"qrnn_features": [8, 32], "qrnn_layers": [1, 2]})
  run("byteflax.search", "--config=configs/byteqrnn_toxicity.py:smoke", *data,
      f"--workdir={workdir}", "--latency_budget_ms=1000", "--candidates=3",
      "--proxy_steps=10", f"--space={space}", "--texts=50", "--latency_runs=5")
  with open(workdir / search.RESULTS_FILE) as f:
    results = json.load(f)
  rows = results["rows"]
  assert [row["fields"] for row in rows][0] == {"qrnn_features": 32, "qrnn_layers": 1}
  assert len(rows) == 3
  for row in rows:
    assert row["latency_ms"] > 0 and row["params"] > 0 and row["under_budget"]
    assert 0 <= row["validation_auc"] <= 1
    with open(workdir / f"candidate_{row['candidate']}" / "eval.json") as f:
      # No test split; "selected_by" and "last_step": config.checkpoint.select_by chose.
      assert set(json.load(f)) == {"step", "last_step", "selected_by", "task", "num_params",
                                   "validation"}
  assert any(row["pareto"] for row in rows)
  best = max(rows, key=lambda row: row["validation_auc"])
  assert results["chosen"] == best["candidate"]
  assert (workdir / "search.png").stat().st_size > 1000
  assert "| qrnn_features | qrnn_layers |" in (workdir / "search.md").read_text()

  # The chosen config trains through byteflax.main with the search's data and the
  # chosen model; the teacher is the searched config's (smoke: none).
  out = run("byteflax.main", f"--config={workdir / search.CHOSEN_CONFIG_FILE}",
            f"--workdir={tmp_path / 'chosen'}", "--config.total_steps=5")
  with open(tmp_path / "chosen" / "config.json") as f:
    chosen = json.load(f)
  assert {name: chosen["model"][name] for name in best["fields"]} == best["fields"]
  assert chosen["data"]["train_path"] == str(toy_data / "train.csv")
  assert "test ROC AUC" in out

  # A budget nothing meets stops with an error saying what the fastest candidate took;
  # the latencies measured are reused, not measured again.
  result = subprocess.run(
      [sys.executable, "-m", "byteflax.search", "--config=configs/byteqrnn_toxicity.py:smoke",
       *data, f"--workdir={workdir}", "--latency_budget_ms=0.0001", "--candidates=3",
       f"--space={space}", "--texts=50"], cwd=_REPO, env=env, capture_output=True,
      text=True, timeout=900)
  assert result.returncode != 0 and "No candidate runs within 0.0001 ms" in result.stderr
