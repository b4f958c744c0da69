"""One optimizer step and one evaluation step: pure functions of (state, batch).

What `byteflax.train` jits with explicit shardings and loops over, kept apart from the input
pipeline (TensorFlow / SeqIO) and the checkpoints, so the same step runs wherever JAX runs:
`benchmarks/accelerator_fit.py` trains with it on GPU machines that have JAX but not
TensorFlow.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from flax import struct
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

from byteflax import quant


class Objective(Protocol):
  """What a step needs from a run's objective (byteflax/objectives.py implements it)."""

  def model_args(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, ...]: ...

  def loss(self, logits: jax.Array, batch: dict[str, jax.Array]
           ) -> tuple[jax.Array, jax.Array]: ...

  def eval_outputs(self, logits: jax.Array, batch: dict[str, jax.Array]
                   ) -> dict[str, jax.Array]: ...


def weighted_sigmoid_loss(logits, labels, weights):
  """Mean binary cross-entropy over labels, weighted over examples -> (sum, weight)."""
  per_example = optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1)
  return jnp.sum(per_example * weights), jnp.sum(weights)


class TrainState(train_state.TrainState):
  """Params, optimizer state, step, the base rng that dropout keys are folded from, the
  activation ranges of fake quantization (`quant_stats`; empty when quantization is off)
  and an exponential moving average of the params (`ema_params`; empty when
  config.optim.ema_decay is unset), which is then the model that evaluates and exports."""
  rng: jax.Array
  quant_stats: Any
  ema_params: Any = struct.field(default_factory=dict)


def initial_state(apply_fn, variables: Any, tx: optax.GradientTransformation,
                  rng: jax.Array, ema_decay: float) -> TrainState:
  """The state before the first step, from a model's `init` variables (unboxed or boxed).
  Where the run averages the params (`ema_decay` > 0), the average starts as a copy of
  them, which train_step's first update replaces."""
  return TrainState.create(apply_fn=apply_fn, params=variables["params"], tx=tx, rng=rng,
                           quant_stats=variables.get(quant.COLLECTION, {}),
                           ema_params=variables["params"] if ema_decay else {})


def model_params(state: TrainState) -> Any:
  """The params the model is evaluated (and exported) with: their moving average where the
  run keeps one, else the trained params themselves."""
  return state.ema_params or state.params


