"""Pre-LN transformer decoder with two self-attention kinds: causal (KV cache) or MAtt.

- "causal": the standard decoder layer: causal self-attention with rotary positions, then
  cross-attention to the encoder, then the MLP. Decoding keeps every past key and value
  (a cache of `[batch, max_length, heads, head_dim]` per layer), so step t attends over t
  keys: per-step cost grows with the position.
- "matt": merged attention (Zhang, Titov & Sennrich, 2019). Self-attention is replaced by
  average attention (Zhang et al., 2018, simplified as in MAtt; SeqFlowLite's
  uniform-attention decoder): position t takes the mean of the value projections of
  positions 0..t, and that mean and the encoder cross-attention are computed from the same
  normalised input and summed before one shared output projection: a single sublayer.
  Decoding keeps only the running sum of values (`[batch, heads * head_dim]` per layer; the
  count is the position + 1), so every step costs the same at any position. The mean is
  order-blind, so this kind adds sinusoidal absolute positions to the token embeddings (as
  the average-attention paper's transformer does); "causal" relies on rotary positions.

Both kinds run teacher forcing in parallel (`cache=None`: cumulative sums / causal mask
over the whole target) and one token at a time with an explicit cache pytree (every leaf
has batch as its leading axis); the two agree to float rounding (tests/test_seq2seq.py).
Cross-attention is position-free (the encoder's positions are in other units). Every
matmul goes through `quant` (fake quantization, identity when off).
"""

from __future__ import annotations

import flax.linen as nn
from jax import lax
import jax.numpy as jnp

from byteflax import quant as quant_lib
from byteflax import splitter
from byteflax import transformer

ATTENTION_KINDS = ("causal", "matt")
# Per layer: {"key", "value"} `[batch, max_length, heads, head_dim]` (causal) or
# {"value_sum"} `[batch, heads * head_dim]` (matt).
Cache = list[dict[str, jnp.ndarray]]


def sinusoidal_positions(positions: jnp.ndarray, dim: int) -> jnp.ndarray:
  """[length] int positions -> [length, dim] sin / cos embeddings (Vaswani et al.)."""
  half = dim // 2
  frequencies = 10_000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, None] * frequencies
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def _split_heads(x: jnp.ndarray, num_heads: int) -> jnp.ndarray:
  """[batch, length, heads * head_dim] -> [batch, length, heads, head_dim]."""
  x = x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)
  return nn.with_logical_constraint(x, ("batch", "length", "heads", "kv"))


class CausalSelfAttention(nn.Module):
  """Multi-head causal self-attention with rotary positions and a growing KV cache.

  Attributes:
    num_heads: attention heads.
    head_dim: width of each head (even, for rotary).
    quant: fake quantization of the projections and of q, k, probabilities and v.
  """
  num_heads: int
  head_dim: int
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, x: jnp.ndarray, positions: jnp.ndarray,
               cache: dict[str, jnp.ndarray] | None = None
               ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray] | None]:
    """Attends each position to itself and the positions before it.

    Args:
      x: [batch, length, dim] normalised decoder inputs.
      positions: [length] int32 positions of x; with a cache, length is 1.
      cache: None for teacher forcing; else this layer's {"key", "value"}
        `[batch, max_length, heads, head_dim]`, filled at positions < positions[0].

    Returns:
      [batch, length, dim] and the cache with this step's key and value written at
      positions[0] (None without a cache).
    """
    joined = self.num_heads * self.head_dim
    project = lambda name: _split_heads(
        transformer.dense(joined, ("embed", "joined_kv"), self.quant, name)(x),
        self.num_heads)
    float_positions = positions.astype(jnp.float32)
    q = transformer.apply_rotary(project("query"), float_positions)
    k = transformer.apply_rotary(project("key"), float_positions)
    v = project("value")
    if cache is None:
      mask = positions[None, :] <= positions[:, None]  # [query, key]
    else:
      index = (0, positions[0], 0, 0)
      k = lax.dynamic_update_slice(cache["key"], k.astype(cache["key"].dtype), index)
      v = lax.dynamic_update_slice(cache["value"], v.astype(cache["value"].dtype), index)
      cache = {"key": k, "value": v}
      mask = jnp.arange(k.shape[1])[None, :] <= positions[:, None]
    out = transformer.attend(q, k, v, mask[None, None], self.quant)
    return transformer.dense(x.shape[-1], ("joined_kv", "embed"), self.quant, "out")(out), cache


