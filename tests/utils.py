"""Helpers shared by the module tests."""

import numpy as np


def ragged_inputs(lengths, length, dim, seed=0):
  """Random `[batch, length, dim]` inputs whose pad positions hold large garbage values.

  Returns (x, mask) with mask `[batch, length]` True on the first `lengths[i]` positions.
  """
  rng = np.random.default_rng(seed)
  mask = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
  x = rng.normal(size=(len(lengths), length, dim)).astype(np.float32)
  garbage = rng.uniform(-1e3, 1e3, size=x.shape).astype(np.float32)
  return np.where(mask[..., None], x, garbage), mask
