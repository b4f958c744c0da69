"""TFLite export: JAX-vs-TFLite parity (float, int8 and full int8), manifest, clear errors."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from byteflax import export
from byteflax import input_pipeline
from byteflax import machine
from byteflax import models
from byteflax import quant
from byteflax import train
from configs import byteqrnn_toxicity
from configs import transformer_toxicity
from tests import utils

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LENGTH = 64
_LENGTHS = (16, 32, _LENGTH)
_MODEL = {"embed_dim": 16, "qrnn_layers": 1, "qrnn_features": 8}


def _ids(count, seed):
  """Byte ids `[count, _LENGTH]` with ragged lengths and a final EOS, like real inputs."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, 259, size=(count, _LENGTH)).astype(np.int32)
  lengths = rng.integers(2, _LENGTH + 1, size=count)
  positions = np.arange(_LENGTH)[None, :]
  ids[positions == lengths[:, None] - 1] = 1
  ids[positions >= lengths[:, None]] = 0
  return ids


@pytest.fixture(scope="module")
def quantized_model(tmp_path_factory):
  """A smoke-sized ByteQRNN with fake quantization, its ranges set on calibration data.

  The head's weights are scaled up so logits spread over several units, as a trained
  model's do; random-init logits are all ~0 and would make any error bound meaningless.
  """
  model = models.build_model("byte_qrnn", 2, _MODEL, quant=quant.QuantConfig(enabled=True))
  calibration = _ids(64, seed=1)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), calibration[:1])
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p * 20 if "head" in str(path) else p, variables["params"])
  stats = variables[quant.COLLECTION]
  update_ranges = jax.jit(lambda stats, rows: model.apply(
      {"params": params, quant.COLLECTION: stats}, rows, mutable=[quant.COLLECTION]
  )[1][quant.COLLECTION])
  for rows in np.split(calibration, 8):
    stats = update_ranges(stats, rows)
  out = tmp_path_factory.mktemp("export")
  inference = model.clone(quant=quant.QuantConfig(),
                          **export.EXPORT_OVERRIDES["byte_qrnn"])
  paths = {}
  for quantization, filename in export.FILES.items():
    paths[filename] = str(out / filename)
    with open(paths[filename], "wb") as f:
      # Three signatures: the parity tests below run each text at its own length bucket.
      f.write(export.convert(inference, params, _LENGTHS, quantization,
                             calibration if quantization == export.INT8_FULL else None))
  return model, params, stats, paths


def _op_input_dtypes(path: str, op_names) -> dict[str, list[list]]:
  """{op name: [the dtypes of its inputs, per op]} for the ops of a .tflite file."""
  from ai_edge_litert import interpreter as litert
  interpreter = litert.Interpreter(model_path=path)
  dtypes = {d["index"]: d["dtype"] for d in interpreter.get_tensor_details()}
  found = {}
  for op in interpreter._get_ops_details():  # pylint: disable=protected-access
    if op["op_name"] in op_names:
      found.setdefault(op["op_name"], []).append([dtypes[t] for t in op["inputs"] if t >= 0])
  return found


def test_float_tflite_matches_the_jax_float_model(quantized_model):
  model, params, _, paths = quantized_model
  ids = _ids(16, seed=2)
  float_model = model.clone(quant=quant.QuantConfig())
  expected = np.asarray(jax.jit(float_model.apply)({"params": params}, ids))
  outputs = export.TFLiteClassifier(paths[export.FLOAT_FILE])(ids)
  np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4)
  np.testing.assert_allclose(outputs["probabilities"], jax.nn.sigmoid(expected), atol=1e-5)


def test_int8_tflite_tracks_the_jax_float_model(quantized_model):
  model, params, _, paths = quantized_model
  ids = _ids(32, seed=3)
  expected = np.asarray(jax.jit(model.clone(quant=quant.QuantConfig()).apply)(
      {"params": params}, ids))
  logits = export.TFLiteClassifier(paths[export.INT8_FILE])(ids)["logits"]
  spread = np.ptp(expected)
  assert spread > 1.0
  # Only the weights and the convs' / matmuls' inputs are rounded to int8. Observed: max
  # error 0.033 on a spread of 7.3, correlation 0.99996 (the full-int8 file: 0.47, 0.994).
  assert np.max(np.abs(logits - expected)) < 0.02 * spread
  assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > 0.999


