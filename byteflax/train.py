"""Training and evaluation of byte-level models: classifiers, and encoder-decoders pretrained
by span corruption.

The steps (`byteflax/step.py`: `train_step`, `eval_step`) are pure functions of (state, batch),
jitted once here with explicit shardings; `train_and_evaluate` is the loop around them: input,
logging, checkpoints, evals.
What differs between classification and pretraining (model, loss, metrics, batches) is the
run's objective (`byteflax/objectives.py`, chosen by config.model_name).
"""

from __future__ import annotations

from collections.abc import Sequence
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import signal
import threading
import time
from typing import Any

from absl import logging
from clu import metric_writers
from etils import epath
import flax
import flax.linen as nn
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import seqio

from byteflax import cli
from byteflax import distill
from byteflax import input_pipeline
from byteflax import objectives
from byteflax import partitioning
from byteflax import paths
from byteflax import pretrained
from byteflax import quant
from byteflax import step as step_lib

CONFIG_FILE = "config.json"  # The run's config, written into its workdir when it starts.
EVAL_FILE = "eval.json"  # The final evaluation of the run's model.


def training_steps(config: ml_collections.ConfigDict, task_name: str) -> tuple[int, str]:
  """`step.step_budget` of the task's training split: how many steps to train, and a line
  for the log saying how that was chosen."""
  if config.total_steps or not config.get("num_epochs"):
    return step_lib.step_budget(config, None)
  return step_lib.step_budget(config, _training_examples(task_name, "config.num_epochs "
                                                         "cannot size the run"))


def _training_examples(task_name: str, why_needed: str) -> int:
  """How many examples the task's training split has (ValueError if it does not say)."""
  try:
    examples = seqio.get_mixture_or_task(task_name).num_input_examples("train")
  except Exception as error:  # pylint: disable=broad-except  # TFDS without its data, etc.
    examples, why = None, f" ({type(error).__name__}: {error})"
  else:
    why = ""
  if not examples:
    raise ValueError(f"Task {task_name!r} does not say how many training examples it has"
                     f"{why}, so {why_needed}; set config.total_steps.")
  return examples


