"""Generation with the encoder-decoder: decoding agrees with teacher forcing; the CLI."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import decode
from byteflax import beam_search
from byteflax import generate
from byteflax import seq2seq
from byteflax import splitter
from configs import byteqrnn_toxicity
from configs import pretrain_fortunes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sentinel_markers_round_trip():
  ids = generate.encode_input("ab<extra_id_0>c<extra_id_1>", 16)
  np.testing.assert_array_equal(ids, [ord("a") + 3, ord("b") + 3, 258, ord("c") + 3, 257,
                                      splitter.EOS_ID])
  assert generate.format_output([258, ord("x") + 3, 257, 0xE2 + 3, 0x82 + 3, 0xAC + 3,
                                 splitter.EOS_ID, 258]) == "<extra_id_0>x<extra_id_1>€"
  with pytest.raises(ValueError, match="up to <extra_id_10>"):
    generate.encode_input("<extra_id_11>", 16)
  with pytest.raises(ValueError, match="at most 3 plus EOS"):
    generate.encode_input("abcd", 4)


def teacher_forced_log_probs(model, variables, inputs, sequences):
  """Masked next-id log-probs [n, length] of sequences [n, length] under teacher forcing."""
  logits = jax.jit(model.apply)(variables, jnp.repeat(inputs, len(sequences), axis=0),
                                jnp.asarray(sequences))
  logits = logits.at[..., generate.NEVER_GENERATED].set(-jnp.inf)
  return np.asarray(jax.nn.log_softmax(logits, axis=-1))


@pytest.mark.parametrize("kind,scorer", [
    ("matt", beam_search.FloatScorer()),
    pytest.param("matt", beam_search.Uint8Scorer(), marks=pytest.mark.slow),
    pytest.param("causal", beam_search.FloatScorer(), marks=pytest.mark.slow),
], ids=["matt-float", "matt-uint8", "causal-float"])
def test_decoding_agrees_with_teacher_forcing(kind, scorer):
  """Greedy output is the argmax under teacher forcing; beams score as it scores them."""
  config = pretrain_fortunes.get_config("smoke" + (",causal" if kind == "causal" else ""))
  model = seq2seq.build_encoder_decoder(config.model)
  inputs = jnp.asarray(generate.pad_inputs(
      [generate.encode_input("The <extra_id_0> jumps over the lazy dog.", 128)], config.data))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), inputs, jnp.zeros((1, 8), jnp.int32))
  max_length = 12
  run = jax.jit(functools.partial(generate.generate, model, max_length=max_length,
                                  scorer=scorer), static_argnames=("beam_size", "num_return"))

  greedy = np.asarray(run(variables, inputs, beam_size=1).sequences[0])
  beams = run(variables, inputs, beam_size=3, num_return=3)
  sequences = np.concatenate([greedy, np.asarray(beams.sequences[0])])
  log_probs = teacher_forced_log_probs(model, variables, inputs, sequences)
  ends = np.flatnonzero(greedy[0] == splitter.EOS_ID)
  length = ends[0] + 1 if ends.size else max_length
  np.testing.assert_array_equal(greedy[0, :length], log_probs[0, :length].argmax(-1))

  chosen = np.take_along_axis(log_probs[1:], sequences[1:, :, None], axis=-1)[..., 0]
  is_eos = sequences[1:] == splitter.EOS_ID
  up_to_eos = np.cumsum(is_eos, axis=1) - is_eos == 0
  tolerance = 1e-4 if isinstance(scorer, beam_search.FloatScorer) else 0.02 * max_length
  np.testing.assert_allclose(beams.log_probs[0], (chosen * up_to_eos).sum(1), atol=tolerance)


def test_load_model_errors(tmp_path):
  with pytest.raises(ValueError, match="does not generate text"):
    generate.load_model(byteqrnn_toxicity.get_config("smoke"), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    generate.load_model(pretrain_fortunes.get_config("smoke"), str(tmp_path))


@pytest.mark.slow
def test_generate_cli_on_a_trained_smoke_run(tmp_path):
  """Trains the smoke pretraining config through the CLI, then generates from it (with the
  run's own config.json: no --config), exports it and generates from the export."""
  config = ["--config=configs/pretrain_fortunes.py:smoke", f"--workdir={tmp_path}"]
  subprocess.run([sys.executable, "-m", "byteflax.main", *config], cwd=REPO, check=True,
                 capture_output=True)
  result = subprocess.run(
      [sys.executable, "-m", "byteflax.generate", f"--workdir={tmp_path}", "--max_length=16",
       "--input=Some <extra_id_0> text.", "--input=Another one", "--beam_size=3",
       "--num_return=2", "--scorer=uint8"], cwd=REPO, check=True, capture_output=True,
      text=True)
  lines = result.stdout.splitlines()
  assert lines[0] == "checkpoint step 40, matt decoder", result.stdout
  assert lines[1] == "input: Some <extra_id_0> text."
  assert lines[4] == "input: Another one"
  assert all(line.startswith(("  1. [", "  2. [")) for line in lines[2:4] + lines[5:7])
  # Exported, the same search over LiteRT returns the same hypotheses.
  export_dir = tmp_path / "export"
  subprocess.run([sys.executable, "-m", "byteflax.export_seq2seq", f"--workdir={tmp_path}",
                  f"--out={export_dir}", "--rows=1,3"], cwd=REPO, check=True,
                 capture_output=True)
  exported = subprocess.run(
      [sys.executable, "-m", "byteflax.generate", f"--tflite={export_dir}", "--max_length=16",
       "--input=Some <extra_id_0> text.", "--input=Another one", "--beam_size=3",
       "--num_return=2", "--scorer=uint8"], cwd=REPO, check=True, capture_output=True,
      text=True).stdout.splitlines()
  assert exported[0].endswith("seq2seq_float.tflite: MAtt decoder, LiteRT interpreter")
  hypotheses = lambda lines: [line.split("] ", 1)[-1] for line in lines[1:]]
  assert hypotheses(exported) == hypotheses(lines), (exported, lines)
  # The decoding benchmark's uint8 agreement reads the run's config too (a smoke model).
  agreement = decode.measure_agreement(str(tmp_path), beam_size=3, max_length=4, examples=4)
  assert agreement["checkpoint_step"] == 40 and agreement["examples"] == 4, agreement
  assert agreement["mismatches"] == len(agreement["score_regret_of_mismatches"])
  missing = subprocess.run(
      [sys.executable, "-m", "byteflax.generate", "--config=configs/pretrain_fortunes.py:smoke",
       f"--workdir={tmp_path / 'none'}", "--input=x"], cwd=REPO, capture_output=True,
      text=True)
  assert missing.returncode != 0 and "No checkpoint" in missing.stderr
  both = subprocess.run(
      [sys.executable, "-m", "byteflax.generate", f"--tflite={export_dir}", *config[:1],
       "--input=x"], cwd=REPO, capture_output=True, text=True)
  assert both.returncode != 0 and "an export carries its own" in both.stderr


@pytest.mark.slow
def test_decode_benchmark_runs(tmp_path):
  subprocess.run([sys.executable, "-m", "benchmarks.decode", f"--out={tmp_path}",
                  "--positions", "16", "1024", "--rounds=2", "--steps=2", "--max_length=4",
                  "--tflite_calls=2"],
                 cwd=REPO, check=True, capture_output=True)
  with open(tmp_path / "decode.json") as f:
    report = json.load(f)
  assert set(report["steps"]) == {"matt", "causal"} and (tmp_path / "decode.png").exists()
  assert report["cache_bytes_per_sequence"]["causal"][1] == 64 * (
      report["cache_bytes_per_sequence"]["causal"][0])
  assert set(report["beam_search_ms"]["matt decoder"]) == {"float", "uint8"}
  for quantization in ("float32", "int8"):
    assert {r["position"] for r in report["tflite"]["steps"][quantization]["matt"]} == {
        16, 1024}
    assert report["tflite"]["goals"][quantization]["rows_1"]["matt_1024_over_16"] > 0
