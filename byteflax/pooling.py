"""Masked pooling over positions: `[batch, length, dim]` -> `[batch, dim]`."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from byteflax import quant as quant_lib

POOLING_KINDS = ("attention", "mean", "max")
WINDOW_POOLING_KINDS = ("mean", "max")


def pool_windows(
    x: jnp.ndarray, mask: jnp.ndarray, window: int, kind: str = "mean"
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Non-overlapping masked pooling along the length with window = stride.

  Windows are aligned to absolute positions (the sequence is right-padded to a multiple of
  `window` with masked positions), so appending padding never moves a window.

  Args:
    x: [batch, length, dim] values; pad positions are never read (they may be inf/NaN).
    mask: [batch, length] bool, True for real positions.
    window: pooling window and stride.
    kind: "mean" or "max" over the real positions of each window.

  Returns:
    pooled: [batch, ceil(length / window), dim]; exactly 0 for a window without real
      positions.
    pooled_mask: [batch, ceil(length / window)] whether the window has a real position.
  """
  if kind not in WINDOW_POOLING_KINDS:
    raise ValueError(f"Unknown window pooling {kind!r}; choose one of {WINDOW_POOLING_KINDS}.")
  batch, length, dim = x.shape
  num_windows = -(-length // window)
  extra = num_windows * window - length
  x = jnp.pad(x, ((0, 0), (0, extra), (0, 0))).reshape(batch, num_windows, window, dim)
  mask = jnp.pad(mask, ((0, 0), (0, extra))).reshape(batch, num_windows, window)
  pooled_mask = jnp.any(mask, axis=2)
  if kind == "max":
    pooled = jnp.max(jnp.where(mask[..., None], x, -jnp.inf), axis=2)
    return jnp.where(pooled_mask[..., None], pooled, 0.0), pooled_mask
  # `where` rather than multiply: garbage at pads may be inf/NaN.
  total = jnp.sum(jnp.where(mask[..., None], x, 0.0), axis=2)
  count = jnp.sum(mask, axis=2).astype(x.dtype)
  return total / jnp.maximum(count, 1.0)[..., None], pooled_mask


def max_over_real(x: jnp.ndarray, mask: jnp.ndarray, axis: int = 1) -> jnp.ndarray:
  """The max of x over `axis` at the real positions (mask True, broadcastable to x), kept
  as a size-1 axis; 0 for a row with no real position.

  Pads are filled with a lower bound of the real values (the min of the zero-filled row)
  instead of -inf: int8 export quantizes every intermediate with one scale, and an -inf (or
  the float32 minimum) in a tensor would swamp it.
  """
  zero_filled = jnp.where(mask, x, 0.0)  # Pads may hold inf/NaN garbage.
  lower_bound = jnp.min(zero_filled, axis=axis, keepdims=True)
  return jnp.max(jnp.where(mask, zero_filled, lower_bound), axis=axis, keepdims=True)


def masked_softmax(scores: jnp.ndarray, mask: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
  """Softmax of scores over `axis` at the real positions (mask True, broadcastable), 0 at
  the others; a row with no real position is all zeros, never NaN. Shifted by the largest
  real score rather than masked with -1e9, so it survives int8 export (`max_over_real`)."""
  shifted = jnp.where(mask, scores - max_over_real(scores, mask, axis), 0.0)
  weights = jnp.exp(shifted) * mask
  return weights / jnp.maximum(jnp.sum(weights, axis=axis, keepdims=True), 1e-9)


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
      return max_over_real(x, mask)[:, 0]
    if self.kind == "mean":
      weights = mask.astype(x.dtype)
      # An all-padding row (empty batch slot) pools to zeros instead of NaN.
      return jnp.sum(weights * x, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    scores = nn.Dense(
        1, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("embed", "score")),
        dot_general_cls=quant_lib.dot_general_cls(self.quant),
        name="score")(x)
    return jnp.sum(masked_softmax(scores, mask, axis=1) * x, axis=1)