class Trainer:
  """Owns the mesh, the jitted steps and their shardings for one config."""

  def __init__(self, config: ml_collections.ConfigDict, devices=None, *,
               training: bool = True):
    """devices: the mesh's devices (default: all); tests compare meshes of one process.
    training=False: a model to apply (score texts, export), not to train: nothing here
    reads the training data (no step budget, no epoch-based evals, no `train_step`), so a
    run copied without its data files still loads."""
    self.config = config
    self.objective = objectives.for_config(config)
    distillation = step_lib.distillation_settings(config)
    if distillation and not isinstance(self.objective, objectives.Classification):
      raise ValueError(f"config.distill.alpha = {config.distill.alpha} distils a classifier's "
                       f"logits, but this config trains {type(self.objective).__name__}; set "
                       "it to 0.")
    self.label_names = getattr(self.objective, "label_names", ())
    self.model = self.objective.build_model()
    self.mesh = partitioning.make_mesh(config.mesh, devices)
    # The optimizer state's structure, which checkpoints hold, does not depend on the budget.
    self.total_steps, self.budget = (training_steps(config, self.task_name) if training
                                     else (1, "not training"))
    # Parsed here so that a wrong select_by fails before any teacher fit or training step.
    self.selection = Selection.from_config(config)
    # Evals every so many epochs need the epoch's length in steps.
    by_epochs = training and any(evaluation.get("every_epochs")
                                 for evaluation in config.evals.values())
    self.epoch_steps = step_lib.steps_per_epoch(config, _training_examples(
        self.task_name, "config.evals.*.every_epochs cannot place its evals")
                                                ) if by_epochs else None
    self.tx, self.schedule = step_lib.make_optimizer(config.optim, self.total_steps)
    ema_decay = step_lib.check_ema_decay(config.optim.get("ema_decay"))

    def init_boxed(rng):
      params_rng, dropout_rng = jax.random.split(rng)
      variables = self.model.init(params_rng, *self.objective.init_args(), train=False)
      return step_lib.initial_state(self.model.apply, variables, self.tx, dropout_rng,
                                    ema_decay)

    # Shardings come from the logical names on the (abstract, boxed) params; the state
    # itself holds plain arrays so checkpoints and optimizers see ordinary pytrees.
    with self.sharding_context():
      abstract = jax.eval_shape(init_boxed, jax.random.PRNGKey(0))
      self.state_sharding = partitioning.logical_to_sharding(abstract, self.mesh)
      self._init = jax.jit(lambda rng: nn.meta.unbox(init_boxed(rng)),
                           out_shardings=self.state_sharding)
    self._abstract_state = nn.meta.unbox(abstract)
    self.batch_sharding = partitioning.batch_sharding(self.mesh)
    if training:
      self.train_step = jax.jit(
          functools.partial(step_lib.train_step, objective=self.objective,
                            **distillation, **step_lib.output_settings(config, self.model),
                            ema_decay=ema_decay),
          in_shardings=(self.state_sharding, self.batch_sharding),
          out_shardings=(self.state_sharding, None), donate_argnums=(0,))
    # Eval outputs are small ([batch, labels]): replicated, so every host can read them.
    self.eval_step = jax.jit(
        functools.partial(step_lib.eval_step, objective=self.objective),
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))

  @property
  def task_name(self) -> str:
    """The objective's SeqIO task (reading a user's files the first time it is asked for)."""
    return self.objective.task_name

  def eval_is_due(self, name: str, step: int) -> bool:
    """Whether eval `name` runs after training step `step`: every `every_steps` steps, and
    at the first step of each multiple of `every_epochs` epochs (0: neither)."""
    evaluation = self.config.evals[name]
    if evaluation.get("every_steps") and step % evaluation.every_steps == 0:
      return True
    if not evaluation.get("every_epochs"):
      return False
    interval = evaluation.every_epochs * self.epoch_steps
    return math.floor(step / interval) > math.floor((step - 1) / interval)

  def sharding_context(self):
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES))
    return stack

  def init_state(self) -> step_lib.TrainState:
    with self.sharding_context():
      return self._init(jax.random.PRNGKey(self.config.seed))

  def abstract_state(self) -> step_lib.TrainState:
    """Shapes, dtypes and shardings of the state: the restore target for checkpoints."""
    return jax.tree.map(
        lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        self._abstract_state, self.state_sharding)

  def device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in batch.items()}

  def run_train_step(self, state, batch):
    with self.sharding_context():
      return self.train_step(state, self.device_batch(batch))

  def evaluate(self, state: step_lib.TrainState, split: str,
               thresholds: dict[str, float] | None = None) -> dict[str, float]:
    """Exact metrics over one full pass of `split` (thresholds: `objective.metrics`')."""
    with self.sharding_context():
      outputs = [jax.device_get(self.eval_step(state, self.device_batch(batch)))
                 for batch in self.objective.eval_batches(split)]
    return self.objective.metrics(outputs, split, thresholds)


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which checkpoint is a run's model (config.checkpoint.select_by, select_mode).

  "validation/auc" with mode "max": of the checkpoints saved with that eval's metrics (each
  periodic run of the eval, and the last step), the one with the highest validation ROC
  AUC, as Keras' `ModelCheckpoint(save_best_only=True)` or Hugging Face's
  `load_best_model_at_end` keep. The final evaluation, export, classify, report and
  `init_from` read that checkpoint; training resumes from the newest.
  """
  eval_name: str
  metric: str
  mode: str

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Selection | None:
    """The config's rule; None (select_by "") makes the newest checkpoint the model."""
    select_by = config.checkpoint.get("select_by") or ""
    if not select_by:
      return None
    eval_name, _, metric = select_by.partition("/")
    mode = config.checkpoint.get("select_mode", "max")
    if not metric or eval_name not in config.get("evals", {}):
      raise ValueError(
          f"config.checkpoint.select_by = {select_by!r} must be '<eval name>/<metric>' with "
          f"an eval of config.evals ({sorted(config.get('evals', {}))}), e.g. "
          "'validation/auc'; '' keeps the newest checkpoint as the model.")
    if mode not in ("max", "min"):
      raise ValueError(f"config.checkpoint.select_mode must be 'max' or 'min', got {mode!r}.")
    return cls(eval_name, metric, mode)

  def __str__(self) -> str:
    return f"{self.eval_name}/{self.metric}"

  def value(self, metrics: Any) -> float | None:
    """The metric in a checkpoint's stored metrics ({eval name: results}), if there."""
    value = ((metrics or {}).get(self.eval_name) or {}).get(self.metric)
    return None if value is None else float(value)

  def score(self, metrics: Any) -> float:
    """Higher is better; -inf for metrics without a finite value (e.g. a one-class
    validation split's nan AUC), which never makes a checkpoint the model."""
    value = self.value(metrics)
    if value is None or not math.isfinite(value):
      return -math.inf
    return value if self.mode == "max" else -value

  def best_step(self, manager: ocp.CheckpointManager) -> int | None:
    """The step of the best checkpoint (the newer of equals); None if none has the metric."""
    scored = [(self.score(manager.metrics(step)), step) for step in manager.all_steps()]
    scored = [item for item in scored if item[0] > -math.inf]
    return max(scored)[1] if scored else None


