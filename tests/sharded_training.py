"""Trains smoke-sized models on several meshes and prints losses and shardings as JSON.

Run by tests/test_sharding.py in a fresh process, because the device count is fixed when JAX
starts:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.sharded_training \
      byte_qrnn,byte_transformer,encoder_decoder 1,1 8,1 4,2 2,4

Arguments: the models (comma-separated keys of CONFIGS), then meshes as "data,model".
Output: {config argument: {"data,model": {"losses": [...], "params": {path: spec},
"opt_state": {path: spec}}}}, specs as lists of mesh axes (null = replicated).
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from byteflax import seq2seq
from byteflax import train
from configs import byteqrnn_toxicity
from configs import pretrain_fortunes
from configs import transformer_toxicity
from tasks import pretraining

CONFIGS = {
    "byte_qrnn": lambda: byteqrnn_toxicity.get_config("smoke"),
    "byte_transformer": lambda: transformer_toxicity.get_config("transformer,smoke"),
    # ByteQRNN encoder + MAtt decoder, as span-corruption pretraining trains it.
    "encoder_decoder": lambda: pretrain_fortunes.get_config("smoke"),
}
STEPS = 3


def _ragged_ids(rng, batch_size: int, length: int) -> np.ndarray:
  lengths = rng.integers(4, length + 1, batch_size)
  ids = rng.integers(3, 259, (batch_size, length)).astype(np.int32)
  ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
  return ids


def synthetic_batches(config, steps: int):
  """Fixed random batches: one per step, same on every mesh (ragged, so masks matter)."""
  rng = np.random.default_rng(0)
  batch_size, length = config.data.batch_size, config.data.length_buckets[0]
  for _ in range(steps):
    batch = {"inputs": _ragged_ids(rng, batch_size, length),
             "weights": np.ones((batch_size,), np.float32)}
    if config.model_name == seq2seq.MODEL_NAME:
      batch["targets"] = _ragged_ids(
          rng, batch_size, pretraining.targets_length(length, config.data.max_length))
    else:
      batch["labels"] = rng.integers(0, 2, (batch_size, 1)).astype(np.float32)
    yield batch


def _specs(tree) -> dict[str, list]:
  return {jax.tree_util.keystr(path): [axis for axis in leaf.sharding.spec]
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def run(model: str, data: int, mesh_model: int) -> dict:
  config = CONFIGS[model]()
  config.mesh.update(data=data, model=mesh_model)
  devices = jax.devices()[:data * mesh_model]
  trainer = train.Trainer(config, devices=devices)
  state = trainer.init_state()
  losses = []
  for batch in synthetic_batches(config, STEPS):
    state, step_metrics = trainer.run_train_step(state, batch)
    losses.append(float(step_metrics["loss"]))
  # Adam's moments (mu, nu) are the params' shapes: they must be sharded the same way.
  adam = state.opt_state[1][0]
  return {"losses": losses, "params": _specs(state.params),
          "mu": _specs(adam.mu), "nu": _specs(adam.nu)}


def main(argv):
  if len(argv) < 2:
    sys.exit(__doc__)
  model_names, meshes = argv[0].split(","), argv[1:]
  needed = max(int(np.prod([int(n) for n in mesh.split(",")])) for mesh in meshes)
  if jax.device_count() < needed:
    sys.exit(f"Needs {needed} devices: XLA_FLAGS=--xla_force_host_platform_device_count="
             f"{needed}")
  results = {model: {mesh: run(model, *map(int, mesh.split(","))) for mesh in meshes}
             for model in model_names}
  print(json.dumps(results))


if __name__ == "__main__":
  main(sys.argv[1:])
