"""Quasi-recurrent neural network (QRNN) layers (Bradbury et al., 2016).

Gates come from a (causal) convolution over the input; the only recurrence is the linear
"pooling" c_t = f_t * c_{t-1} + (1 - f_t) * z_t: a parallel associative scan on accelerators,
a sequential loop on CPU (`linear_recurrence`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from byteflax import quant as quant_lib

_POOLINGS = ("f", "fo")
SCANS = ("auto", "associative", "sequential", "doubling")


def _scan_for_backend(scan: str) -> str:
  """"auto": the sequential loop on CPU, the associative scan on GPU / TPU."""
  if scan != "auto":
    return scan
  return "sequential" if jax.default_backend() == "cpu" else "associative"


def _doubling_scan(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Prefix composition of the affine maps (a_t, b_t) along axis 1 by recursive doubling.

  After the step with shift s, (a_t, b_t) is the composition of the maps t-2s+1 .. t
  (Hillis-Steele); positions before the start compose with the identity map (1, 0).
  """
  length, shift = a.shape[1], 1
  while shift < length:
    window = ((0, 0), (shift, 0), (0, 0))
    a_before = jnp.pad(a[:, :-shift], window, constant_values=1.0)
    b_before = jnp.pad(b[:, :-shift], window)
    a, b = a * a_before, a * b_before + b
    shift *= 2
  return b


def _sequential_scan(a: jnp.ndarray, b: jnp.ndarray, reverse: bool) -> jnp.ndarray:
  """c_t = a_t * c_{t-1} + b_t along axis 1, one position per `lax.scan` step."""

  def step(state, inputs):
    state = inputs[0] * state + inputs[1]
    return state, state

  time_major = (jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1))
  _, states = jax.lax.scan(step, jnp.zeros_like(time_major[1][0]), time_major, reverse=reverse)
  return jnp.swapaxes(states, 0, 1)


def linear_recurrence(
    forget: jnp.ndarray, update: jnp.ndarray, reverse: bool = False, scan: str = "auto"
) -> jnp.ndarray:
  """Computes c_t = f_t * c_{t-1} + (1 - f_t) * z_t with c_{-1} = 0 along axis 1.

  Each step is an affine map c -> a * c + b with (a, b) = (f_t, (1 - f_t) * z_t); affine maps
  compose associatively, (a1, b1) ∘ (a2, b2) = (a1 * a2, a2 * b1 + b2), so all prefixes
  take O(log length) depth instead of the O(length) sequential steps of `lax.scan`.

  Args:
    forget: [batch, length, dim] forget gates f_t.
    update: [batch, length, dim] candidate values z_t.
    reverse: scan from the last position (c_t depends on c_{t+1}).
    scan: "associative" (`jax.lax.associative_scan`: O(log length) depth, for GPU / TPU),
      "sequential" (`lax.scan`, one position per step: no parallelism to gain on a CPU's
      few cores, and ~17% less time per ByteQRNN training step there than associative:
      benchmarks/encoders.py --qrnn_scans), "auto" (sequential on CPU, else associative)
      or "doubling" (recursive doubling, O(length log length) work, ~5x slower to train on
      CPU, but only shifts, multiplies and adds: TFLite's int8 quantizer cannot handle the
      interior padding that associative_scan interleaves with). Equal up to float rounding.

  Returns:
    [batch, length, dim] states c_t.
  """
  if scan not in SCANS:
    raise ValueError(f"scan must be one of {SCANS}, got {scan!r}.")
  scan = _scan_for_backend(scan)
  if scan == "sequential":
    return _sequential_scan(forget, (1.0 - forget) * update, reverse)
  if scan == "doubling":
    flip = (lambda x: jnp.flip(x, axis=1)) if reverse else (lambda x: x)
    return flip(_doubling_scan(flip(forget), flip((1.0 - forget) * update)))

  def compose(first, second):
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2

  _, state = jax.lax.associative_scan(
      compose, (forget, (1.0 - forget) * update), reverse=reverse, axis=1
  )
  return state