class MergedAttention(nn.Module):
  """MAtt: average self-attention plus encoder cross-attention in one sublayer.

  Attributes:
    num_heads: cross-attention heads.
    head_dim: width of each head; the averaged values are heads * head_dim wide.
    quant: fake quantization of the projections and attention operands.
  """
  num_heads: int
  head_dim: int
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, x: jnp.ndarray, encoded: jnp.ndarray, encoded_mask: jnp.ndarray,
               positions: jnp.ndarray, cache: dict[str, jnp.ndarray] | None = None
               ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray] | None]:
    """Mean of past values + cross-attention, through one output projection.

    Args:
      x: [batch, length, dim] normalised decoder inputs.
      encoded: [batch, encoded_length, features] encoder output.
      encoded_mask: [batch, encoded_length] bool, True for real encoder positions.
      positions: [length] int32 positions of x (position p averages p + 1 values); with a
        cache, length is 1.
      cache: None for teacher forcing; else {"value_sum": [batch, heads * head_dim]}, the
        sum of the value projections at positions < positions[0].

    Returns:
      [batch, length, dim] and the cache with this step's value added (None without one).
    """
    joined = self.num_heads * self.head_dim
    to_heads = lambda name, y: transformer.dense(
        joined, ("embed", "joined_kv"), self.quant, name)(y)
    values = to_heads("self_value", x)  # [batch, length, joined]
    if cache is None:
      sums = jnp.cumsum(values, axis=1)
    else:
      sums = cache["value_sum"][:, None, :] + values
      cache = {"value_sum": sums[:, -1]}
    average = sums / (positions + 1).astype(sums.dtype)[None, :, None]
    average = quant_lib.ActQuant(self.quant, name="average_quant")(average)
    q = _split_heads(to_heads("query", x), self.num_heads)
    k = _split_heads(to_heads("key", encoded), self.num_heads)
    v = _split_heads(to_heads("value", encoded), self.num_heads)
    cross = transformer.attend(q, k, v, encoded_mask[:, None, None, :], self.quant)
    merged = nn.with_logical_constraint(average + cross, ("batch", "length", "joined_kv"))
    return transformer.dense(x.shape[-1], ("joined_kv", "embed"), self.quant,
                             "out")(merged), cache


class DecoderLayer(nn.Module):
  """Pre-LN decoder layer.

  causal: x += self_attention(norm(x)); x += cross_attention(norm(x), encoded)
  matt:   x += merged_attention(norm(x), encoded)
  both:   x += mlp(norm(x))

  Attributes:
    attention_kind: "causal" or "matt".
    num_heads, head_dim: attention shape.
    mlp_dim, mlp_activation: see `transformer.MLP`.
    dropout_rate: dropout on each sublayer's output (and inside the MLP).
    quant: fake quantization of every matmul.
  """
  attention_kind: str
  num_heads: int
  head_dim: int
  mlp_dim: int
  mlp_activation: str = "gelu"
  dropout_rate: float = 0.0
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, x, encoded, encoded_mask, positions, cache=None, *, deterministic):
    """x: [batch, length, dim] -> ([batch, length, dim], this layer's updated cache)."""
    dropout = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    attention = dict(num_heads=self.num_heads, head_dim=self.head_dim, quant=self.quant)
    normed = transformer.layer_norm("attention_norm")(x)
    if self.attention_kind == "causal":
      attended, cache = CausalSelfAttention(**attention, name="self_attention")(
          normed, positions, cache)
      x = x + dropout(attended)
      # Zero positions: rotary is the identity, cross-attention is position-free.
      no_positions = jnp.zeros((encoded.shape[1],), jnp.float32)
      attended = transformer.MultiHeadAttention(**attention, name="cross_attention")(
          transformer.layer_norm("cross_attention_norm")(x), encoded, encoded_mask,
          jnp.zeros(positions.shape, jnp.float32), no_positions)
    else:
      attended, cache = MergedAttention(**attention, name="merged_attention")(
          normed, encoded, encoded_mask, positions, cache)
    x = nn.with_logical_constraint(x + dropout(attended), ("batch", "length", "embed"))
    transformed = transformer.MLP(
        self.mlp_dim, self.mlp_activation, self.dropout_rate, quant=self.quant, name="mlp")(
            transformer.layer_norm("mlp_norm")(x), deterministic=deterministic)
    x = x + dropout(transformed)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), cache


