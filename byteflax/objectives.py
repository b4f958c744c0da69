"""What a training run optimises and measures, chosen by the model: the pieces of
`train.Trainer` that differ between classification and span-corruption pretraining.

An objective builds the model, gives `model.init` example arguments, maps a batch to the
model's positional arguments, turns logits into a weighted loss and eval outputs, reduces
those to metrics, and yields the batches. The loop, steps, sharding and checkpoints in
`byteflax/train.py` are shared.

  Classification   (every `models.MODELS` classifier): sigmoid cross-entropy over labels;
                   metrics ROC AUC, accuracy, F1, loss (`metrics.classification_metrics`).
  SpanCorruption   (`seq2seq.MODEL_NAME`): byte-level cross-entropy of the targets under
                   teacher forcing, averaged over real target bytes; metrics loss (nats per
                   target id) and next-id accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from byteflax import input_pipeline
from byteflax import metrics as metrics_lib
from byteflax import models
from byteflax import quant
from byteflax import seq2seq
from byteflax import splitter
from byteflax import step as step_lib
from tasks import pretraining
from tasks import toxicity

Batch = dict[str, Any]


class Classification:
  """Multi-label sigmoid classification of byte texts (SeqIO tasks in tasks/toxicity.py)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.label_names = (input_pipeline.label_keys(config.data) if config.data.train_path
                        else toxicity.label_names(config.data.task))

  @functools.cached_property
  def task_name(self) -> str:
    """The SeqIO task. A user's files are read when it is first asked for (training sizes
    its budget on them at once), not to build the model: a trained run scores texts or
    exports without its data files."""
    return input_pipeline.resolve_task(self.config.data)

  def build_model(self) -> nn.Module:
    return models.build_model(self.config.model_name, len(self.label_names),
                              self.config.model,
                              quant.QuantConfig.from_config(self.config.get("quant")))

  def init_args(self) -> tuple[jnp.ndarray, ...]:
    return (jnp.zeros((1, input_pipeline.bucket_boundaries(self.config.data)[0]),
                      jnp.int32),)

  def model_args(self, batch: Batch) -> tuple[jax.Array, ...]:
    return (batch["inputs"],)

  def loss(self, logits: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(weighted loss sum, total weight)."""
    return step_lib.weighted_sigmoid_loss(logits, batch["labels"], batch["weights"])

  def eval_outputs(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """Probabilities `[batch, labels]`, labels, weights and the weighted loss sum: what the
    metrics need, so every host can compute them on the global batch."""
    loss_sum, weight = self.loss(logits, batch)
    return {"probs": jax.nn.sigmoid(logits), "labels": batch["labels"],
            "weights": batch["weights"], "loss_sum": loss_sum, "weight": weight}

  def metrics(self, outputs: Sequence[dict[str, np.ndarray]], split: str,
              thresholds: dict[str, float] | None = None) -> dict[str, float]:
    """`metrics.classification_metrics` of the split (thresholds: label -> threshold)."""
    real = [out["weights"] > 0 for out in outputs]
    if not any(r.any() for r in real):
      raise ValueError(f"Split {split!r} of task {self.task_name!r} has no examples.")
    loss = sum(float(o["loss_sum"]) for o in outputs) / sum(float(o["weight"]) for o in outputs)
    return metrics_lib.classification_metrics(
        np.concatenate([o["labels"][r] for o, r in zip(outputs, real)]),
        np.concatenate([o["probs"][r] for o, r in zip(outputs, real)]), loss,
        self.label_names, thresholds)

  def train_batches(self, seed: int, start_step: int, **kwargs) -> Iterator[Batch]:
    return input_pipeline.train_batches(self.task_name, self.config.data, seed=seed,
                                        start_step=start_step, **kwargs)

  def eval_batches(self, split: str) -> Iterator[Batch]:
    return input_pipeline.eval_batches(self.task_name, split, self.config.data)


class SpanCorruption:
  """Encoder-decoder pretraining on span-corruption tasks (tasks/pretraining.py)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    if not (config.data.task or config.data.get("train_path")
            or config.data.get("corpus_dir")):
      raise ValueError("This config pretrains on a corpus: set --config.data.corpus_dir to "
                       "a folder that python -m byteflax.corpus --out=DIR built.")

  @functools.cached_property
  def task_name(self) -> str:
    """The SeqIO task, registered when first asked for (as `Classification.task_name`)."""
    if self.config.data.get("train_path"):  # Text files (comma-separated globs, gs:// too).
      return pretraining.register_text_files_task(
          self.config.data.train_path.split(","), self.config.data.text_format)
    if self.config.data.get("corpus_dir"):  # python -m byteflax.corpus's output.
      return pretraining.register_corpus(self.config.data.corpus_dir)
    return self.config.data.task

  def build_model(self) -> nn.Module:
    return seq2seq.build_encoder_decoder(
        self.config.model, quant.QuantConfig.from_config(self.config.get("quant")))

  def init_args(self) -> tuple[jnp.ndarray, ...]:
    length = input_pipeline.bucket_boundaries(self.config.data)[0]
    return (jnp.zeros((1, length), jnp.int32),
            jnp.zeros((1, pretraining.targets_length(length, self.config.data.max_length)),
                      jnp.int32))

  def model_args(self, batch: Batch) -> tuple[jax.Array, ...]:
    return batch["inputs"], batch["targets"]

  def loss(self, logits: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy summed over real target ids, their count); pad ids 0 are not real."""
    weights = (batch["targets"] != splitter.PAD_ID) * batch["weights"][:, None]
    per_id = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return jnp.sum(per_id * weights), jnp.sum(weights)

  def eval_outputs(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    loss_sum, weight = self.loss(logits, batch)
    real = (batch["targets"] != splitter.PAD_ID) * batch["weights"][:, None]
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == batch["targets"]) * real)
    return {"loss_sum": loss_sum, "weight": weight, "correct": correct}

  def metrics(self, outputs: Sequence[dict[str, np.ndarray]], split: str,
              thresholds: dict[str, float] | None = None) -> dict[str, float]:
    del thresholds  # Classification only.
    weight = sum(float(o["weight"]) for o in outputs)
    if not weight:
      raise ValueError(f"Split {split!r} of task {self.task_name!r} has no examples.")
    return {"loss": sum(float(o["loss_sum"]) for o in outputs) / weight,
            "accuracy": sum(float(o["correct"]) for o in outputs) / weight}

  def train_batches(self, seed: int, start_step: int, **kwargs) -> Iterator[Batch]:
    if kwargs.get("teacher_path"):
      raise ValueError("Distillation applies to classification, not span corruption.")
    return input_pipeline.seq2seq_batches(self.task_name, "train", self.config.data,
                                          train=True, seed=seed, start_step=start_step)

  def eval_batches(self, split: str) -> Iterator[Batch]:
    return input_pipeline.seq2seq_batches(self.task_name, split, self.config.data,
                                          train=False)


Objective = Classification | SpanCorruption


def for_config(config: ml_collections.ConfigDict) -> Objective:
  """The objective of `config.model_name`."""
  if config.model_name == seq2seq.MODEL_NAME:
    return SpanCorruption(config)
  return Classification(config)