def check_ema_decay(ema_decay: float | None) -> float:
  """config.optim.ema_decay as train_step takes it: 0 (None: no average) or in (0, 1)."""
  if ema_decay is None:
    return 0.0
  if not 0 < ema_decay < 1:
    raise ValueError(f"config.optim.ema_decay must be in (0, 1) (e.g. 0.999; unset: no "
                     f"average of the params), got {ema_decay}.")
  return float(ema_decay)


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with warmup then cosine / linear / constant decay and global-norm clipping."""
  decay_steps = max(total_steps - optim.warmup_steps, 1)
  end_value = optim.learning_rate * optim.end_learning_rate_factor
  decays = {
      "cosine": optax.cosine_decay_schedule(
          optim.learning_rate, decay_steps, alpha=optim.end_learning_rate_factor),
      "linear": optax.linear_schedule(optim.learning_rate, end_value, decay_steps),
      "constant": optax.constant_schedule(optim.learning_rate),
  }
  if optim.schedule not in decays:
    raise ValueError(f"Unknown optim.schedule {optim.schedule!r}; choose from {sorted(decays)}.")
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, optim.learning_rate, optim.warmup_steps),
       decays[optim.schedule]], [optim.warmup_steps])
  tx = optax.chain(
      optax.clip_by_global_norm(optim.grad_clip_norm),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay,
                  # Decay matrices only: biases and per-channel vectors are not overfit-prone.
                  mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params)))
  return tx, schedule


SOFT_LOSSES = ("cross_entropy", "logit_mse")


def distillation_loss(logits, labels, teacher_logits, weights, alpha: float,
                      temperature: float, label_weights=None,
                      soft_loss: str = "cross_entropy"):
  """(1 - alpha) x cross-entropy with the labels + alpha x a teacher term -> (weighted sum,
  weight).

  The teacher term (`soft_loss`): "cross_entropy", T^2 x cross-entropy with the teacher's
  probabilities, both at temperature T (T^2 keeps its gradient scale independent of T;
  Hinton et al., 2015); or "logit_mse", half the squared difference of the log-odds (Tang
  et al., 2019), whose gradient does not fade where both are confident, so the student
  also copies the teacher's ranking among its confident texts (T cancels out of it).
  All of `[batch, labels]` but weights and label_weights `[batch]`; label_weights (default
  all 1) switch the label term off for transfer texts, which have no labels.
  """
  hard = optax.sigmoid_binary_cross_entropy(logits, labels)
  if label_weights is not None:
    hard = hard * label_weights[:, None]
  if soft_loss == "logit_mse":
    soft = 0.5 * jnp.square(logits - teacher_logits)
  else:
    soft = optax.sigmoid_binary_cross_entropy(
        logits / temperature, jax.nn.sigmoid(teacher_logits / temperature)) * temperature**2
  per_example = ((1 - alpha) * hard + alpha * soft).mean(axis=-1)
  return jnp.sum(per_example * weights), jnp.sum(weights)


def similarity_loss(features, teacher_features, weights):
  """Similarity-preserving distillation (Tung and Mori, 2019): how far the student's texts
  lie from each other as the teacher's do.

  features `[batch, d]` (the student's pooled vectors) and teacher_features
  `[batch, d_teacher]` (the teacher's, any width) are each centred on the batch mean and
  their rows scaled to unit length; the loss is the mean squared difference of the two
  `[batch, batch]` cosine-similarity matrices over the pairs of real rows (weights
  `[batch]`, 0 for padding). Only similarities are compared, so neither a projection nor
  equal widths are needed, and a teacher's features pass on more than its one log-odds
  per text: which texts it deems alike.
  """
  def cosines(x):
    x = x.astype(jnp.float32)
    x = x - jnp.sum(x * weights[:, None], 0) / jnp.maximum(jnp.sum(weights), 1.0)
    # rsqrt of a clamped square, not a clamped norm: a zero row's gradient stays finite.
    x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))
    return x @ x.T

  pairs = weights[:, None] * weights[None, :]
  difference = jnp.square(cosines(features) - cosines(teacher_features))
  return jnp.sum(pairs * difference) / jnp.maximum(jnp.sum(pairs), 1.0)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               objective: Objective, distill_alpha: float = 0.0,
               distill_temperature: float = 1.0,
               distill_soft_loss: str = "cross_entropy",
               distill_feature_weight: float = 0.0,
               output_loss_weights: tuple[float, ...] = (), outputs: str = "",
               ema_decay: float = 0.0) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step.

  Args:
    state: params, optimizer state, step and base rng.
    objective: the run's objective (model arguments and loss; static).
    batch: what the objective reads (inputs `[batch, length]` int32, weights `[batch]`,
      labels `[batch, labels]` or targets `[batch, targets_length]`); with
      distill_alpha > 0 also teacher_logits `[batch, labels]`, and label_weights `[batch]`
      with transfer texts.
    distill_alpha: weight of the teacher term (`distillation_loss`); 0 trains on the
      labels alone.
    distill_temperature: the distillation temperature.
    distill_soft_loss: the teacher term, "cross_entropy" or "logit_mse".
    distill_feature_weight: weight of `similarity_loss` between the model's pooled vectors
      and batch["teacher_features"] `[batch, d_teacher]`, added to the loss; 0: none.
    output_loss_weights: for a model with several outputs (early exits, Matryoshka
      dims; `output_settings`), one weight per output: the loss is the weighted mean of
      every output's loss, all trained jointly. Empty: the model's output alone.
    outputs: the model's keyword that returns them stacked ("all_exits", "all_dims").
    ema_decay: > 0 updates state.ema_params, the params' exponential moving average (Polyak
      averaging), at decay min(ema_decay, t / (t + 10)) after t steps: the first update
      copies the params, and the average spans only the steps taken while it is young (as
      TensorFlow's ExponentialMovingAverage with num_updates).

  Returns:
    The updated state and {"loss", "grad_norm"} of this step.
  """
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  def mean_loss(logits):
    if distill_alpha:
      loss_sum, weight = distillation_loss(logits, batch["labels"], batch["teacher_logits"],
                                           batch["weights"], distill_alpha,
                                           distill_temperature, batch.get("label_weights"),
                                           distill_soft_loss)
    else:
      loss_sum, weight = objective.loss(logits, batch)
    return loss_sum / weight

  def loss_fn(params):
    # Quantization ranges follow this batch (an EMA); they are not trained by gradients.
    logits, updates = state.apply_fn(
        {"params": params, quant.COLLECTION: state.quant_stats}, *objective.model_args(batch),
        train=True, rngs={"dropout": dropout_rng},
        mutable=[quant.COLLECTION] + (["intermediates"] if distill_feature_weight else []),
        **({outputs: True} if output_loss_weights else {}))
    if output_loss_weights:  # logits: [outputs, batch, labels].
      loss = sum(w * mean_loss(output_logits) for w, output_logits in
                 zip(output_loss_weights, logits)) / sum(output_loss_weights)
    else:
      loss = mean_loss(logits)
    if distill_feature_weight:
      loss += distill_feature_weight * similarity_loss(
          updates["intermediates"]["pooled"][-1], batch["teacher_features"], batch["weights"])
    return loss, updates.get(quant.COLLECTION, state.quant_stats)

  (loss, quant_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, quant_stats=quant_stats)
  if ema_decay:
    decay = jnp.minimum(ema_decay, state.step / (state.step + 10.0))
    new_state = new_state.replace(ema_params=optax.incremental_update(
        new_state.params, state.ema_params, step_size=1.0 - decay))
  return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}


def eval_step(state: TrainState, batch: dict[str, jax.Array],
              objective: Objective) -> dict[str, jax.Array]:
  """The objective's eval outputs of one batch (what its metrics reduce)."""
  # quant_stats is immutable here, so quantization ranges are frozen.
  logits = state.apply_fn({"params": model_params(state), quant.COLLECTION: state.quant_stats},
                          *objective.model_args(batch), train=False)
  return objective.eval_outputs(logits, batch)


def _labelled_share(config: ml_collections.ConfigDict) -> float:
  """The share of a training batch that labelled examples fill (the rest: transfer texts)."""
  if distillation_settings(config) and config.distill.get("transfer"):
    return 1.0 - config.distill.transfer_rate
  return 1.0


def steps_per_epoch(config: ml_collections.ConfigDict, examples: int) -> int:
  """Steps of one pass over `examples` labelled training examples (`step_budget`)."""
  return math.ceil(examples / (config.data.batch_size * _labelled_share(config)))


def step_budget(config: ml_collections.ConfigDict, examples: int | None) -> tuple[int, str]:
  """How many steps to train on `examples` training examples, and a line for the log
  saying how that was chosen.

  config.total_steps when set; otherwise the budget follows the data: config.num_epochs
  passes over the training split, capped at config.max_steps (None: no cap), so one
  config serves a user's 4k-example file (a few epochs) and 147k comments (the cap).
  With distillation transfer texts mixed in (config.distill.transfer), an epoch is still
  one pass over the labelled examples, which then fill only 1 - transfer_rate of a batch.
  """
  if config.total_steps:
    return config.total_steps, f"{config.total_steps} steps (config.total_steps)"
  if not config.get("num_epochs"):
    raise ValueError("Set config.total_steps, or config.num_epochs (and max_steps) to train "
                     "for a number of passes over the data.")
  if not examples:
    raise ValueError("config.num_epochs needs the number of training examples; set "
                     "config.total_steps.")
  of_batch = ""
  if _labelled_share(config) < 1.0:
    of_batch = (f" ({_labelled_share(config):.0%} of each, the rest transfer texts: "
                "config.distill.transfer_rate)")
  epoch_steps = steps_per_epoch(config, examples)
  steps = math.ceil(config.num_epochs * epoch_steps)
  explanation = (f"{config.num_epochs} epochs of {examples:,} training examples at batch "
                 f"{config.data.batch_size}{of_batch} = {steps:,} steps")
  if config.get("max_steps") and steps > config.max_steps:
    steps = config.max_steps
    explanation += (f", capped at config.max_steps = {steps:,} "
                    f"({steps / epoch_steps:.2f} epochs)")
  return steps, explanation


def output_settings(config: ml_collections.ConfigDict, model) -> dict[str, Any]:
  """train_step's output_loss_weights and outputs for a model with several outputs.

  Early exits (`model.num_exits` > 1): config.exit_loss_weights, one per exit, or by default
  the exit's depth (1, 2, ...: deeper exits weigh more, as the weighted average of BERxiT,
  Xin et al. 2021). Matryoshka dims (`model.matryoshka_dims`): equal weights, as MRL's.
  Empty for a model with one output.
  """
  exits = getattr(model, "num_exits", 1)
  nested = len(getattr(model, "matryoshka_dims", ()))
  if exits > 1 and nested:
    raise ValueError("Early exits and Matryoshka dims are trained one at a time: set "
                     "config.model.early_exit=False or config.model.matryoshka_dims=().")
  if config.get("exit_loss_weights") and exits == 1:
    raise ValueError("config.exit_loss_weights is set but the model has one exit; set "
                     "config.model.early_exit=True (ByteQRNN) or remove it.")
  if nested:
    return {"output_loss_weights": (1.0,) * (nested + 1), "outputs": "all_dims"}
  if exits == 1:
    return {}
  weights = tuple(config.get("exit_loss_weights") or range(1, exits + 1))
  if len(weights) != exits or min(weights) < 0 or not sum(weights):
    raise ValueError(f"config.exit_loss_weights needs {exits} non-negative weights (one per "
                     f"exit, not all 0), got {weights}.")
  return {"output_loss_weights": tuple(float(w) for w in weights), "outputs": "all_exits"}


def distillation_settings(config: ml_collections.ConfigDict) -> dict[str, float]:
  """train_step's distill_* arguments: empty unless config.distill.alpha > 0."""
  settings = config.get("distill")
  if not settings or not settings.alpha:
    if settings and settings.get("feature_weight"):
      raise ValueError("config.distill.feature_weight > 0 needs a teacher: set "
                       "config.distill.alpha > 0 too.")
    return {}
  if not 0 < settings.alpha <= 1 or settings.temperature <= 0:
    raise ValueError(f"config.distill needs 0 < alpha <= 1 and temperature > 0, got alpha "
                     f"{settings.alpha}, temperature {settings.temperature}.")
  soft_loss = settings.get("soft_loss", "cross_entropy")
  if soft_loss not in SOFT_LOSSES:
    raise ValueError(f"Unknown config.distill.soft_loss {soft_loss!r}; choose from "
                     f"{SOFT_LOSSES}.")
  feature_weight = settings.get("feature_weight", 0.0)
  if feature_weight < 0:
    raise ValueError(f"config.distill.feature_weight must be >= 0, got {feature_weight}.")
  return {"distill_alpha": settings.alpha, "distill_temperature": settings.temperature,
          "distill_soft_loss": soft_loss,
          **({"distill_feature_weight": feature_weight} if feature_weight else {})}
