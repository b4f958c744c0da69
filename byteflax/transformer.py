"""Pre-LayerNorm transformer encoder with rotary positions; with several blocks, a Funnel.

A Funnel Transformer (Dai et al., 2020) is a stack of blocks where the first layer of every
block after the first pools its *queries* (stride 2, mean or max over real positions) while
its keys and values still see the unpooled sequence; the rest of the block runs at the
shorter length, so self-attention gets cheaper with depth. One block is a standard encoder.

Choices:
- Pre-LayerNorm (normalise each sublayer's input, plus one final norm): trains stably
  without a learning-rate warmup tuned per depth.
- Rotary positions (RoFormer, Su et al., 2021) on queries and keys: relative by
  construction, no parameters and no maximum length, so one model serves every length
  bucket. A pooled query sits at the centre of the positions it summarises (e.g. 0.5 for
  positions 0 and 1), so rotary angles stay consistent across funnel blocks.
- Every matmul goes through `quant` (fake quantization, identity when off), including both
  operands of the two activation-activation products of attention.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from byteflax import pooling
from byteflax import quant as quant_lib

MLP_ACTIVATIONS = ("gelu", "geglu")


def dense(features: int, kernel_axes: tuple[str, str], quant: quant_lib.QuantConfig,
          name: str) -> nn.Dense:
  """The transformers' projection: sharded by logical axes, fake-quantized when on.

  Always a 2-D kernel (input axis, output axis): nn.DenseGeneral initialises multi-axis
  kernels flat and cannot carry per-axis sharding names through that reshape, so
  multi-head projections use the joined (heads * head_dim) axis, "joined_kv", as
  flaxformer does, and the caller splits heads.
  """
  return nn.Dense(
      features,
      kernel_init=nn.with_logical_partitioning(nn.linear.default_kernel_init, kernel_axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), kernel_axes[-1:]),
      dot_general_cls=quant_lib.dot_general_cls(quant),
      name=name)


def layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
      name=name)


def window_centres(length: int, window: int) -> jnp.ndarray:
  """[length] float positions, in input units, of a sequence pooled by `window`.

  Position j summarises inputs j * window .. (j + 1) * window - 1; its centre is where
  rotary embeddings place it (window 1: 0, 1, 2, ...).
  """
  return jnp.arange(length, dtype=jnp.float32) * window + (window - 1) / 2


def apply_rotary(x: jnp.ndarray, positions: jnp.ndarray,
                 max_wavelength: float = 10_000.0) -> jnp.ndarray:
  """Rotates feature pairs (i, i + head_dim / 2) by angle position * frequency_i.

  Args:
    x: [batch, length, heads, head_dim] queries or keys; head_dim even.
    positions: [length] float positions (may be fractional).
    max_wavelength: the slowest frequency's wavelength.

  Returns:
    [batch, length, heads, head_dim]; q·k of rotated vectors depends on positions only
    through their difference.
  """
  half = x.shape[-1] // 2
  frequencies = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[:, None] * frequencies  # [length, half]
  sin = jnp.sin(angles)[None, :, None, :]
  cos = jnp.cos(angles)[None, :, None, :]
  first, second = x[..., :half], x[..., half:]
  return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray,
           quant: quant_lib.QuantConfig) -> jnp.ndarray:
  """Scaled dot-product attention of projected heads (call inside a compact module).

  Args:
    q: [batch, query_length, heads, head_dim] queries (rotated if positional).
    k, v: [batch, key_length, heads, head_dim] keys (rotated if positional) and values.
    mask: bool, broadcastable to [batch, heads, query_length, key_length]; True where a
      query may attend to a key (real keys; for causal attention, earlier positions too).
    quant: fake quantization of q, k, the probabilities and v (ActQuant modules named
      query_quant, key_quant, probs_quant, value_quant in the calling module).

  Returns:
    [batch, query_length, heads * head_dim]. A row with no allowed key gives zeros.
  """
  act_quant = lambda name: quant_lib.ActQuant(quant, name=name)
  q = act_quant("query_quant")(q * q.shape[-1] ** -0.5)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, act_quant("key_quant")(k))
  # Shifted by the largest allowed logit rather than masked with the float32 minimum,
  # which int8 export would have to fit into the logits' one quantization scale.
  probs = act_quant("probs_quant")(pooling.masked_softmax(logits, mask, axis=-1))
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, act_quant("value_quant")(v))
  return out.reshape(*out.shape[:2], -1)


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention of queries over a (possibly longer) key sequence.

  Attributes:
    num_heads: attention heads.
    head_dim: width of each head's queries, keys and values (even, for rotary).
    quant: fake quantization of the projections and of q, k, probabilities and v.
  """
  num_heads: int
  head_dim: int
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, queries: jnp.ndarray, keys: jnp.ndarray, key_mask: jnp.ndarray,
               query_positions: jnp.ndarray, key_positions: jnp.ndarray) -> jnp.ndarray:
    """Attends every query to the real keys.

    Args:
      queries: [batch, query_length, dim].
      keys: [batch, key_length, dim]; values come from the same sequence.
      key_mask: [batch, key_length] bool, True for real positions (never attend to pads).
      query_positions: [query_length] float positions of the queries.
      key_positions: [key_length] float positions of the keys.

    Returns:
      [batch, query_length, dim]. A row with no real key (an empty batch slot) stays
      finite.
    """
    dim = queries.shape[-1]
    joined = self.num_heads * self.head_dim

    def project(name, x):  # [batch, length, dim] -> [batch, length, heads, head_dim]
      y = dense(joined, ("embed", "joined_kv"), self.quant, name)(x)
      y = y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)
      return nn.with_logical_constraint(y, ("batch", "length", "heads", "kv"))

    q = apply_rotary(project("query", queries), query_positions)
    k = apply_rotary(project("key", keys), key_positions)
    v = project("value", keys)
    out = attend(q, k, v, key_mask[:, None, None, :], self.quant)
    return dense(dim, ("joined_kv", "embed"), self.quant, "out")(out)


