"""Masked pooling over positions: exact over real positions, no huge constants at pads."""

import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from byteflax import pooling
from tests import utils


@pytest.mark.parametrize("kind", pooling.POOLING_KINDS)
def test_pools_real_positions_only(kind):
  x, mask = utils.ragged_inputs([6, 2, 0], 6, 4)
  module = pooling.MaskedPooling(kind)
  variables = nn.meta.unbox(module.init(jax.random.PRNGKey(0), x, mask))
  pooled = np.asarray(module.apply(variables, x, mask))
  for row, length in enumerate([6, 2]):
    real = x[row, :length]
    if kind == "max":
      expected = real.max(axis=0)
    elif kind == "mean":
      expected = real.mean(axis=0)
    else:
      score = variables["params"]["score"]
      logits = (real @ score["kernel"] + score["bias"])[:, 0]
      weights = np.exp(logits - logits.max())
      expected = (weights[:, None] * real).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(pooled[row], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(pooled[2], 0.0)  # An all-padding row.


@pytest.mark.parametrize("kind", ["attention", "max"])
def test_masking_uses_no_huge_constants(kind):
  """int8 export quantizes each intermediate with one scale: no -inf / -1e9 at pads."""
  x, mask = utils.ragged_inputs([5, 1], 8, 3)
  module = pooling.MaskedPooling(kind)
  variables = module.init(jax.random.PRNGKey(0), x, mask)
  program = str(jax.make_jaxpr(lambda v: module.apply(v, x, mask))(variables))
  literals = [float(v) for v in re.findall(r"(-?inf|-?[0-9.]+(?:e[+-]?[0-9]+)?):f32\[\]",
                                           program)]
  assert literals and max(abs(v) for v in literals) < 1e6, literals