def test_int8_model_has_int8_weights_and_float_activations(quantized_model):
  path = quantized_model[3][export.INT8_FILE]
  ops = _op_input_dtypes(path, ("CONV_2D", "MUL", "ADD"))
  assert set(ops) == {"CONV_2D", "MUL", "ADD"}
  for dtypes in ops["CONV_2D"]:  # The GBST and gate convs: activations, weights, bias.
    assert dtypes == [np.float32, np.int8, np.float32], dtypes
  for name in ("MUL", "ADD"):  # The recurrence stays float (ADD: also int32 mask counts).
    assert all(np.int8 not in dtypes for dtypes in ops[name]), name


def test_int8_full_tflite_tracks_the_fake_quantized_jax_model(quantized_model):
  model, params, stats, paths = quantized_model
  ids = _ids(32, seed=3)  # Held out: not in the calibration set.
  expected = np.asarray(jax.jit(model.apply)({"params": params, quant.COLLECTION: stats},
                                             ids))
  logits = export.TFLiteClassifier(paths[export.INT8_FULL_FILE])(ids)["logits"]
  spread = np.ptp(expected)
  assert spread > 1.0
  # Observed: max error 0.47 on a spread of 6.8, correlation 0.994 (int8 rounding of every
  # intermediate; this random model's head is scaled x20, which amplifies it).
  assert np.max(np.abs(logits - expected)) < 0.1 * spread
  assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > 0.98


def test_int8_full_model_computes_in_int8(quantized_model):
  from ai_edge_litert import interpreter as litert
  interpreter = litert.Interpreter(model_path=quantized_model[3][export.INT8_FULL_FILE])
  dtypes = {d["index"]: d["dtype"] for d in interpreter.get_tensor_details()}
  data_path_ops = [op for op in interpreter._get_ops_details()  # pylint: disable=protected-access
                   if op["op_name"] in ("FULLY_CONNECTED", "CONV_2D", "GATHER_ND", "MUL",
                                        "ADD", "LOGISTIC", "TANH", "EXP", "SOFTMAX")]
  assert {op["op_name"] for op in data_path_ops} >= {"FULLY_CONNECTED", "CONV_2D", "MUL"}
  for op in data_path_ops:
    for tensor in [t for t in [*op["inputs"], *op["outputs"]] if t >= 0]:  # -1: none.
      assert dtypes[tensor] in (np.int8, np.int32), (op, dtypes[tensor])
  # Float appears only in the outputs and in counts of real bytes per pooling window (mask
  # bookkeeping, [1, <= length] tensors), which are then quantized.
  for detail in interpreter.get_tensor_details():
    if detail["dtype"] == np.float32:
      assert np.prod(detail["shape"]) <= 2 * _LENGTH, detail


@pytest.mark.parametrize("name", ["transformer", "funnel", "raw"])
def test_float_and_int8_tflite_of_the_transformers_match_jax(name, tmp_path):
  config = transformer_toxicity.get_config(f"{name},smoke")
  model = models.build_model(config.model_name, 1, config.model).clone(
      **export.EXPORT_OVERRIDES[config.model_name])
  ids = _ids(12, seed=6)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids[:1])["params"]
  path = tmp_path / export.FLOAT_FILE
  path.write_bytes(export.convert(model, params, (32, _LENGTH)))
  logits = export.TFLiteClassifier(str(path))(ids)["logits"]
  expected = jax.jit(model.apply)({"params": params}, ids)
  assert np.ptp(expected) > 0.1
  np.testing.assert_allclose(logits, expected, atol=1e-4)
  path = tmp_path / export.INT8_FILE
  path.write_bytes(export.convert(model, params, (32, _LENGTH), export.INT8))
  logits = export.TFLiteClassifier(str(path))(ids)["logits"]
  assert np.corrcoef(logits.ravel(), np.ravel(expected))[0, 1] > 0.99
  # Their full-integer file does not track JAX yet, so export leaves it out.
  assert config.model_name not in export.INT8_FULL_EXPORTABLE


def test_exported_files_are_the_manifests(tmp_path):
  (tmp_path / export.MANIFEST_FILE).write_text(json.dumps(
      {"files": {export.FLOAT_FILE: {"bytes": 1}}}))
  assert export.exported_files(str(tmp_path)) == [export.FLOAT_FILE]


@pytest.mark.parametrize("override,reason", [
    ({"model.gbst_score_calibration": True}, "gbst_score_calibration"),
    ({"model_name": "byte_transformer_untested"}, "no TFLite export recipe"),
])
def test_unexportable_configs_are_refused_with_the_reason(override, reason):
  config = byteqrnn_toxicity.get_config("smoke")
  for key, value in override.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  with pytest.raises(export.UnexportableConfigError, match=reason):
    export.check_exportable(config)


