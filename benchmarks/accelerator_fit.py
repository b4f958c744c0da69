r"""A byte classifier's full-budget run, several seeds at once, on a GPU without TensorFlow.

The `:full` budget (5 epochs of the 147k toxic comments, 23,025 steps) takes ~4.5 hours of
this repository's two CPU cores and minutes of one GPU. The GPU machines we borrow have JAX
but not the TensorFlow / SeqIO input pipeline, so the work is cut in three, as for
benchmarks/minilm_teacher.py:

  # 1. CPU, here: each split as the model sees it (byte ids of the real input pipeline,
  #    labels; teacher logits with --config.distill.alpha > 0) and the config.
  python -m benchmarks.accelerator_fit bundle \
      --config=configs/byteqrnn_toxicity.py:full,scratch --out=.gpu/toxic_full
  # 2. GPU: train --seeds in one vmapped step (`byteflax.step.train_step`, the step the
  #    CPU trainer jits), validate every epoch, keep each seed's best validation epoch.
  python -m benchmarks.accelerator_fit fit --bundle=.gpu/toxic_full --out=/tmp/toxic_fit \
      --seeds=0,1,2
  # 3. CPU, here: the table (test / perturbed ROC AUC, PR-AUC, F1 at the validation-chosen
  #    threshold; mean and range over seeds), the validation curves, and one byteflax
  #    workdir per seed (checkpoint + config.json) that byteflax.main --mode=eval,
  #    byteflax.export and byteflax.classify read.
  python -m benchmarks.accelerator_fit report --fit=/tmp/toxic_fit \
      --out=benchmarks/results/toxic_full --workdirs=/tmp/toxic_full

Runs over one task share its splits in the bundle (`--name` per run). With config.init_from
(e.g. a shipped pretrained encoder, `--config.init_from=byteqrnn_corpus`) the bundle also
carries the parameters it gives, and every seed starts from them (its head still seeded).

Batches follow the CPU trainer's: examples grouped by length bucket
(config.data.length_buckets), shuffled per epoch and seed, padded to the bucket boundary;
at one step the seeds' batches are padded to the longest of them. The perturbed test copy
is byteflax/perturb.py's (rate 0.3, seed 0), as benchmarks/compare.py makes it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time

from absl import app
from absl import flags
import flax
from flax import serialization
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from byteflax import cli
from byteflax import metrics as metrics_lib
from byteflax import models
from byteflax import quant
from byteflax import splitter
from byteflax import step as step_lib

SPLITS = ("train", "validation", "test", "test_perturbed")
CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
TEACHER_FILE = "teacher_logits.npz"
INIT_FILE = "init_params.npz"
RESULTS_FILE = "results.json"
CURVE_FILE = "validation_curve.png"


# ---------------------------------------------------------------------------------------
# bundle (CPU)


def _ragged(ids: np.ndarray) -> dict[str, np.ndarray]:
  """Byte ids `[n, length]` -> the text bytes, concatenated, and each row's byte count."""
  real = ids >= splitter.NUM_SPECIAL_IDS
  return {"bytes": (ids[real] - splitter.NUM_SPECIAL_IDS).astype(np.uint8),
          "lengths": real.sum(axis=1).astype(np.int32)}


