"""AQT-style in-training 8-bit quantization: fake-quantized operands of every matmul / conv.

During training the operands of each matmul and convolution are quantized to `bits` and
immediately dequantized ("fake quantization"), so the model learns weights that survive the
rounding of an int8 deployment; gradients pass straight through the rounding (STE).

- Weights: symmetric, one scale per output channel (TFLite's int8 weight scheme), from their
  own current max |w|; grid [-127, 127], zero point 0.
- Activations: asymmetric, `2**bits` levels over [min, max] nudged to contain 0 (so 0 is
  exact, as TFLite requires). min / max are exponential moving averages over training
  batches, kept in the Flax collection `quant_stats`: they update only when the caller makes
  that collection mutable (`train_step`) and are frozen otherwise (eval, export).
- `QuantConfig(enabled=False)` (the default) is the identity: no fake-quant ops and no
  `quant_stats` variables. Params are the same either way, so a float checkpoint loads into
  a quantized model for quantization-aware fine-tuning.

This is a small own implementation of the idea of `aqtp` (google/aqt), which is heavy and
would tie us to its release cycle; it covers exactly what TFLite int8 export needs.

Using it in a module (every model takes a `quant: QuantConfig` attribute):

  nn.Dense(features, dot_general_cls=quant.dot_general_cls(self.quant))
  nn.Conv(features, kernel_size, conv_general_dilated_cls=quant.conv_general_cls(self.quant))
  quant.QuantEmbed(vocab, dim, quant=self.quant)            # in place of nn.Embed
  # Hand-written products: fake-quantize each operand explicitly.
  kernel = quant.quantize_weight(kernel, self.quant, channel_axes=(-1,))
  x = quant.ActQuant(self.quant, name="x_quant")(x)
  # Activation-activation products (e.g. attention scores): an ActQuant on each operand.

The factories return None when quantization is off, which makes flax use plain lax ops.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

# The Flax collection that holds activation ranges (and their update counts).
COLLECTION = "quant_stats"


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """How to fake-quantize; hashable, so it can be a Flax module attribute.

  Attributes:
    enabled: False makes every quantization op the identity.
    bits: bits per weight and per activation.
    weight_per_channel: one weight scale per output channel (else one per tensor).
    weight_symmetric: symmetric weight grid with zero point 0 (TFLite requires it for int8).
    act_symmetric: symmetric activation grid (default asymmetric: uses all levels for
      one-sided ranges such as sigmoid outputs).
    ema_decay: decay of the moving averages of activation min / max.
    start_step: range updates that only track an activation's range before its fake
      quantization starts, so the first quantized steps do not use a single batch's range
      (one update per training step; a layer applied k times per step, like GBST's shared
      block scorer, counts k).
  """
  enabled: bool = False
  bits: int = 8
  weight_per_channel: bool = True
  weight_symmetric: bool = True
  act_symmetric: bool = False
  ema_decay: float = 0.99
  start_step: int = 0

  def __post_init__(self):
    if not 2 <= self.bits <= 16:
      raise ValueError(f"quant.bits must be in [2, 16], got {self.bits}.")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"quant.ema_decay must be in [0, 1), got {self.ema_decay}.")
    if self.start_step < 0:
      raise ValueError(f"quant.start_step must be >= 0, got {self.start_step}.")

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> QuantConfig:
    """From a config section (`config.quant`); None means quantization off."""
    if config is None:
      return cls()
    values = dict(config)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
    if unknown:
      raise ValueError(f"config.quant has unknown keys {sorted(unknown)}; valid keys: "
                       f"{sorted(fields)}.")
    return cls(**values)


def integer_range(bits: int, symmetric: bool) -> tuple[int, int]:
  """(qmin, qmax): [-(2^(b-1) - 1), 2^(b-1) - 1] symmetric (narrow), [0, 2^b - 1] else."""
  if symmetric:
    return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
  return 0, 2 ** bits - 1


def scale_and_zero_point(lo: jnp.ndarray, hi: jnp.ndarray, bits: int, symmetric: bool
                         ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Scale and integer zero point of the grid covering [lo, hi] (broadcastable arrays).

  The range is widened to contain 0 and the zero point rounded, so real 0 maps to an exact
  integer (zero padding and ReLU zeros stay exact, as in TFLite).
  """
  qmin, qmax = integer_range(bits, symmetric)
  lo = jnp.minimum(lo, 0.0)
  hi = jnp.maximum(hi, 0.0)
  if symmetric:
    scale = jnp.maximum(-lo, hi) / qmax
  else:
    scale = (hi - lo) / (qmax - qmin)
  # An all-zero tensor has scale 0; any positive scale represents it exactly.
  scale = jnp.where(scale > 0, scale, 1.0)
  zero_point = jnp.zeros_like(scale) if symmetric else jnp.clip(
      jnp.round(qmin - lo / scale), qmin, qmax)
  return scale, zero_point


