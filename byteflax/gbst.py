"""Gradient-based subword tokenization (GBST) from Charformer (Tay et al., 2021).

GBST turns a byte sequence into a shorter sequence of soft "latent subwords": each position
mixes mean-pooled blocks of several sizes with learned softmax weights, and the result is
mean-pooled by a fixed downsampling rate.

This implements the paper's form (softmax over block sizes, optional position-wise score
calibration), not SeqFlowLite's `GBSTLayerV2` variant (scores multiply candidates which are
then averaged over block sizes): the softmax lets the model pick a segmentation per position,
which is the point of GBST.
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from byteflax import pooling
from byteflax import quant as quant_lib


class DepthwiseConv1D(nn.Module):
  """'SAME' depthwise 1-D convolution computed as a sum of shifted, scaled copies.

  Same maths as `nn.Conv(feature_group_count=dim)`, but XLA:CPU runs grouped convolutions
  about 10x slower than these elementwise ops (measured in the training step's gradient).

  Attributes:
    kernel_size: window width; (kernel_size - 1) // 2 neighbours on the left, rest right.
    quant: fake quantization of the input and (per channel) of the kernel.
  """

  kernel_size: int
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, length, dim] -> [batch, length, dim]."""
    length, dim = x.shape[1], x.shape[2]
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(
            # Each channel has its own window: fan-in is the width alone, as nn.Conv has it.
            nn.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(), batch_axis=(1,)),
            ("conv_window", "embed")),
        (self.kernel_size, dim))
    bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        (dim,))
    kernel = quant_lib.quantize_weight(kernel, self.quant, channel_axes=(-1,))
    x = quant_lib.ActQuant(self.quant, name="input_quant")(x)
    left = (self.kernel_size - 1) // 2
    padded = jnp.pad(x, ((0, 0), (left, self.kernel_size - 1 - left), (0, 0)))
    return sum(padded[:, k:k + length] * kernel[k] for k in range(self.kernel_size)) + bias


class GBST(nn.Module):
  """Charformer GBST: soft block tokenization followed by downsampling.

  The optional byte convolution is depthwise with 'SAME' (centered) zero padding: each
  position sees (kernel_size - 1) // 2 neighbours on the left and the rest on the right. Pads
  are zeroed before the convolution, so a real position sees exactly what it would see
  beyond the end of the sequence (zeros), and its output does not depend on how much padding
  follows.

  Attributes:
    max_block_size: block sizes 1..max_block_size are candidates at every position.
    downsample_rate: window and stride of the final mean pooling.
    conv_kernel_size: width of the depthwise convolution before block pooling; 0 disables it.
    score_calibration: apply position-wise score calibration P̂ = softmax(P Pᵀ) P.
    quant: fake quantization of the convolution and the block scorer.
  """

  max_block_size: int = 4
  downsample_rate: int = 2
  conv_kernel_size: int = 5
  score_calibration: bool = False
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(
      self, x: jnp.ndarray, mask: jnp.ndarray
  ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Computes latent subwords.

    Args:
      x: [batch, length, dim] byte embeddings; values at pad positions are ignored.
      mask: [batch, length] bool, True for real positions (padding on the right).

    Returns:
      y: [batch, ceil(length / downsample_rate), dim], exactly 0 where y_mask is False.
      y_mask: [batch, ceil(length / downsample_rate)] bool, True where the window has a real
        position.
    """
    length = x.shape[1]
    x = jnp.where(mask[..., None], x, 0.0)

    if self.conv_kernel_size:
      x = DepthwiseConv1D(self.conv_kernel_size, quant=self.quant, name="conv")(x)
      # Pads now hold bias and neighbour values; every pooling below is mask-weighted, so
      # they are never read.

    # One scorer shared by all block sizes, so scores are comparable across sizes.
    scorer = nn.Dense(
        1,
        kernel_init=nn.with_logical_partitioning(
            nn.linear.default_kernel_init, ("embed", "score")
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("score",)),
        dot_general_cls=quant_lib.dot_general_cls(self.quant),
        name="score",
    )
    blocks, scores = [], []
    for block_size in range(1, self.max_block_size + 1):
      pooled, _ = pooling.pool_windows(x, mask, block_size)  # [batch, windows, dim]
      blocks.append(pooled)
      scores.append(upsample(scorer(pooled), block_size, length))
    probs = nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)  # [batch, length, blocks]

    if self.score_calibration:
      affinity = jnp.einsum("bim,bjm->bij", probs, probs)
      # Finite minimum rather than -inf keeps all-pad rows NaN-free (their output is masked).
      affinity = jnp.where(mask[:, None, :], affinity, jnp.finfo(affinity.dtype).min)
      probs = jnp.einsum("bij,bjm->bim", nn.softmax(affinity, axis=-1), probs)

    # The probability-weighted candidates summed over the few block sizes. Each block's
    # vector is weighted by its bytes' probabilities in one broadcasting multiply
    # ([batch, windows, 1, dim] x [batch, windows, block, 1]) instead of first being
    # repeated to one candidate per byte: TFLite runs that repeat as BROADCAST_TO, ~10x
    # slower than the multiply, and it made GBST most of the exported model's time.
    latent = sum(weigh_blocks(pooled, probs[..., m], m + 1)
                 for m, pooled in enumerate(blocks))
    return pooling.pool_windows(latent, mask, self.downsample_rate)


def upsample(blocks: jnp.ndarray, block_size: int, length: int) -> jnp.ndarray:
  """[batch, windows, dim] -> [batch, length, dim]: each block's value at each of its
  positions (a repeat, as concatenated copies: TFLite's BROADCAST_TO is slow)."""
  batch, windows, dim = blocks.shape
  copies = jnp.concatenate([blocks[:, :, None]] * block_size, axis=2)
  return copies.reshape(batch, windows * block_size, dim)[:, :length]


def weigh_blocks(blocks: jnp.ndarray, weights: jnp.ndarray, block_size: int) -> jnp.ndarray:
  """blocks [batch, windows, dim] and per-position weights [batch, length] -> [batch,
  length, dim]: each position's weight times the vector of the block it belongs to."""
  batch, windows, dim = blocks.shape
  length = weights.shape[1]
  weights = jnp.pad(weights, ((0, 0), (0, windows * block_size - length)))
  weighted = weights.reshape(batch, windows, block_size, 1) * blocks[:, :, None, :]
  return weighted.reshape(batch, windows * block_size, dim)[:, :length]