class _CheckpointManager(ocp.CheckpointManager):
  """Orbax's manager, reading a checkpoint's unreadable metrics as none: it reads every
  step's metrics when it opens, and one corrupt checkpoint must not stop a run from
  falling back to an older one (`restore_latest`)."""

  def metrics(self, step: int) -> Any:
    try:
      return super().metrics(step)
    except (ValueError, OSError) as error:  # json.JSONDecodeError is a ValueError.
      logging.error("The metrics of the checkpoint at step %d are unreadable (%s: %s); it "
                    "cannot be selected.", step, type(error).__name__, error)
      return None


def checkpoint_manager(workdir: str, config: ml_collections.ConfigDict
                       ) -> ocp.CheckpointManager:
  """The run's checkpoints: the newest config.checkpoint.keep, plus the selected one."""
  selection = Selection.from_config(config)
  keep = [ocp.checkpoint_managers.LatestN(config.checkpoint.keep)]
  if selection:
    keep.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=selection.score, n=1, keep_checkpoints_without_metrics=False))
  return _CheckpointManager(
      paths.absolute(workdir) / "checkpoints",
      options=ocp.CheckpointManagerOptions(
          save_interval_steps=config.checkpoint.every_steps,
          preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(keep),
          # Orbax stores a save's metrics only when it tracks a best checkpoint.
          best_fn=selection.score if selection else None,
          create=True))


def restore_latest(manager: ocp.CheckpointManager, trainer: Trainer) -> step_lib.TrainState | None:
  """Newest readable checkpoint, falling back to older ones when the newest is corrupt."""
  state = _restore_first(manager, trainer, sorted(manager.all_steps(), reverse=True))
  if state is None and manager.all_steps():
    raise cli.InputError(
        f"No checkpoint in {manager.directory} could be restored; move the directory "
        "aside to start from scratch, or fix the config to match the checkpoints.")
  return state


def _restore_first(manager: ocp.CheckpointManager, trainer: Trainer, steps
                   ) -> step_lib.TrainState | None:
  """The state of the first of `steps` that restores (None if none does)."""
  target = trainer.abstract_state()
  for step in steps:
    try:
      state = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as error:  # pylint: disable=broad-except
      logging.error("Checkpoint at step %d is unreadable (%s: %s).",
                    step, type(error).__name__, error)
      continue
    logging.info("Restored checkpoint at step %d.", step)
    return state
  return None


def _model_checkpoint(workdir: str, selection: Selection | None = None
                      ) -> tuple[ocp.CheckpointManager, int, str]:
  """A read-only manager of a run's checkpoints, the step of its model (`selection`'s best,
  else the newest) and the directory."""
  directory = paths.absolute(workdir) / "checkpoints"
  manager = step = None
  if directory.is_dir():
    manager = _CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers=ocp.PyTreeCheckpointHandler())
    step = selection.best_step(manager) if selection else None
    if step is None:
      step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(
        f"No checkpoint under {directory}; train the model first "
        f"(python -m byteflax.main --config=... --workdir={workdir}).")
  return manager, step, directory


def _model_params_key(manager: ocp.CheckpointManager, step: int) -> str:
  """Where a checkpoint keeps the params its model is applied with (`step.model_params`):
  "ema_params" when the run averaged them (config.optim.ema_decay), else "params"."""
  return "ema_params" if manager.item_metadata(step).tree.get("ema_params") else "params"