def test_missing_checkpoints_are_clear_errors(tmp_path):
  config = byteqrnn_toxicity.get_config("smoke")
  with pytest.raises(FileNotFoundError, match="No checkpoint under"):
    export.export(config, str(tmp_path / "nothing"), str(tmp_path / "out"))
  config.init_from = str(tmp_path / "no_float_run")
  with pytest.raises(FileNotFoundError, match="no_float_run' is no shipped encoder"):
    train.train_and_evaluate(config, str(tmp_path / "qat"))


def test_task_examples_look_like_the_device_splitter_output():
  ids, labels = input_pipeline.task_examples(byteqrnn_toxicity.get_config("smoke").data, "test", 16)
  assert ids.shape == (len(labels), 16) and ids.dtype == np.int32
  # Every text ends in exactly one EOS, long ones at the last position; pads only after it.
  assert np.all(np.sum(ids == 1, axis=1) == 1)
  eos_position = np.argmax(ids == 1, axis=1)
  assert np.all(ids[np.arange(16)[None, :] > eos_position[:, None]] == 0)
  assert np.mean(eos_position == 15) > 0.5  # Most fortunes are longer than 15 bytes.


def test_classifier_runs_each_text_at_the_shortest_signature_that_holds_it(quantized_model):
  model, params, _, paths = quantized_model
  classifier = export.TFLiteClassifier(paths[export.FLOAT_FILE])
  assert classifier.lengths == list(_LENGTHS) and classifier.length == _LENGTH
  ids = _ids(12, seed=5)
  used = (ids != 0).sum(axis=1)
  assert {next(n for n in _LENGTHS if n >= u) for u in used} == set(_LENGTHS)
  expected = classifier(ids)["logits"]
  # Wider padding changes nothing: the signature follows the ids, not the array width.
  np.testing.assert_array_equal(classifier(np.pad(ids, ((0, 0), (0, 100))))["logits"],
                                expected)
  # Each signature alone equals the JAX model at that length.
  float_apply = jax.jit(model.clone(quant=quant.QuantConfig()).apply)
  for row, count in zip(ids, used):
    length = next(n for n in _LENGTHS if n >= count)
    np.testing.assert_allclose(
        classifier.runners[length](ids=row[None, :length])["logits"],
        float_apply({"params": params}, row[None, :length]), atol=1e-4)
  with pytest.raises(ValueError, match=f"at most {_LENGTH} ids per example"):
    classifier(np.full((1, _LENGTH + 1), 7, np.int32))


def test_signatures_share_one_copy_of_the_weights():
  # Wide enough that the weights (~1 MB float) outweigh each signature's own graph.
  model = models.build_model("byte_qrnn", 1, {"embed_dim": 128, "qrnn_layers": 1,
                                              "qrnn_features": 128,
                                              **export.EXPORT_OVERRIDES["byte_qrnn"]})
  params = jax.jit(model.init)(jax.random.PRNGKey(0), _ids(1, seed=0))["params"]
  one, three = (len(export.convert(model, params, lengths)) for lengths in (_LENGTH, _LENGTHS))
  weight_bytes = 4 * train.count_params(params)
  assert one > weight_bytes and three - one < 0.5 * weight_bytes, (one, three, weight_bytes)
  assert export.default_lengths(1024) == [32, 64, 128, 256, 512, 1024]
  assert export.default_lengths(100) == [32, 64, 100]


@pytest.mark.slow
def test_default_model_int8_files_are_under_30_percent_of_float():
  """Weights dominate the file, so a short input length gives the real ratio quickly."""
  config = byteqrnn_toxicity.get_config()
  model = models.build_model(config.model_name, 1, config.model).clone(
      **export.EXPORT_OVERRIDES[config.model_name])
  ids = _ids(16, seed=4)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ids[:1])["params"]
  float_bytes = len(export.convert(model, params, _LENGTH))
  assert train.count_params(params) > 1_500_000
  for quantization, calibration in ((export.INT8, None), (export.INT8_FULL, ids)):
    int8_bytes = len(export.convert(model, params, _LENGTH, quantization, calibration))
    assert int8_bytes <= 0.3 * float_bytes, (quantization, int8_bytes, float_bytes)