def bundle(config: ml_collections.ConfigDict, out: str, name: str) -> None:
  """Writes the task's splits to <out>/<split>.npz (bytes, lengths, labels) unless they are
  there for the same config.data, and the run `name`: <out>/<name>/config.json, plus the
  teacher's logits of the training split when the config distils. Runs over one task share
  its splits, so several fit in one transfer to the GPU."""
  # pylint: disable=g-import-not-at-top  (TensorFlow / SeqIO: here only, not on the GPU)
  from byteflax import distill
  from byteflax import input_pipeline
  from byteflax import perturb
  from tasks import toxicity
  task = input_pipeline.resolve_task(config.data)
  data_file = os.path.join(out, DATA_FILE)
  data = {"task": task, "label_names": list(toxicity.label_names(task)),
          "config": json.loads(config.data.to_json_best_effort()),
          "boundaries": input_pipeline.bucket_boundaries(config.data),
          "train_boundaries": input_pipeline.bucket_boundaries(
              config.data, input_pipeline.train_length(config.data))}
  train_ids = None  # Kept from writing the splits, for the teacher's keys below.
  if os.path.exists(data_file):
    with open(data_file) as f:
      if json.load(f) != data:
        raise ValueError(f"{out} holds the splits of another config.data; bundle into a new "
                         "folder.")
  else:
    os.makedirs(out, exist_ok=True)
    for split in SPLITS[:3]:
      ids, texts, labels = distill.split_texts(config, split)
      if split == "train":
        train_ids = ids
      np.savez_compressed(os.path.join(out, f"{split}.npz"), **_ragged(ids),
                          labels=labels.astype(np.float32))
      print(f"{task} {split}: {len(ids):,} examples", flush=True)
    perturbed = splitter.ByteSplitter(config.data.max_length).encode_batch(
        perturb.perturb_texts(texts, perturb.DEFAULT_RATE), config.data.max_length)[0]
    np.savez_compressed(os.path.join(out, "test_perturbed.npz"), **_ragged(perturbed),
                        labels=labels.astype(np.float32))
    with open(data_file, "w") as f:
      json.dump(data, f)
  run_dir = os.path.join(out, name)
  os.makedirs(run_dir, exist_ok=True)
  if step_lib.distillation_settings(config):
    ids = train_ids if train_ids is not None else distill.split_texts(config, "train")[0]
    with np.load(distill.prepare_teacher(config, run_dir)) as teacher:
      rows = dict(zip(teacher["keys"].tolist(), range(len(teacher["keys"]))))
      logits = teacher["logits"].astype(np.float32)
    np.savez_compressed(os.path.join(run_dir, TEACHER_FILE), teacher_logits=logits[
        [rows[key] for key in input_pipeline.teacher_keys(ids).tolist()]])
    for leftover in os.listdir(run_dir):  # A teacher fitted here: its logits are copied.
      if leftover.endswith(".npz") and leftover != TEACHER_FILE:
        os.remove(os.path.join(run_dir, leftover))
  if config.get("init_from"):
    np.savez_compressed(os.path.join(run_dir, INIT_FILE), **_initialised(config))
  with open(os.path.join(run_dir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  size = sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(out)
             for n in names)
  print(f"Bundle in {out} (run {name!r}): {size / 2**20:.1f} MiB", flush=True)


def _initialised(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """The params that config.init_from gives a new run (`train.initial_params`: e.g. a
  pretrained encoder), flattened to "module/.../name" keys; `fit` lays them over every
  seed's random init, so seeds still differ in what init_from leaves random (the head)."""
  from byteflax import train  # pylint: disable=g-import-not-at-top  (TensorFlow / SeqIO)
  trainer = train.Trainer(config)
  random = jax.device_get(trainer.init_state().params)
  loaded = jax.device_get(train.initial_params(trainer, random))
  random, loaded = (traverse_util.flatten_dict(p, sep="/") for p in (random, loaded))
  overlay = {key: np.asarray(value) for key, value in loaded.items()
             if not np.array_equal(value, random[key])}
  print(f"init_from {config.init_from}: {len(overlay)} of {len(loaded)} parameter arrays",
        flush=True)
  return overlay


# ---------------------------------------------------------------------------------------
# fit (GPU)


class Split:
  """One split in memory: padded byte ids `[n, max_length]` (bytes, EOS, padding), labels
  `[n, labels]`, and teacher logits when the bundle has them. A text longer than the
  bundle's is cut to max_length - 1 bytes and EOS (input_pipeline.train_length)."""

  def __init__(self, path: str, max_length: int):
    with np.load(path) as arrays:
      bundled = arrays["lengths"]
      data = arrays["bytes"].astype(np.int32) + splitter.NUM_SPECIAL_IDS
      self.labels = arrays["labels"]
    self.teacher_logits = None
    rows = np.repeat(np.arange(len(bundled)), bundled)
    columns = np.arange(len(data)) - np.repeat(np.cumsum(bundled) - bundled, bundled)
    kept = columns < max_length - 1
    lengths = np.minimum(bundled, max_length - 1)
    self.lengths = lengths + 1  # EOS.
    self.ids = np.zeros((len(lengths), max_length), np.int32)
    self.ids[rows[kept], columns[kept]] = data[kept]
    self.ids[np.arange(len(lengths)), lengths] = splitter.EOS_ID

  def __len__(self) -> int:
    return len(self.lengths)


def _boundary(length: int, boundaries: list[int]) -> int:
  return next(b for b in boundaries if b >= length)


def _epoch_batches(split: Split, boundaries: list[int], batch_size: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
  """One epoch's batches of example indices: grouped by length bucket as the CPU input
  pipeline groups them (`tf.data.bucket_by_sequence_length`), shuffled."""
  buckets = np.searchsorted(np.asarray(boundaries), split.lengths)
  batches = []
  for bucket in np.unique(buckets):
    members = rng.permutation(np.flatnonzero(buckets == bucket))
    batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
  return [batches[i] for i in rng.permutation(len(batches))]


class _Classification:
  """The classification objective on arrays (byteflax/objectives.py's without SeqIO)."""

  def model_args(self, batch):
    return (batch["inputs"],)

  def loss(self, logits, batch):
    return step_lib.weighted_sigmoid_loss(logits, batch["labels"], batch["weights"])

  def eval_outputs(self, logits, batch):
    del batch  # Unused.
    return jax.nn.sigmoid(logits)


def _stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _member(tree, index: int):
  return jax.device_get(jax.tree.map(lambda leaf: leaf[index], tree))


def fit(bundle_dir: str, name: str, out: str, seeds: list[int], deadline_s: float | None
        ) -> None:
  """Trains run `name` of the bundle, every seed together; writes <out>/results.json and
  <out>/seed_<s>.msgpack (each seed's kept parameters)."""
  started = time.perf_counter()
  os.makedirs(out, exist_ok=True)
  run_dir = os.path.join(bundle_dir, name)
  with open(os.path.join(run_dir, CONFIG_FILE)) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(bundle_dir, DATA_FILE)) as f:
    labelling = json.load(f)
  label_names, data = tuple(labelling["label_names"]), config.data
  boundaries = labelling["boundaries"]  # input_pipeline.bucket_boundaries, at bundle time.
  # Training texts cut to data.train_max_length (a bundle from before it: max_length).
  train_boundaries = labelling.get("train_boundaries", boundaries)
  splits = {split: Split(os.path.join(bundle_dir, f"{split}.npz"),
                         train_boundaries[-1] if split == "train" else data.max_length)
            for split in SPLITS}
  train, num_labels = splits["train"], splits["train"].labels.shape[1]
  total_steps, budget = step_lib.step_budget(config, len(train))
  epoch_steps = -(-len(train) // data.batch_size)
  distillation = step_lib.distillation_settings(config)
  if distillation:
    if not os.path.exists(os.path.join(run_dir, TEACHER_FILE)):
      raise ValueError(f"config.distill.alpha > 0 but {run_dir} has no {TEACHER_FILE}; "
                       "bundle this run again.")
    with np.load(os.path.join(run_dir, TEACHER_FILE)) as teacher:
      train.teacher_logits = teacher["teacher_logits"]
  log_lines = []

  def log(message):
    line = f"[{time.perf_counter() - started:7.1f}s] {message}"
    print(line, flush=True)
    log_lines.append(line)

  log(f"{jax.devices()[0].device_kind} x{jax.device_count()}; jax {jax.__version__}, "
      f"flax {flax.__version__}; seeds {seeds}; {budget}")

  model = models.build_model(config.model_name, num_labels, config.model,
                             quant.QuantConfig.from_config(config.get("quant")))
  tx, schedule = step_lib.make_optimizer(config.optim, total_steps)
  ema_decay = step_lib.check_ema_decay(config.optim.get("ema_decay"))

  def init(seed):
    params_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = flax.linen.meta.unbox(
        model.init(params_rng, jnp.zeros((1, boundaries[0]), jnp.int32), train=False))
    return step_lib.initial_state(model.apply, variables, tx, dropout_rng, ema_decay)

  states = [init(seed) for seed in seeds]
  if config.get("init_from"):
    with np.load(os.path.join(run_dir, INIT_FILE)) as overlay:
      overlay = dict(overlay)
    log(f"init_from {config.init_from}: {len(overlay)} parameter arrays from the bundle")
    states = [s.replace(params=traverse_util.unflatten_dict(
        {**traverse_util.flatten_dict(s.params, sep="/"), **overlay}, sep="/"))
              for s in states]
  state = _stack(states)
  objective = _Classification()
  train_step = jax.jit(jax.vmap(functools.partial(step_lib.train_step, objective=objective,
                                                  ema_decay=ema_decay, **distillation)),
                       donate_argnums=(0,))
  predict = jax.jit(jax.vmap(functools.partial(step_lib.eval_step, objective=objective),
                             in_axes=(0, None)))

  def probabilities(state, split: Split) -> np.ndarray:
    """`[seeds, n, labels]` for one split, batches of similar lengths."""
    order = np.argsort(split.lengths, kind="stable")
    probs = np.zeros((len(seeds), len(split), num_labels), np.float32)
    for start in range(0, len(order), data.eval_batch_size):
      rows = order[start:start + data.eval_batch_size]
      length = _boundary(int(split.lengths[rows].max()), boundaries)
      inputs = np.zeros((data.eval_batch_size, length), np.int32)  # One shape per bucket.
      inputs[:len(rows)] = split.ids[rows, :length]
      probs[:, rows] = np.asarray(predict(state, {"inputs": inputs}))[:, :len(rows)]
    return probs

  def quality(probs, split: Split, thresholds=None) -> dict[str, float]:
    return metrics_lib.classification_metrics(split.labels, probs, float("nan"),
                                              label_names, thresholds)

  streams = [np.random.default_rng([seed, 1]) for seed in seeds]
  pending = [[] for _ in seeds]
  curve, best = [], [{"auc": -1.0} for _ in seeds]
  best_state = [None] * len(seeds)
  losses, step_number, stopped_early = [], 0, False
  while step_number < total_steps:
    for member, rng in enumerate(streams):
      if not pending[member]:
        pending[member] = _epoch_batches(train, train_boundaries, data.batch_size, rng)
    rows = [pending[member].pop(0) for member in range(len(seeds))]
    length = max(_boundary(int(train.lengths[r].max()), train_boundaries) for r in rows)
    batch = {"inputs": np.zeros((len(seeds), data.batch_size, length), np.int32),
             "labels": np.zeros((len(seeds), data.batch_size, num_labels), np.float32),
             "weights": np.zeros((len(seeds), data.batch_size), np.float32)}
    if distillation:
      batch["teacher_logits"] = np.zeros_like(batch["labels"])
    for member, r in enumerate(rows):
      batch["inputs"][member, :len(r)] = train.ids[r, :length]
      batch["labels"][member, :len(r)] = train.labels[r]
      batch["weights"][member, :len(r)] = 1.0
      if distillation:
        batch["teacher_logits"][member, :len(r)] = train.teacher_logits[r]
    state, step_metrics = train_step(state, batch)
    losses.append(step_metrics["loss"])
    step_number += 1
    out_of_time = deadline_s is not None and time.perf_counter() - started > deadline_s
    if step_number % 1000 == 0:
      log(f"step {step_number}/{total_steps}")
    if step_number % epoch_steps and step_number < total_steps and not out_of_time:
      continue
    mean_loss = np.asarray(jax.device_get(losses)).mean(axis=0)
    if not np.all(np.isfinite(mean_loss)):
      raise FloatingPointError(f"Training loss {mean_loss} at step {step_number}.")
    validation = probabilities(state, splits["validation"])
    point = {"step": step_number, "epoch": step_number / epoch_steps,
             "learning_rate": float(schedule(step_number - 1)),
             "train_loss": mean_loss.tolist(), "validation_auc": []}
    for member in range(len(seeds)):
      auc = quality(validation[member], splits["validation"])["auc"]
      point["validation_auc"].append(auc)
      if auc > best[member]["auc"]:
        best[member] = {"auc": auc, "step": step_number}
        best_state[member] = _member(state, member)
    curve.append(point)
    losses = []
    log(f"step {step_number}/{total_steps} (epoch {point['epoch']:.2f}): train loss "
        f"{np.round(mean_loss, 4).tolist()}, validation ROC AUC "
        f"{np.round(point['validation_auc'], 4).tolist()}")
    if out_of_time and step_number < total_steps:
      log(f"--deadline_s {deadline_s} reached at step {step_number}; stopping.")
      stopped_early = True
      break

  # Each seed's best validation epoch (early stopping's choice) and its last step, scored.
  kept = {"best": _stack(best_state), "last": state}
  runs = [{"seed": seed, "best_step": best[m]["step"]} for m, seed in enumerate(seeds)]
  for which, chosen in kept.items():
    probs = {name: probabilities(chosen, splits[name]) for name in SPLITS[1:]}
    for member, run in enumerate(runs):
      validation = quality(probs["validation"][member], splits["validation"])
      thresholds = {name: validation[f"f1_threshold/{name}"] for name in label_names}
      test = quality(probs["test"][member], splits["test"], thresholds)
      perturbed = quality(probs["test_perturbed"][member], splits["test_perturbed"])
      run[which] = {"validation_auc": validation["auc"], "test_auc": test["auc"],
                    "test_pr_auc": test["pr_auc"],
                    "test_f1_at_threshold": test["f1_at_threshold"],
                    "test_auc_perturbed": perturbed["auc"]}
  for member, run in enumerate(runs):
    log(f"seed {run['seed']}: best validation at step {run['best_step']}: {run['best']}")
    with open(os.path.join(out, f"seed_{run['seed']}.msgpack"), "wb") as f:
      # The params the model evaluated with (their average where the run keeps one).
      f.write(serialization.to_bytes({"params": step_lib.model_params(best_state[member]),
                                      "quant_stats": best_state[member].quant_stats,
                                      "step": best[member]["step"]}))
  results = {"task": labelling["task"], "label_names": label_names, "run": name,
             "model_name": config.model_name, "budget": budget,
             "total_steps": total_steps, "trained_steps": step_number,
             "stopped_early": stopped_early, "epoch_steps": epoch_steps,
             "num_params": int(sum(np.prod(p.shape) for p in
                                   jax.tree.leaves(best_state[0].params))),
             "device": jax.devices()[0].device_kind, "jax": jax.__version__,
             "wall_s": time.perf_counter() - started, "runs": runs, "curve": curve,
             "log": log_lines}
  with open(os.path.join(out, RESULTS_FILE), "w") as f:
    json.dump(results, f, indent=2)
  shutil.copy(os.path.join(run_dir, CONFIG_FILE), out)
  log(f"Wrote {out}.")


# ---------------------------------------------------------------------------------------
# report (CPU)


def _summary(runs: list[dict], which: str) -> dict[str, dict[str, float]]:
  """Mean, min and max over seeds of each score of `which` ("best" or "last")."""
  return {key: {"mean": float(np.mean([r[which][key] for r in runs])),
                "min": float(np.min([r[which][key] for r in runs])),
                "max": float(np.max([r[which][key] for r in runs]))}
          for key in runs[0][which]}


def write_workdir(fit_dir: str, seed: int, workdir: str) -> None:
  """A byteflax workdir holding seed's kept parameters as a checkpoint at its step."""
  # pylint: disable=g-import-not-at-top  (TensorFlow / SeqIO)
  import orbax.checkpoint as ocp
  from byteflax import train
  with open(os.path.join(fit_dir, CONFIG_FILE)) as f:
    config = ml_collections.ConfigDict(json.load(f))
  trainer = train.Trainer(config)
  state = jax.device_get(trainer.init_state())
  with open(os.path.join(fit_dir, f"seed_{seed}.msgpack"), "rb") as f:
    kept = serialization.from_bytes(
        {"params": state.params, "quant_stats": state.quant_stats, "step": 0}, f.read())
  # A run that averaged its params keeps the average as its model (`train.load_variables`).
  state = state.replace(params=kept["params"], quant_stats=kept["quant_stats"],
                        ema_params=kept["params"] if state.ema_params else {},
                        step=np.asarray(kept["step"], np.int32))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, train.CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  manager = train.checkpoint_manager(workdir, config)
  manager.save(int(kept["step"]), args=ocp.args.StandardSave(state), force=True)
  manager.wait_until_finished()
  manager.close()


def report(fit_dir: str, out: str, workdirs: str | None) -> None:
  """Prints the table; writes <out>/results.json and the validation curves; with
  `workdirs`, <workdirs>/seed_<s>/ for byteflax.main --mode=eval / export / classify."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  with open(os.path.join(fit_dir, RESULTS_FILE)) as f:
    results = json.load(f)
  runs = results["runs"]
  results["summary"] = {which: _summary(runs, which) for which in ("best", "last")}
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, RESULTS_FILE), "w") as f:
    json.dump(results, f, indent=2)
  print(f"{results['model_name']} on {results['task']}, {results['budget']}; trained "
        f"{results['trained_steps']:,} steps on {results['device']} in "
        f"{results['wall_s']:.0f} s")
  keys = list(runs[0]["best"])
  print("| seed | kept step | " + " | ".join(keys) + " |")
  print("|---" * (len(keys) + 2) + "|")
  for run in runs:
    print(f"| {run['seed']} | {run['best_step']} | " + " | ".join(
        f"{run['best'][key]:.4f}" for key in keys) + " |")
  for which, summary in results["summary"].items():
    print(f"| {which}: mean (range) | | " + " | ".join(
        f"{s['mean']:.4f} ({s['min']:.4f}-{s['max']:.4f})" for s in summary.values()) + " |")
  figure, axis = plt.subplots(figsize=(6, 4))
  epochs = [point["epoch"] for point in results["curve"]]
  for member, run in enumerate(runs):
    axis.plot(epochs, [point["validation_auc"][member] for point in results["curve"]],
              marker="o", label=f"seed {run['seed']}")
  axis.set(xlabel="epoch", ylabel="validation ROC AUC",
           title=f"{results['model_name']} on {results['task']}")
  axis.grid(alpha=0.3)
  axis.legend()
  figure.tight_layout()
  figure.savefig(os.path.join(out, CURVE_FILE), dpi=120)
  print(f"Wrote {out}/{RESULTS_FILE} and {CURVE_FILE}.")
  if workdirs:
    for run in runs:
      workdir = os.path.join(workdirs, f"seed_{run['seed']}")
      write_workdir(fit_dir, run["seed"], workdir)
      print(f"Workdir {workdir}: step {run['best_step']} of seed {run['seed']}.")


@cli.clean_input_errors
def main(argv):
  if len(argv) != 2 or argv[1] not in ("bundle", "fit", "report"):
    raise app.UsageError("Usage: python -m benchmarks.accelerator_fit bundle|fit|report ...")
  args = flags.FLAGS
  if argv[1] == "bundle":
    bundle(args.config, args.out, args.name)
  elif argv[1] == "fit":
    fit(args.bundle, args.name, args.out, [int(s) for s in args.seeds], args.deadline_s)
  else:
    report(args.fit, args.out, args.workdirs)


if __name__ == "__main__":
  # Defined here, not at import: tests import this module beside other programs' flags.
  config_flags.DEFINE_config_file("config", None, "bundle: the run's config.",
                                  lock_config=False)
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_string("bundle", None, "fit: the folder `bundle` wrote.")
  flags.DEFINE_string("name", "run", "bundle, fit: the run's name in the bundle.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "fit: seeds trained together.")
  flags.DEFINE_float("deadline_s", None, "fit: stop training after this many seconds and "
                     "evaluate what there is (the results say at which step).")
  flags.DEFINE_string("fit", None, "report: the folder `fit` wrote.")
  flags.DEFINE_string("workdirs", None,
                      "report: also write one byteflax workdir per seed under this folder.")
  app.run(main)