def load_pretrained_encoder(workdir: str, trainer: Trainer, params: Any) -> Any:
  """`params` with the classifier's encoder replaced by an encoder-decoder run's encoder.

  The encoder-decoder keeps its encoder under `params["encoder"]` with the classifier's
  names (embed, gbst, encoder; see `seq2seq`). Exactly those subtrees are read (orbax
  partial restore: no decoder, optimizer or step); the classifier's pooling and head keep
  their fresh initialisation.

  Raises:
    ValueError: a pretrained parameter is missing from this classifier or has another
      shape; the message names its path.
  """
  manager, step, directory = _model_checkpoint(workdir)
  source = _model_params_key(manager, step)
  saved = flax.traverse_util.flatten_dict(
      manager.item_metadata(step).tree[source]["encoder"], sep="/")
  target = _pretrained_target(saved, trainer, f"{directory} (step {step})")
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item={source: {"encoder": target}},
      restore_args=ocp.checkpoint_utils.construct_restore_args({source: {"encoder": target}}),
      partial_restore=True))
  logging.info("Initialised %s from the encoder (%s) of step %d of %s.", sorted(target),
               source, step, directory)
  return {**params, **restored[source]["encoder"]}


def _pretrained_target(saved: dict[str, Any], trainer: Trainer, source: str) -> dict[str, Any]:
  """The classifier's abstract params of the subtrees a pretrained encoder holds (`saved`:
  flat "module/.../name" -> array or its metadata), after checking every shape.

  Raises:
    ValueError: a pretrained parameter is missing from this classifier or has another
      shape; the message names its path.
  """
  abstract = trainer.abstract_state().params
  target = {name: abstract[name] for name in {path.split("/")[0] for path in saved}
            if name in abstract}
  wanted = flax.traverse_util.flatten_dict(target, sep="/")
  for path in sorted(set(saved) | set(wanted)):
    saved_shape = tuple(saved[path].shape) if path in saved else None
    wanted_shape = tuple(wanted[path].shape) if path in wanted else None
    if saved_shape != wanted_shape:
      raise ValueError(
          f"Pretrained encoder parameter {path} in {source} has shape {saved_shape}, this "
          f"classifier's params/{path} has {wanted_shape} (None: absent). The "
          "classifier's config.model must match the pretraining config's model.encoder; "
          "to train this model from random weights instead, pass --config.init_from= (empty).")
  return target


def load_shipped_encoder(path: str, trainer: Trainer, params: Any) -> Any:
  """`params` with the encoder replaced by a shipped encoder file's (byteflax.pretrained)."""
  saved = pretrained.load(path)
  target = _pretrained_target(saved, trainer, path)
  shardings = flax.traverse_util.flatten_dict(
      {name: trainer.state_sharding.params[name] for name in target}, sep="/")
  encoder = flax.traverse_util.unflatten_dict(
      {key: jax.device_put(value, shardings[key]) for key, value in saved.items()}, sep="/")
  logging.info("Initialised %s from %s.", sorted(target), path)
  return {**params, **encoder}


def is_encoder_decoder_run(workdir: str) -> bool:
  """Whether a run's newest checkpoint holds an encoder-decoder (params encoder, decoder)."""
  manager, step, _ = _model_checkpoint(workdir)
  return set(manager.item_metadata(step).tree["params"]) == {"encoder", "decoder"}


def load_variables(workdir: str, trainer: Trainer,
                   collections: tuple[str, ...] = ("params", quant.COLLECTION)
                   ) -> tuple[dict[str, Any], int]:
  """Model variables and step of a run's model, on this mesh: the checkpoint that
  config.checkpoint.select_by chose (`Selection`), else the newest.

  Returns ({collection: values}, step) for the requested collections that this config's
  model has (quant_stats only when it quantizes): what `model.apply` takes. Optimizer
  state is not read, so any run of the same model works (float or quantized, older
  checkpoint layouts too): config.init_from starts a run from its params with a fresh
  step, optimizer and quantization ranges (e.g. quantization-aware fine-tuning of a float
  run); export and benchmarks apply the model with them. The params are the run's moving
  average where it kept one (config.optim.ema_decay).
  """
  manager, step, directory = _model_checkpoint(workdir, trainer.selection)
  abstract = trainer.abstract_state()
  # Stored names: the params are the run's moving average where it kept one.
  stored = {"params": _model_params_key(manager, step), quant.COLLECTION: quant.COLLECTION}
  target = {stored[name]: tree for name, tree in (("params", abstract.params),
                                                  (quant.COLLECTION, abstract.quant_stats))
            if name in collections and tree}
  try:
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))
    restored = {name: restored[key] for name, key in stored.items() if key in restored}
  except (ValueError, KeyError) as error:
    raise ValueError(
        f"The checkpoint at step {step} in {directory} does not hold {sorted(target)} of "
        f"this model ({type(error).__name__}: {error}); config.model_name, config.model, "
        "config.quant.enabled and the labels (config.data) must match the run it came "
        f"from, as in its {CONFIG_FILE}.") from error
  logging.info("Loaded %s from step %d of %s.", sorted(target), step, directory)
  return restored, step


