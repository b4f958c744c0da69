"""Masked pooling over positions: `[batch, length, dim]` -> `[batch, dim]`."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from byteflax import quant as quant_lib

POOLING_KINDS = ("attention", "mean", "max")


class MaskedPooling(nn.Module):
  """Pools real positions only; padding never contributes.

  Attributes:
    kind: "attention" (a learned score per position, softmax over real positions, as
      SeqFlowLite's ByteQRNN), "mean" or "max".
    quant: fake quantization of the attention scorer.
  """
  kind: str = "attention"
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, x, mask):
    """x: `[batch, length, dim]`; mask: `[batch, length]` bool -> `[batch, dim]`."""
    if self.kind not in POOLING_KINDS:
      raise ValueError(f"Unknown pooling {self.kind!r}; choose one of {POOLING_KINDS}.")
    mask = mask[..., None]
    if self.kind == "max":
      pooled = jnp.max(jnp.where(mask, x, -jnp.inf), axis=1)
      return jnp.where(jnp.any(mask, axis=1), pooled, 0.0)
    if self.kind == "mean":
      weights = mask.astype(x.dtype)
    else:
      scores = nn.Dense(
          1, kernel_init=nn.with_logical_partitioning(
              nn.initializers.lecun_normal(), ("embed", "score")),
          dot_general_cls=quant_lib.dot_general_cls(self.quant),
          name="score")(x)
      # Softmax over real positions, normalised below. Shifting by the largest real score
      # (rather than putting -1e9 at pads) keeps every intermediate within the scores' own
      # range, which int8 export needs for a useful quantization scale.
      lowest = jnp.min(scores, axis=1, keepdims=True)
      real_max = jnp.max(jnp.where(mask, scores, lowest), axis=1, keepdims=True)
      weights = jnp.exp(jnp.where(mask, scores - real_max, 0.0)) * mask
    # An all-padding row (empty batch slot) pools to zeros instead of NaN.
    return jnp.sum(weights * x, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