class MLP(nn.Module):
  """Position-wise feed-forward block: GELU, or GeGLU (GELU gate times a linear unit).

  Attributes:
    hidden_dim: width of the hidden layer.
    activation: "gelu" or "geglu" (the gated form has one more input projection).
    dropout_rate: dropout on the hidden layer.
    quant: fake quantization of the projections.
  """
  hidden_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, deterministic: bool) -> jnp.ndarray:
    """x: [batch, length, dim] -> [batch, length, dim]."""
    if self.activation not in MLP_ACTIVATIONS:
      raise ValueError(f"Unknown MLP activation {self.activation!r}; choose one of "
                       f"{MLP_ACTIVATIONS}.")
    hidden = nn.gelu(dense(self.hidden_dim, ("embed", "mlp"), self.quant, "wi")(x))
    if self.activation == "geglu":
      hidden = hidden * dense(self.hidden_dim, ("embed", "mlp"), self.quant, "wi_linear")(x)
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    hidden = nn.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    return dense(x.shape[-1], ("mlp", "embed"), self.quant, "wo")(hidden)


class EncoderLayer(nn.Module):
  """Pre-LN layer: x = q + attention(norm(q), norm(keys)); x = x + mlp(norm(x)).

  Attributes:
    num_heads, head_dim: see `MultiHeadAttention`.
    mlp_dim, mlp_activation: see `MLP`.
    dropout_rate: dropout on each sublayer's output (and inside the MLP).
    quant: fake quantization of every matmul.
  """
  num_heads: int
  head_dim: int
  mlp_dim: int
  mlp_activation: str = "gelu"
  dropout_rate: float = 0.0
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, queries: jnp.ndarray, keys: jnp.ndarray, key_mask: jnp.ndarray,
               query_positions: jnp.ndarray, key_positions: jnp.ndarray, *,
               deterministic: bool) -> jnp.ndarray:
    """Runs the layer; `queries` is the residual stream, `keys` what it attends to.

    Args:
      queries: [batch, query_length, dim]; the same array as keys for self-attention, or
        keys pooled (funnel pool-query-only layer).
      keys: [batch, key_length, dim].
      key_mask: [batch, key_length] bool, True for real positions.
      query_positions, key_positions: see `MultiHeadAttention`.
      deterministic: disables dropout.

    Returns:
      [batch, query_length, dim].
    """
    norm = layer_norm("attention_norm")
    normed_queries = norm(queries)
    normed_keys = normed_queries if keys is queries else norm(keys)
    attended = MultiHeadAttention(self.num_heads, self.head_dim, quant=self.quant,
                                  name="attention")(
        normed_queries, normed_keys, key_mask, query_positions, key_positions)
    x = queries + nn.Dropout(self.dropout_rate)(attended, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    transformed = MLP(self.mlp_dim, self.mlp_activation, self.dropout_rate, quant=self.quant,
                      name="mlp")(layer_norm("mlp_norm")(x), deterministic=deterministic)
    x = x + nn.Dropout(self.dropout_rate)(transformed, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class TransformerEncoder(nn.Module):
  """Blocks of pre-LN layers; queries pooled between blocks (a Funnel when > 1 block).

  Attributes:
    block_layers: layers per block; `(n,)` is a standard n-layer encoder. The first layer
      of each later block pools its queries by `pool_stride` (keys see the unpooled
      sequence), so block b runs at length ceil(length / pool_stride ** b).
    num_heads: attention heads; head_dim = dim // num_heads (must be even).
    mlp_dim, mlp_activation: see `MLP`.
    pool_stride: window and stride of the query pooling between blocks.
    pool_kind: "mean" or "max" over the real positions of each window (the mask is pooled
      with it: a window is real if any of its positions is).
    dropout_rate: dropout on sublayer outputs.
    quant: fake quantization of every matmul.
  """
  block_layers: Sequence[int] = (4,)
  num_heads: int = 4
  mlp_dim: int = 512
  mlp_activation: str = "gelu"
  pool_stride: int = 2
  pool_kind: str = "mean"
  dropout_rate: float = 0.0
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, deterministic: bool
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Encodes a sequence.

    Args:
      x: [batch, length, dim] inputs; values at pad positions are ignored.
      mask: [batch, length] bool, True for real positions (padding on the right).
      deterministic: disables dropout.

    Returns:
      y: [batch, out_length, dim] with out_length = ceil(length / pool_stride ** (blocks -
        1)) (exactly, block by block), 0 where y_mask is False.
      y_mask: [batch, out_length] bool, the input mask pooled alongside.
    """
    dim = x.shape[-1]
    if dim % self.num_heads or (dim // self.num_heads) % 2:
      raise ValueError(f"dim {dim} must split into {self.num_heads} heads of even width.")
    x = jnp.where(mask[..., None], x, 0.0)
    scale = 1  # Input positions summarised by one position of the current block.
    index = 0
    for block, num_layers in enumerate(self.block_layers):
      for layer in range(num_layers):
        key_positions = window_centres(x.shape[1], scale)
        queries, key_mask = x, mask
        if block and not layer:
          queries, mask = pooling.pool_windows(x, mask, self.pool_stride, self.pool_kind)
          scale *= self.pool_stride
        x = EncoderLayer(
            num_heads=self.num_heads, head_dim=dim // self.num_heads, mlp_dim=self.mlp_dim,
            mlp_activation=self.mlp_activation, dropout_rate=self.dropout_rate,
            quant=self.quant, name=f"layer_{index}")(
                queries, x, key_mask, window_centres(queries.shape[1], scale),
                key_positions, deterministic=deterministic)
        index += 1
    return jnp.where(mask[..., None], layer_norm("final_norm")(x), 0.0), mask