class Decoder(nn.Module):
  """Token embedding -> decoder layers -> final norm -> logits over the byte vocabulary.

  Attributes:
    attention_kind: "causal" (KV cache) or "matt" (merged attention, fixed-size state).
    num_layers: decoder layers.
    dim: width of the residual stream (and the token embedding).
    num_heads: attention heads; head_dim = dim // num_heads (even).
    mlp_dim, mlp_activation: see `transformer.MLP`.
    dropout_rate: dropout on the embeddings and sublayer outputs.
    quant: fake quantization of the embedding and every matmul.
  """
  attention_kind: str = "matt"
  num_layers: int = 2
  dim: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  mlp_activation: str = "gelu"
  dropout_rate: float = 0.1
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  def __post_init__(self):
    if self.attention_kind not in ATTENTION_KINDS:
      raise ValueError(f"Unknown decoder attention_kind {self.attention_kind!r}; choose "
                       f"one of {ATTENTION_KINDS}.")
    if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
      raise ValueError(f"Decoder dim {self.dim} must split into {self.num_heads} heads of "
                       "even width.")
    super().__post_init__()

  @property
  def head_dim(self) -> int:
    return self.dim // self.num_heads

  def init_cache(self, batch_size: int, max_length: int) -> Cache:
    """Zero decoding state for `batch_size` sequences of up to `max_length` tokens.

    Every leaf has batch as its leading axis. The MAtt state does not depend on
    max_length; the causal cache is `max_length` keys and values per layer.
    """
    if self.attention_kind == "causal":
      shape = (batch_size, max_length, self.num_heads, self.head_dim)
      return [{"key": jnp.zeros(shape), "value": jnp.zeros(shape)}
              for _ in range(self.num_layers)]
    return [{"value_sum": jnp.zeros((batch_size, self.dim))} for _ in range(self.num_layers)]

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, encoded: jnp.ndarray, encoded_mask: jnp.ndarray,
               positions: jnp.ndarray, cache: Cache | None = None, *,
               deterministic: bool) -> tuple[jnp.ndarray, Cache | None]:
    """Decodes in parallel (teacher forcing, cache None) or one step (with a cache).

    Args:
      tokens: [batch, length] int32 decoder input ids (with a cache, length 1).
      encoded: [batch, encoded_length, features] encoder output.
      encoded_mask: [batch, encoded_length] bool, True for real encoder positions.
      positions: [length] int32 positions of the tokens.
      cache: None, or the state from `init_cache` / the previous step.
      deterministic: disables dropout.

    Returns:
      logits [batch, length, vocab] float32 and the updated cache (None without one).
    """
    x = quant_lib.QuantEmbed(
        splitter.VOCAB_SIZE, self.dim,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
        quant=self.quant, name="embed")(tokens)
    if self.attention_kind == "matt":
      x = x + sinusoidal_positions(positions, self.dim)[None]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    new_cache = None if cache is None else []
    for index in range(self.num_layers):
      x, layer_cache = DecoderLayer(
          attention_kind=self.attention_kind, num_heads=self.num_heads,
          head_dim=self.head_dim, mlp_dim=self.mlp_dim, mlp_activation=self.mlp_activation,
          dropout_rate=self.dropout_rate, quant=self.quant, name=f"layer_{index}")(
              x, encoded, encoded_mask, positions,
              None if cache is None else cache[index], deterministic=deterministic)
      if cache is not None:
        new_cache.append(layer_cache)
    x = transformer.layer_norm("final_norm")(x)
    logits = transformer.dense(splitter.VOCAB_SIZE, ("embed", "vocab"), self.quant,
                               "logits")(x)
    return logits.astype(jnp.float32), new_cache