def initial_params(trainer: Trainer, params: Any) -> Any:
  """A new run's params: `params` (random), or config.init_from's where it is set: a
  shipped encoder (a name in byteflax/pretrained/ or an .npz path), the encoder of a
  pretrained encoder-decoder run for a classifier, else that run's params."""
  init_from = trainer.config.get("init_from")
  if not init_from:
    return params
  shipped = pretrained.path_of(init_from)
  if shipped:
    return load_shipped_encoder(shipped, trainer, params)
  if not epath.Path(init_from).is_dir():
    raise FileNotFoundError(
        f"config.init_from={init_from!r} is no shipped encoder ({pretrained.names()}), no "
        ".npz and no run's workdir; pass one of them, or --config.init_from= (empty) for "
        "random weights.")
  if (isinstance(trainer.objective, objectives.Classification)
      and is_encoder_decoder_run(init_from)):
    return load_pretrained_encoder(init_from, trainer, params)
  return load_variables(init_from, trainer, collections=("params",))[0]["params"]


class MetricsLogger:
  """Scalars to clu's writers (TensorBoard + log) and to <workdir>/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.is_chief = jax.process_index() == 0
    self._writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_chief)
    self._jsonl_path = epath.Path(workdir) / "metrics.jsonl"

  def write_scalars(self, step: int, scalars: dict[str, float]):
    self._writer.write_scalars(step, scalars)
    if self.is_chief:
      with self._jsonl_path.open("a") as f:
        f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
                + "\n")

  def flush(self):
    self._writer.flush()


def run_evals(trainer: Trainer, state: step_lib.TrainState, step: int, names,
              writer: MetricsLogger | None, stored: dict[str, dict[str, float]] | None = None
              ) -> dict[str, dict[str, float]]:
  """{eval name: metrics} of the named evals at `step`, logged to `writer` (if any); those
  in `stored` (results that a checkpoint saved with it) are reused rather than run again."""
  results, thresholds = {}, None
  stored = stored or {}
  # Validation first: the other splits also report F1 at the thresholds it chose
  # (`f1_at_threshold`), what a deployed model would get, unlike their own best F1.
  for name in sorted(names, key=lambda n: trainer.config.evals[n].split != "validation"):
    split = trainer.config.evals[name].split
    if name in stored:
      results[name] = dict(stored[name])
    else:
      results[name] = trainer.evaluate(state, split,
                                       None if split == "validation" else thresholds)
      if writer:
        writer.write_scalars(step, {f"{name}/{k}": v for k, v in results[name].items()})
    if split == "validation" and trainer.label_names:
      thresholds = {label: results[name][f"f1_threshold/{label}"]
                    for label in trainer.label_names}
    shown = "  ".join(f"{key} {value:.4f}" for key, value in results[name].items()
                      if "/" not in key)
    logging.info("eval %s @ step %d%s: %s", name, step,
                 " (saved with its checkpoint)" if name in stored else "", shown)
  return results


def _check_finite(losses: list[jax.Array], first_step: int):
  values = np.asarray(jax.device_get(losses))
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    raise FloatingPointError(
        f"Loss became {values[bad[0]]} at step {first_step + int(bad[0])}; stopping without "
        "saving this state. The last checkpoint is the last one whose loss was finite: a "
        "rerun with a lower optim.learning_rate or optim.grad_clip_norm resumes from it (if "
        "it diverges again, its weights had already blown up: use a new --workdir).")


def write_final_eval(workdir: str, trainer: Trainer, state: step_lib.TrainState,
                     writer: MetricsLogger, manager: ocp.CheckpointManager,
                     differences: Sequence[str] = ()) -> dict[str, Any]:
  """Every configured eval of the run's model (`Selection`: the selected checkpoint, else
  `state`), logged to `writer` and written to <workdir>/eval.json.

  `differences`: the fields in which this config differs from the run's
  (`config_differences`; e.g. a new test file). Then the report lists them and goes to
  `eval_file(config)` instead, nothing is logged, and no result saved with a checkpoint is
  reused (it was computed under the run's config).
  """
  selection = trainer.selection
  last_step = int(jax.device_get(state.step))
  stored, chose = {}, {}
  if selection:
    manager.wait_until_finished()  # The last save's metrics are written asynchronously.
    best = selection.best_step(manager)
    if best is None:
      logging.warning("No checkpoint has %s (config.checkpoint.select_by); the newest, at "
                      "step %d, is the model.", selection, last_step)
    else:
      if not differences:
        stored = {selection.eval_name: manager.metrics(best)[selection.eval_name]}
      chose = {"selected_by": str(selection), "last_step": last_step}
      if best != last_step:
        last_value = selection.value(manager.metrics(last_step)) if (
            last_step in manager.all_steps()) else None
        logging.info("The model is the checkpoint of step %d, the best by %s (%.4f; the "
                     "last step, %d: %s).", best, selection,
                     selection.value(manager.metrics(best)), last_step,
                     "not evaluated" if last_value is None else f"{last_value:.4f}")
        state = _restore_first(manager, trainer, [best])
        if state is None:
          raise cli.InputError(
              f"The selected checkpoint, step {best} in {manager.directory}, is unreadable; "
              "set --config.checkpoint.select_by= to evaluate the newest.")
  step = int(jax.device_get(state.step))
  results = run_evals(trainer, state, step, list(trainer.config.evals),
                      None if differences else writer, stored)
  report = {"step": step, **chose, "task": trainer.task_name,
            "num_params": count_params(state.params), **results}
  if differences:
    report["config_differences"] = list(differences)
  if jax.process_index() == 0:
    (epath.Path(workdir) / eval_file(trainer.config, differences)).write_text(
        json.dumps(report, indent=2))
  return report


def eval_file(config: ml_collections.ConfigDict, differences: Sequence[str] = ()) -> str:
  """Where `write_final_eval` writes: eval.json for the run's own config, else
  eval_<hash of the config>.json, one file per config evaluated."""
  if not differences:
    return EVAL_FILE
  digest = hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()
  return f"eval_{digest[:8]}.json"


class PreemptionNotice:
  """Turns SIGTERM (how TPU / GPU / Kubernetes schedulers announce preemption) into a flag.

  The train loop polls it after each step, so the step in flight completes and is saved.
  In a single process the handler is installed for the duration of a `with` block (the
  previous handler is put back after). With several processes, JAX's distributed runtime
  already watches SIGTERM and agrees on one step at which all hosts stop
  (`reached_preemption_sync_point`); replacing its handler would break that, so none is
  installed.
  """

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    # Python can only install signal handlers in the main thread.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_signal(self, signum, frame):
    del frame  # Unused.
    logging.warning("Received %s: stopping after the current step to save a checkpoint.",
                    signal.Signals(signum).name)
    self.received = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received


def _train_loop(trainer: Trainer, state: step_lib.TrainState, start_step: int,
                manager: ocp.CheckpointManager, writer: MetricsLogger,
                preemption: PreemptionNotice, teacher_path: str | None
                ) -> tuple[step_lib.TrainState, bool]:
  """Steps start_step+1 .. total_steps with logging, checkpoints and periodic evals;
  training batches carry teacher logits from teacher_path when set (distillation).

  Returns the state and whether training stopped early on a preemption notice (after
  saving a checkpoint at the step it stopped at).
  """
  config, total_steps, selection = trainer.config, trainer.total_steps, trainer.selection
  teaching = {}  # What the batches carry beyond the teacher's logits.
  if teacher_path and config.distill.get("transfer"):
    teaching.update(transfer=config.distill.transfer,
                    transfer_rate=config.distill.transfer_rate)
  if teacher_path and config.distill.get("feature_weight"):
    teaching.update(teacher_features=True)
  batches = trainer.objective.train_batches(config.seed, start_step,
                                            teacher_path=teacher_path, **teaching)
  pending_losses, window_start, window_bytes = [], time.perf_counter(), 0
  first_pending = start_step + 1
  for step in range(start_step + 1, total_steps + 1):
    batch = next(batches)
    state, step_metrics = trainer.run_train_step(state, batch)
    # At most one step in flight: unchecked, the loop dispatches far ahead of a busy device,
    # and a stop signal then waits for every queued step to finish.
    if pending_losses:
      pending_losses[-1].block_until_ready()
    pending_losses.append(step_metrics["loss"])
    window_bytes += int(np.count_nonzero(batch["inputs"]))
    is_last = step == total_steps
    preempted = not is_last and preemption.should_stop(step)
    if step % config.log_every_steps == 0 or is_last or preempted:
      _check_finite(pending_losses, first_pending)
      elapsed = time.perf_counter() - window_start
      scalars = {"train/loss": float(np.mean(jax.device_get(pending_losses))),
                 "train/grad_norm": float(step_metrics["grad_norm"]),
                 "train/learning_rate": float(trainer.schedule(step - 1)),
                 "train/steps_per_sec": len(pending_losses) / elapsed,
                 "train/bytes_per_sec": window_bytes / elapsed}
      writer.write_scalars(step, scalars)
      logging.info("step %d/%d: loss %.4f  %.2f steps/s  %.0f bytes/s", step,
                   total_steps, scalars["train/loss"],
                   scalars["train/steps_per_sec"], scalars["train/bytes_per_sec"])
      pending_losses, window_start, window_bytes = [], time.perf_counter(), 0
      first_pending = step + 1
    # Evals before the save, so that the selection eval's metrics are saved with the state
    # they score; at the last step only that one (the final evaluation runs the rest).
    due = [name for name in config.evals if trainer.eval_is_due(name, step)]
    if is_last:
      due = [selection.eval_name] if selection else []
    results = {}
    if due and not preempted:
      _check_finite(pending_losses, first_pending)
      results = run_evals(trainer, state, step, due, writer)
    metrics = _selection_metrics(selection, results)
    if manager.should_save(step) or is_last or preempted or metrics:
      _check_finite(pending_losses, first_pending)
      # A save without an eval stores empty metrics (never selected: Selection.score),
      # rather than none, which orbax warns about on every save when it tracks a best.
      manager.save(step, args=ocp.args.StandardSave(state),
                   metrics=metrics if metrics is not None or selection is None else {},
                   force=is_last or preempted or metrics is not None)
    if preempted:
      return state, True
  return state, False


def _selection_metrics(selection: Selection | None, results: dict[str, dict[str, float]]
                       ) -> dict[str, dict[str, float]] | None:
  """What a checkpoint saves for `Selection`: the selection eval's results, if it ran."""
  if selection is None or selection.eval_name not in results:
    return None
  scored = results[selection.eval_name]
  if selection.metric not in scored:
    raise ValueError(
        f"config.checkpoint.select_by = '{selection}', but eval {selection.eval_name!r} "
        f"reports {sorted(scored)}; name one of them, or '' to keep the newest checkpoint "
        "(the checkpoints so far are kept: rerun to resume).")
  return {selection.eval_name: {key: float(value) for key, value in scored.items()}}


def run_config(workdir: str, given: ml_collections.ConfigDict | None = None
               ) -> ml_collections.ConfigDict:
  """The config a run was trained with, from the config.json `train_and_evaluate` wrote:
  what evaluating, exporting or scoring with the run needs, unless the user gives one
  (`given`, e.g. a --config flag's value, is then returned as it is)."""
  if given is not None:
    return given
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"No {CONFIG_FILE} in {workdir}: not a byteflax.main workdir.")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