class QRNNLayer(nn.Module):
  """One direction of a QRNN layer.

  Padded steps get f = 1 and z = 0, so they carry the state unchanged: in the reverse
  direction real positions are unaffected by trailing padding.

  Zoneout keeps the previous state (f = 1) with probability `zoneout` during training,
  without rescaling, which keeps f in [0, 1]. At inference f is replaced by its training-time
  expectation, 1 - (1 - zoneout) * (1 - f), as in the zoneout paper and pytorch-qrnn.

  Attributes:
    features: state / output width.
    kernel_size: width of the gate convolution.
    pooling: "f" (h = c) or "fo" (h = o * c).
    zoneout: probability of keeping the previous state at each step and feature.
    reverse: run right-to-left (anti-causal convolution, reversed scan).
    scan: how the recurrence is evaluated, see `linear_recurrence`.
    quant: fake quantization of the gate convolution.
  """

  features: int
  kernel_size: int = 3
  pooling: str = "fo"
  zoneout: float = 0.0
  reverse: bool = False
  scan: str = "auto"
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(
      self, x: jnp.ndarray, mask: jnp.ndarray, *, deterministic: bool
  ) -> jnp.ndarray:
    """Runs the layer.

    Args:
      x: [batch, length, dim] inputs; values at pad positions are ignored.
      mask: [batch, length] bool, True for real positions (padding on the right).
      deterministic: disables zoneout sampling (uses its expectation instead).

    Returns:
      [batch, length, features] hidden states, 0 at pad positions.
    """
    if self.pooling not in _POOLINGS:
      raise ValueError(f"pooling must be one of {_POOLINGS}, got {self.pooling!r}.")
    num_gates = len(self.pooling) + 1  # z, f and optionally o.
    keep = mask[..., None]
    x = jnp.where(keep, x, 0.0)
    # Causal for the forward direction, anti-causal for the reverse one: a position's gates
    # only see inputs it has already "read" in its scan order.
    context = self.kernel_size - 1
    padding = ((0, context),) if self.reverse else ((context, 0),)
    gates = nn.Conv(
        features=self.features * num_gates,
        kernel_size=(self.kernel_size,),
        padding=padding,
        kernel_init=nn.with_logical_partitioning(
            nn.linear.default_kernel_init, ("conv_window", "embed", "hidden")
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("hidden",)),
        conv_general_dilated_cls=quant_lib.conv_general_cls(self.quant),
        name="conv",
    )(x)
    gates = jnp.split(gates, num_gates, axis=-1)
    update = jnp.tanh(gates[0])
    forget = self._zoneout(nn.sigmoid(gates[1]), deterministic)
    forget = jnp.where(keep, forget, 1.0)
    update = jnp.where(keep, update, 0.0)
    hidden = linear_recurrence(forget, update, reverse=self.reverse, scan=self.scan)
    if self.pooling == "fo":
      hidden = nn.sigmoid(gates[2]) * hidden
    return jnp.where(keep, hidden, 0.0)

  def _zoneout(self, forget: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
    if not self.zoneout:
      return forget
    if deterministic:
      return 1.0 - (1.0 - self.zoneout) * (1.0 - forget)
    update_kept = jax.random.bernoulli(
        self.make_rng("dropout"), 1.0 - self.zoneout, forget.shape
    )
    return jnp.where(update_kept, forget, 1.0)


class QRNNEncoder(nn.Module):
  """A stack of QRNN layers.

  Bidirectional layers concatenate (rather than sum) the forward and reverse outputs, so the
  next layer can weigh the two directions differently.

  Attributes:
    num_layers: number of stacked layers.
    features: state width of each direction.
    kernel_size: width of the gate convolutions.
    pooling: "f" or "fo".
    bidirectional: add a reverse-direction layer at every depth.
    dropout_rate: dropout on the inputs of layers 2..num_layers.
    zoneout: zoneout probability of every layer.
    scan: how every layer evaluates its recurrence, see `linear_recurrence`.
    quant: fake quantization of the gate convolutions.
  """

  num_layers: int = 3
  features: int = 128
  kernel_size: int = 3
  pooling: str = "fo"
  bidirectional: bool = True
  dropout_rate: float = 0.0
  zoneout: float = 0.0
  scan: str = "auto"
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @property
  def output_features(self) -> int:
    """Width of the encoder output."""
    return self.features * (2 if self.bidirectional else 1)

  @nn.compact
  def __call__(
      self, x: jnp.ndarray, mask: jnp.ndarray, *, deterministic: bool,
      depth: int | None = None, first_layer: int = 0, all_layers: bool = False
  ) -> jnp.ndarray | list[jnp.ndarray]:
    """Encodes a sequence.

    Args:
      x: [batch, length, dim] inputs; values at pad positions are ignored.
      mask: [batch, length] bool, True for real positions (padding on the right).
      deterministic: disables dropout and zoneout sampling.
      depth: run the layers up to `depth` (1-based; None: all); the others are not built.
      first_layer: the 0-based layer x is the input of (x is then the output of the layer
        before it): staged inference runs the layers in several calls.
      all_layers: return every layer's output (early exits), not only the last one's.

    Returns:
      [batch, length, output_features], 0 at pad positions (a list of them, one per layer,
      with all_layers).
    """
    depth = self.num_layers if depth is None else depth
    if not 0 <= first_layer < depth <= self.num_layers:
      raise ValueError(f"Need 0 <= first_layer < depth <= {self.num_layers}, got "
                       f"{first_layer} and {depth}.")
    layer = functools.partial(
        QRNNLayer,
        features=self.features,
        kernel_size=self.kernel_size,
        pooling=self.pooling,
        zoneout=self.zoneout,
        scan=self.scan,
        quant=self.quant,
    )
    outputs_by_layer = []
    for i in range(first_layer, depth):
      if i:
        # Pads stay exactly 0: dropout only scales values.
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
      outputs = [layer(name=f"layer_{i}_fwd")(x, mask, deterministic=deterministic)]
      if self.bidirectional:
        outputs.append(
            layer(reverse=True, name=f"layer_{i}_bwd")(x, mask, deterministic=deterministic)
        )
      x = jnp.concatenate(outputs, axis=-1)
      outputs_by_layer.append(x)
    return outputs_by_layer if all_layers else x
