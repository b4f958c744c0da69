"""Device mesh and the one table mapping logical axis names to mesh axes.

Modules name their parameter and activation axes ("batch", "embed", "hidden", ...); only this
file says which mesh axis, if any, each name is split over. The same code runs on one CPU
(a 1x1 mesh) and on a TPU pod (e.g. data=-1 over all chips).
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import numpy as np

MESH_AXES = ("data", "model")

# Logical name -> mesh axis (None = replicated). Activations are split over "data" along the
# batch; wide feature dims may be split over "model" once models outgrow one device.
LOGICAL_AXIS_RULES = (
    ("batch", "data"),
    ("length", None),
    ("vocab", None),
    ("embed", None),
    ("hidden", "model"),
    ("heads", "model"),  # Attention heads (Megatron-style tensor parallelism).
    ("kv", None),  # Width of one head.
    ("joined_kv", "model"),  # heads * kv in projection kernels: split by whole heads.
    ("mlp", "model"),  # Transformer feed-forward hidden layer.
    ("conv_window", None),
    ("score", None),
    ("labels", None),
)


def make_mesh(axis_sizes: Mapping[str, int], devices=None) -> jax.sharding.Mesh:
  """Builds a ("data", "model") mesh; one size may be -1 for "all remaining devices"."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}; valid axes: {MESH_AXES}.")
  sizes = [int(axis_sizes.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}.")
  if -1 in sizes:
    known = int(np.prod([s for s in sizes if s != -1]))
    sizes[sizes.index(-1)] = devices.size // known
  if int(np.prod(sizes)) != devices.size:
    raise ValueError(
        f"Mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
        f"but {devices.size} are available.")
  # Auto axes: shardings propagate through the model from the constraints we declare.
  return jax.sharding.Mesh(
      devices.reshape(sizes), MESH_AXES,
      axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def logical_to_sharding(boxed_tree, mesh: jax.sharding.Mesh):
  """NamedShardings for a tree whose leaves may be `nn.Partitioned` (abstract is fine)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Sharding for host batches: leading (batch) axis split over "data"."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