# What a run's checkpoints were trained on: a resumed run must keep it (the rest, e.g. the
# step budget or the evals, may change between the runs of one workdir).
RUN_IDENTITY = ("model_name", "model", "data.task", "data.train_path", "data.validation_path",
                "data.test_path", "data.text_key", "data.label_keys", "data.positive_label",
                "data.invalid_utf8", "data.validation_fraction", "data.split_seed",
                "optim.ema_decay")


def config_differences(config: ml_collections.ConfigDict, workdir: str,
                       fields: Sequence[str] | None = None) -> list[str]:
  """"<field> is <value> there, <value> here" for each field in which `config` differs from
  the run's config.json: fields (and the fields under) `fields`, else all. A field that one
  of them lacks reads as None (a config.json written before the field existed)."""
  stored = traverse_util.flatten_dict(run_config(workdir).to_dict(), sep=".")
  new = traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
  return [f"{key} is {stored.get(key)!r} there, {new.get(key)!r} here"
          for key in sorted(stored.keys() | new.keys())
          if (fields is None or any(key == f or key.startswith(f + ".") for f in fields))
          and stored.get(key) != new.get(key)]


def check_same_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises if workdir holds checkpoints of a run whose `RUN_IDENTITY` differs from config's
  (e.g. the default command rerun without the data flags in a workdir of one's own files)."""
  checkpoints = epath.Path(workdir) / "checkpoints"
  if not ((epath.Path(workdir) / CONFIG_FILE).exists() and checkpoints.is_dir()
          and any(checkpoints.iterdir())):
    return
  differences = config_differences(config, workdir, RUN_IDENTITY)
  if differences:
    raise cli.InputError(
        f"{workdir} holds checkpoints of another run: {'; '.join(differences)}. Pass another "
        "--workdir, or the run's own config (`--mode=eval` without --config evaluates it as "
        "it was trained).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from the newest checkpoint in workdir), then writes eval.json."""
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  check_same_run(config, workdir)
  trainer = Trainer(config)
  writer = MetricsLogger(workdir)
  if jax.process_index() == 0:
    (epath.Path(workdir) / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
  manager = checkpoint_manager(workdir, config)
  state = restore_latest(manager, trainer)
  if state is None:
    state = trainer.init_state()
    state = state.replace(params=initial_params(trainer, state.params))
  start_step = int(jax.device_get(state.step))
  logging.info("Model %s: %d parameters; task %s; mesh %s.", config.model_name,
               count_params(state.params), trainer.task_name, dict(trainer.mesh.shape))
  logging.info("Training budget: %s.", trainer.budget)
  train_length = input_pipeline.train_length(config.data)  # Checked before a teacher's fit.
  if train_length < config.data.max_length:
    logging.info("Training texts are cut to %d bytes (EOS included); evaluation reads %d.",
                 train_length, config.data.max_length)
  if start_step >= trainer.total_steps:
    logging.info("Training already finished (step %d of %d); evaluating only.", start_step,
                 trainer.total_steps)
  else:
    teacher_path = distill.prepare_teacher(config, workdir)
    logging.info("Training steps %d -> %d.", start_step, trainer.total_steps)
    # Whatever stops the loop (a NaN, Ctrl-C, an input error), let the asynchronous
    # checkpoint writes already started finish, so the last good state is on disk.
    try:
      with PreemptionNotice() as preemption:
        state, preempted = _train_loop(trainer, state, start_step, manager, writer,
                                       preemption, teacher_path)
    finally:
      manager.wait_until_finished()
    if preempted:
      step = int(jax.device_get(state.step))
      logging.warning("Preempted: checkpoint saved at step %d of %d in %s; run the same "
                      "command again to resume.", step, trainer.total_steps,
                      manager.directory)
      writer.flush()
      manager.close()
      return {"step": step, "preempted": True}
  report = write_final_eval(workdir, trainer, state, writer, manager)
  writer.flush()
  manager.close()
  return report


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """--mode=eval: evaluates the run's model (`Selection`) on every configured eval.

  Under the run's own config the results rewrite eval.json and join metrics.jsonl. Under
  another (a new test file, `model.representation_dims`, ...), or when the workdir has no
  config.json to compare with, they go to eval_<hash of the config>.json, computed afresh,
  and the run's own records stay as they are; the report lists the differences
  (`config_differences`).
  """
  trainer = Trainer(config)
  manager = checkpoint_manager(workdir, config)
  state = restore_latest(manager, trainer)
  if state is None:
    raise FileNotFoundError(
        f"No checkpoint under {epath.Path(workdir) / 'checkpoints'}; train first "
        "(--mode=train).")
  # Without the run's config.json (e.g. checkpoints copied alone) nothing tells whether this
  # config reads texts as the run did: evaluate afresh rather than trust saved results.
  differences = (config_differences(config, workdir)
                 if (epath.Path(workdir) / CONFIG_FILE).exists()
                 else [f"{CONFIG_FILE} is missing there"])
  if differences:
    logging.info("This config differs from the run's (%s): the results go to %s; the run's "
                 "own %s and metrics.jsonl, if any, stay as they are.", "; ".join(differences),
                 eval_file(config, differences), EVAL_FILE)
  writer = MetricsLogger(workdir)
  report = write_final_eval(workdir, trainer, state, writer, manager, differences)
  writer.flush()
  manager.close()
  return report