def fake_quant(x: jnp.ndarray, lo: jnp.ndarray, hi: jnp.ndarray, *, bits: int,
               symmetric: bool) -> jnp.ndarray:
  """Quantizes x to the `bits` grid over [lo, hi] and back, with a clipped STE.

  Inside the grid's range the error is at most scale / 2 and the gradient is the identity;
  values outside are clipped to the range ends and get zero gradient. lo / hi get none.

  Args:
    x: any shape.
    lo, hi: range ends, broadcastable to x (per-tensor scalars or per-channel arrays).
    bits: grid resolution.
    symmetric: symmetric narrow grid with zero point 0, else asymmetric.

  Returns:
    Dequantized values, same shape and dtype as x.
  """
  qmin, qmax = integer_range(bits, symmetric)
  scale, zero_point = jax.tree.map(
      lax.stop_gradient, scale_and_zero_point(lo, hi, bits, symmetric))
  dequantized = (jnp.clip(jnp.round(x / scale) + zero_point, qmin, qmax)
                 - zero_point) * scale
  inside = (x >= (qmin - zero_point) * scale) & (x <= (qmax - zero_point) * scale)
  # Value `dequantized`, gradient 1 inside the range (ends included) and 0 outside.
  straight_through = (x - lax.stop_gradient(x)) * inside
  return (lax.stop_gradient(dequantized) + straight_through).astype(x.dtype)


def quantize_weight(w: jnp.ndarray, config: QuantConfig,
                    channel_axes: tuple[int, ...] | None) -> jnp.ndarray:
  """Fake-quantizes a weight from its own range, one scale per output channel.

  Args:
    w: the weight.
    config: identity when not enabled.
    channel_axes: the output-channel axes (one scale per index of them); None (or
      config.weight_per_channel False) uses one scale for the whole tensor.
  """
  if not config.enabled:
    return w
  if channel_axes is None or not config.weight_per_channel:
    reduce_axes = None
  else:
    kept = {a % w.ndim for a in channel_axes}
    reduce_axes = tuple(a for a in range(w.ndim) if a not in kept)
  lo = jnp.min(w, axis=reduce_axes, keepdims=True)
  hi = jnp.max(w, axis=reduce_axes, keepdims=True)
  return fake_quant(w, lo, hi, bits=config.bits, symmetric=config.weight_symmetric)


class ActQuant(nn.Module):
  """Fake-quantizes an activation with a per-tensor range tracked in `quant_stats`.

  The range is an exponential moving average of batch min / max (the first update copies
  the batch range). It is updated only when `quant_stats` is mutable and this is not
  `init`; fake quantization applies once more than `config.start_step` updates were made.

  Attributes:
    config: identity (and no variables) when not enabled.
  """
  config: QuantConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: any shape -> fake-quantized x, same shape."""
    if not self.config.enabled:
      return x
    lo = self.variable(COLLECTION, "min", jnp.zeros, (), jnp.float32)
    hi = self.variable(COLLECTION, "max", jnp.zeros, (), jnp.float32)
    count = self.variable(COLLECTION, "count", jnp.zeros, (), jnp.int32)
    if self.is_mutable_collection(COLLECTION) and not self.is_initializing():
      batch = lax.stop_gradient(x).astype(jnp.float32)
      decay = jnp.where(count.value > 0, self.config.ema_decay, 0.0)
      lo.value = decay * lo.value + (1.0 - decay) * jnp.min(batch)
      hi.value = decay * hi.value + (1.0 - decay) * jnp.max(batch)
      count.value = count.value + 1
    quantized = fake_quant(x, lo.value, hi.value, bits=self.config.bits,
                           symmetric=self.config.act_symmetric)
    return jnp.where(count.value > self.config.start_step, quantized, x)


class QuantDotGeneral(nn.Module):
  """`lax.dot_general` with a fake-quantized activation (lhs) and weight (rhs).

  A drop-in `dot_general_cls` for `nn.Dense` / `nn.DenseGeneral`: the weight gets one scale
  per output channel, i.e. per index of its free (non-contracting) dims.
  """
  config: QuantConfig

  @nn.compact
  def __call__(self, lhs, rhs, dimension_numbers, precision=None,
               preferred_element_type=None):
    (_, rhs_contracting), _ = dimension_numbers
    lhs = ActQuant(self.config, name="lhs")(lhs)
    free_axes = tuple(a for a in range(rhs.ndim) if a not in rhs_contracting)
    rhs = quantize_weight(rhs, self.config, channel_axes=free_axes)
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)


class QuantConvGeneral(nn.Module):
  """`lax.conv_general_dilated` with fake-quantized input and per-output-channel kernel.

  A drop-in `conv_general_dilated_cls` for `nn.Conv`.
  """
  config: QuantConfig

  @nn.compact
  def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
               precision=None, **kwargs):
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    lhs = ActQuant(self.config, name="lhs")(lhs)
    rhs = quantize_weight(rhs, self.config, channel_axes=(numbers.rhs_spec[0],))
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision, **kwargs)


def dot_general_cls(config: QuantConfig):
  """`nn.Dense(dot_general_cls=...)` value: quantized when enabled, None (plain) when off."""
  return functools.partial(QuantDotGeneral, config) if config.enabled else None


def conv_general_cls(config: QuantConfig):
  """`nn.Conv(conv_general_dilated_cls=...)` value: quantized when enabled, else None."""
  return functools.partial(QuantConvGeneral, config) if config.enabled else None


class QuantEmbed(nn.Embed):
  """`nn.Embed` whose table is fake-quantized before the lookup (same params).

  One scale for the whole table rather than per channel: TFLite's int8 GATHER gives its
  output the table's single scale, so per-channel scales would not survive export.

  Attributes:
    quant: identity when not enabled.
  """
  quant: QuantConfig = QuantConfig()

  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    """inputs: integer ids, any shape -> `[*inputs.shape, features]`."""
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f"QuantEmbed needs integer ids, got {inputs.dtype}.")
    table = quantize_weight(self.embedding, self.quant, channel_axes=None)
    return jnp.take(table, inputs, axis=0)