@pytest.mark.slow
def test_cli_float_then_qat_then_export_then_benchmark(tmp_path):
  """The commands of docs/export.md, on a smoke-sized model and toy data."""
  utils.write_toy_jsonl(tmp_path)
  data = [f"--config.data.train_path={tmp_path / 'train.jsonl'}",
          f"--config.data.test_path={tmp_path / 'test.jsonl'}",
          "--config.optim.learning_rate=0.01", "--config.total_steps=80"]
  float_run, qat_run, out = tmp_path / "float", tmp_path / "qat", tmp_path / "export"
  qat = ["--config=configs/byteqrnn_toxicity.py:smoke", *data,
         "--config.quant.enabled=True", "--config.quant.start_step=5"]

  def run(*args):
    # PYTHONPATH as docs/export.md has it, for the benchmark script when not pip-installed.
    env = {**os.environ, "PYTHONPATH": _REPO}
    result = subprocess.run([sys.executable, *args], cwd=_REPO, capture_output=True,
                            text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout

  run("-m", "byteflax.main", "--config=configs/byteqrnn_toxicity.py:smoke", *data,
      f"--workdir={float_run}")
  run("-m", "byteflax.main", *qat, f"--config.init_from={float_run}", f"--workdir={qat_run}")
  run("-m", "byteflax.export", *qat, f"--workdir={qat_run}", f"--out={out}")
  with open(out / export.MANIFEST_FILE) as f:
    manifest = json.load(f)
  assert manifest["input"]["shape"] == [1, 128] and manifest["checkpoint_step"] == 80
  assert manifest["quantization_aware_training"]["enabled"]
  for filename in export.FILES.values():
    assert manifest["files"][filename]["bytes"] == os.path.getsize(out / filename)
  table = run("benchmarks/export_benchmark.py", *qat, f"--workdir={qat_run}",
              f"--export_dir={out}", "--latency_runs=20")
  with open(out / "benchmark.json") as f:
    rows = {row["name"]: row for row in json.load(f)["rows"]}
  assert set(rows) == {"jax_fake_quant", "jax_float", "tflite_float32", "tflite_int8",
                       "tflite_int8_full"}
  assert "tflite_int8_full" in table
  # The toy task is easy: every form of the model separates it, and they agree.
  assert rows["jax_fake_quant"]["auc"] > 0.95
  for name in ("tflite_int8", "tflite_int8_full"):
    assert abs(rows[name]["auc"] - rows["jax_fake_quant"]["auc"]) < 0.02
  assert rows["tflite_float32"]["max_abs_logit_error"] < 0.5
  # Scoring new texts: the QAT run through JAX and its int8 file through LiteRT agree.
  scores = {}
  for name, model in (("jax", qat_run), ("int8", out / export.INT8_FILE)):
    output = tmp_path / f"scores_{name}.csv"
    run("-m", "byteflax.classify", f"--model={model}", f"--input={tmp_path / 'test.jsonl'}",
        f"--output={output}")
    with open(output, newline="") as f:
      rows = list(csv.DictReader(f))
    # The file's own labels come through; the scores get a column of their own.
    scores[name] = np.array([float(row["label_probability"]) for row in rows])
    labels = [int(row["label"]) for row in rows]
  assert len(scores["jax"]) == 120  # Every line of test.jsonl.
  with open(tmp_path / "test.jsonl") as f:
    assert labels == [json.loads(line)["label"] for line in f]
  assert np.abs(scores["jax"] - scores["int8"]).mean() < 0.02
  texts = json.loads(run("-m", "byteflax.classify", f"--model={qat_run}", "", "fine text"
                         ).splitlines()[0])
  assert set(texts) == {"text", "label"} and texts["text"] == ""


def test_latency_benchmark_times_every_model_on_the_same_texts(quantized_model, tmp_path):
  from benchmarks import latency  # pylint: disable=g-import-not-at-top
  export_dir = os.path.dirname(quantized_model[3][export.FLOAT_FILE])
  with open(os.path.join(export_dir, export.MANIFEST_FILE), "w") as f:
    json.dump({"model_name": "byte_qrnn"}, f)
  results = latency.benchmark(byteqrnn_toxicity.get_config("smoke"), [export_dir],
                              ["tfidf_word"], num_texts=30, fit_texts=300,
                              lengths=[16, 64, 256], runs=3, warmup=2)
  names = [row["name"] for row in results["rows"]]
  assert names == [f"byte_qrnn {export.FLOAT_FILE}", f"byte_qrnn {export.INT8_FILE}",
                   f"byte_qrnn {export.INT8_FULL_FILE}", "tfidf_word"]
  for row in results["rows"]:
    assert 0 < row["median_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert list(row["ms_by_length"]) == ["16", "64", "256"]
  assert results["texts"] == 30 and "| tfidf_word |" in latency.format_table(results)
  assert f"on {results['machine']['cpu']} (" in latency.format_table(results)
  assert len(latency.synthetic_text(64)) == 63
  # Two exports of one model (e.g. before and after a change) keep a row each.
  again = shutil.copytree(export_dir, tmp_path / "again")
  rows = latency.predictors([export_dir, str(again)], [], [], [])
  assert len(rows) == 6 and f"byte_qrnn ({again}) {export.INT8_FILE}" in rows
  # The drawn texts do not depend on the split's order (it follows the length buckets).
  texts = [f"text {i}" for i in range(50)]
  drawn = [texts[i] for i in latency.draw(texts, 20, np.random.default_rng(0))]
  shuffled = list(np.random.default_rng(1).permutation(texts))
  assert [shuffled[i] for i in latency.draw(shuffled, 20, np.random.default_rng(0))] == drawn
  assert len(set(drawn)) == 20 and len(latency.draw(texts, 80, np.random.default_rng(0))) == 50


def test_each_signature_is_calibrated_on_the_texts_it_will_run():
  config = byteqrnn_toxicity.get_config("smoke")  # max_length 128, the English fortunes.
  sets = export.calibration_examples(config, [32, 64, 128], count=50)
  assert sorted(sets) == [32, 64, 128]
  for (shorter, length), ids in zip([(0, 32), (32, 64), (64, 128)], sets.values()):
    used = (ids != 0).sum(axis=1)
    assert ids.shape == (50, length)
    assert np.all((used > shorter) & (used <= length)), (length, used)
  assert np.all(sets[128][:, -1] <= 1)  # Texts longer than 128 bytes are cut, ending in EOS.


def test_latency_is_timed_on_examples_drawn_from_the_whole_split():
  # Evaluation splits come sorted by length: timing their first rows would time the
  # shortest texts only.
  seen = []
  latency = export.median_latency_ms(lambda row: seen.append(int(row[0, 0])),
                                     np.arange(1000)[:, None], runs=100)
  assert latency >= 0
  timed = seen[10:]  # After the warm-up calls.
  assert len(set(timed)) == 100 and max(timed) > 500 and min(timed) < 500


@pytest.mark.parametrize("config_arg", [
    "byteqrnn_toxicity.py", "byteqrnn_toxicity.py:early_exit", "byteqrnn_toxicity.py:qat",
    "transformer_toxicity.py:transformer", "transformer_toxicity.py:funnel",
    "transformer_toxicity.py:raw", "pretrain_fortunes.py", "pretrain_fortunes.py:causal",
    "pretrain_corpus.py"])
def test_every_config_has_an_export_recipe(config_arg):
  """Classifiers through byteflax.export (early-exit ones also chained, early_exit.py),
  encoder-decoders through byteflax.export_seq2seq; the conversions and their parity with
  JAX are tested per model kind (this file, test_early_exit.py, test_export_seq2seq.py)."""
  from byteflax import export_seq2seq  # pylint: disable=g-import-not-at-top
  from byteflax import seq2seq  # pylint: disable=g-import-not-at-top
  name, _, arg = config_arg.partition(":")
  module = __import__(f"configs.{name.removesuffix('.py')}", fromlist=["get_config"])
  config = module.get_config(arg or None)
  if config.model_name == seq2seq.MODEL_NAME:
    export_seq2seq.inference_model(seq2seq.build_encoder_decoder(config.model), config.model)
  else:
    export.check_exportable(config)


def test_timed_models_take_turns_on_every_input():
  calls = []
  predicts = {name: (lambda item, name=name: calls.append((name, item))) for name in "ab"}
  times = export.time_each(predicts, ["x", "y", "z"], warmup=1)
  assert calls == [("a", "x"), ("b", "x"),  # Warm-up.
                   ("a", "x"), ("b", "x"), ("b", "y"), ("a", "y"), ("a", "z"), ("b", "z")]
  assert sorted(times) == ["a", "b"] and all(t.shape == (3,) and np.all(t >= 0)
                                              for t in times.values())


def test_machine_names_the_cpu_and_its_int8_dot_product_features(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                     "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_int8\n\n"
                     "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n")
  found = machine.describe(str(cpuinfo))
  assert found["cpu"] == "Intel(R) Xeon(R) Platinum 8481C"
  assert found["features"] == ["avx2", "avx512f", "avx512_vnni", "amx_int8"]
  arm = tmp_path / "arm"
  arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
  assert machine.describe(str(arm))["features"] == ["asimddp", "i8mm"]
  assert machine.describe(str(arm))["cpu"]  # The architecture, at least.
  assert machine.describe(str(tmp_path / "missing"))["features"] == []
