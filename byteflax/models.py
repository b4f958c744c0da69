"""Byte-level classifiers, chosen by name from the config (`config.model_name`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from byteflax import gbst as gbst_lib
from byteflax import pooling
from byteflax import qrnn
from byteflax import quant as quant_lib
from byteflax import splitter
from byteflax import transformer


class ByteClassifier(nn.Module):
  """The skeleton every model shares: embed -> [GBST] -> encoder -> masked pooling -> logits.

  Subclasses add their encoder's attributes and implement `encode`; the embedding, GBST,
  pooling and head (and their parameter names) are common, so encoders compare like for like.

  Attributes:
    num_labels: independent binary labels (sigmoid outputs; civil_comments has 7).
    embed_dim: byte embedding width (the GBST width too).
    use_gbst: False feeds the encoder one position per byte (the ByT5-style control).
    gbst_max_block_size, gbst_downsample_rate, gbst_conv_kernel_size,
      gbst_score_calibration: see `gbst.GBST`. Rate 1 keeps every byte position.
    dropout_rate: dropout on the encoder input and inside the encoder.
    pooling: "attention", "mean" or "max" over positions.
    matryoshka_dims: Matryoshka representations (Kusupati et al., 2022, weight-tied as their
      MRL-E): the first d features of the pooled vector, for each d here, also classify,
      through the head's first d input rows (training: `all_dims`, nested losses).
    representation_dims: classify from the first d pooled features only (None: all); any
      d works, the trained `matryoshka_dims` work well.
    quant: fake quantization of every matmul / conv (config.quant; off by default).
  """
  # Logical axis of the encoder's output features (the pooled vector, the head's input).
  encoder_axis: ClassVar[str] = "embed"

  num_labels: int = 1
  embed_dim: int = 128
  use_gbst: bool = True
  gbst_max_block_size: int = 4
  gbst_downsample_rate: int = 2
  gbst_conv_kernel_size: int = 5
  gbst_score_calibration: bool = False
  dropout_rate: float = 0.1
  pooling: str = "attention"
  matryoshka_dims: tuple[int, ...] = ()
  representation_dims: int | None = None
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  def encode(self, x: jnp.ndarray, mask: jnp.ndarray, *, deterministic: bool
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Builds the encoder (inline, named "encoder") and runs it.

    Args:
      x: [batch, length, embed_dim]; values at pad positions are ignored.
      mask: [batch, length] bool, True for real positions.
      deterministic: disables dropout.

    Returns:
      [batch, out_length, features] encodings and their [batch, out_length] mask.
    """
    raise NotImplementedError

  @property
  def num_exits(self) -> int:
    """Classification heads along the encoder (`encode_exits`); 1: the last layer's only."""
    return 1

  def encode_exits(self, x: jnp.ndarray, mask: jnp.ndarray, *, deterministic: bool,
                   depth: int | None, start: int = 0
                   ) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
    """The encodings (and masks) that exits start + 1 .. depth classify (1-based; depth
    None: the last exit), given x, the encodings of exit `start` (0: the encoder's input).
    Layers past `depth` are not run. Default: one exit, `encode`."""
    if depth not in (None, 1) or start:
      raise ValueError(f"{type(self).__name__} has one exit; exits {start + 1}..{depth} "
                       "asked for.")
    return [self.encode(x, mask, deterministic=deterministic)]

  @nn.compact
  def __call__(self, ids, *, train: bool = False, encodings_only: bool = False,
               depth: int | None = None, all_exits: bool = False,
               resume: tuple[jnp.ndarray, jnp.ndarray, int] | None = None,
               with_encodings: bool = False, all_dims: bool = False):
    """ids: `[batch, length]` int32 byte ids (0 = pad) -> logits `[batch, num_labels]`.

    With `encodings_only`, returns the encoder's output instead: `[batch, out_length,
    features]` encodings and their `[batch, out_length]` mask (what a seq2seq decoder
    attends to); pooling and head are then not built, so the variables are exactly
    embed, GBST and encoder, under the same names as in the classifier.

    Models with early exits (`num_exits` > 1; byteflax/early_exit.py):
    - `depth=k` runs the encoder up to exit k (1-based) and returns that exit's logits;
      `all_exits` returns every exit's run, `[exits, batch, num_labels]`, which joint
      training needs. The last exit's pooling and head are the model's "pool" and "head",
      so it is the full model.
    - Staged inference, the deeper layers run only for the texts that need them:
      `with_encodings` also returns the encodings and mask of the last exit run, and
      `resume=(encodings, mask, k)` continues from exit k's (ids unused, may be None).

    Matryoshka models (`matryoshka_dims`): `all_dims` returns the logits from each
    prefix of the pooled vector, `[len(matryoshka_dims) + 1, batch, num_labels]` (the
    whole vector last), which the nested losses need.
    """
    if resume is None:
      mask = ids != splitter.PAD_ID
      x = quant_lib.QuantEmbed(
          splitter.VOCAB_SIZE, self.embed_dim,
          embedding_init=nn.with_logical_partitioning(
              nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
          quant=self.quant, name="embed")(ids)
      x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
      if self.use_gbst:
        x, mask = gbst_lib.GBST(
            max_block_size=self.gbst_max_block_size,
            downsample_rate=self.gbst_downsample_rate,
            conv_kernel_size=self.gbst_conv_kernel_size,
            score_calibration=self.gbst_score_calibration,
            quant=self.quant,
            name="gbst")(x, mask)
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
      start = 0
    else:
      x, mask, start = resume
    exits = self.encode_exits(x, mask, deterministic=not train, depth=depth, start=start)
    if encodings_only:
      return exits[-1]
    heads, logits = {}, []  # Exits that share a head call the same modules.
    for index, (encoded, encoded_mask) in enumerate(exits, start):
      suffix = self.exit_head_suffix(index)
      if suffix not in heads:
        heads[suffix] = self.pool_and_head(suffix)
      pool, head = heads[suffix]
      encoded = nn.with_logical_constraint(encoded, ("batch", "length", self.encoder_axis))
      pooled = pool(encoded, encoded_mask)
      # Kept only where "intermediates" is mutable: the feature term of distillation
      # (step.similarity_loss) reads the last exit's, the full model's.
      self.sow("intermediates", "pooled", pooled)
      if all_dims:
        logits.append(jnp.stack([head(self.prefix(pooled, d)) for d in self.nested_dims(
            pooled.shape[-1])]).astype(jnp.float32))
      else:
        logits.append(head(self.prefix(pooled, self.representation_dims)).astype(jnp.float32))
    logits = jnp.stack(logits) if all_exits else logits[-1]
    return (logits, exits[-1]) if with_encodings else logits

  def nested_dims(self, features: int) -> tuple[int, ...]:
    """The Matryoshka prefix sizes trained, the whole width last."""
    if any(not 0 < d < features for d in self.matryoshka_dims):
      raise ValueError(f"matryoshka_dims must be in [1, {features}) (the pooled width), got "
                       f"{self.matryoshka_dims}.")
    return (*sorted(set(self.matryoshka_dims)), features)

  @staticmethod
  def prefix(pooled: jnp.ndarray, dims: int | None) -> jnp.ndarray:
    """[batch, features] with the features past the first `dims` zeroed (None: all kept):
    the head then reads only its first `dims` input rows."""
    if dims is None or dims >= pooled.shape[-1]:
      return pooled
    if dims < 1:
      raise ValueError(f"representation_dims must be at least 1, got {dims}.")
    return pooled * (jnp.arange(pooled.shape[-1]) < dims).astype(pooled.dtype)

  def exit_head_suffix(self, exit_index: int) -> str:
    """Pooling and head names of an exit: the last exit's are "pool" and "head"."""
    return "" if exit_index == self.num_exits - 1 else f"_exit_{exit_index}"

  def pool_and_head(self, suffix: str) -> tuple[nn.Module, nn.Module]:
    """An exit's masked pooling ([batch, length, features], mask -> [batch, features]) and
    head (-> [batch, num_labels]), named "pool<suffix>" and "head<suffix>"."""
    return (pooling.MaskedPooling(self.pooling, quant=self.quant, name="pool" + suffix),
            nn.Dense(self.num_labels,
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.lecun_normal(), (self.encoder_axis, "labels")),
                     dot_general_cls=quant_lib.dot_general_cls(self.quant),
                     name="head" + suffix))


class ByteQRNN(ByteClassifier):
  """embed -> GBST -> bidirectional QRNN -> masked pooling -> logits.

  SeqFlowLite's ByteQRNN without its embedding-to-bottleneck dense layer: a dense map right
  after a lookup table is itself a lookup table, so it adds parameters and no capacity.

  Attributes (besides `ByteClassifier`'s):
    qrnn_layers, qrnn_features, qrnn_kernel_size, qrnn_pooling, bidirectional, zoneout,
      qrnn_scan: see `qrnn.QRNNEncoder` (qrnn_scan is its `scan`).
    early_exit: a pooling and head after every QRNN layer (exits, byteflax/early_exit.py),
      not only the last; exit k classifies after k layers.
    shared_exit_head: the exits share the last layer's pooling and head instead of each
      having its own.
  """
  encoder_axis: ClassVar[str] = "hidden"

  qrnn_layers: int = 3
  qrnn_features: int = 128
  qrnn_kernel_size: int = 3
  qrnn_pooling: str = "fo"
  bidirectional: bool = True
  zoneout: float = 0.01
  qrnn_scan: str = "auto"
  early_exit: bool = False
  shared_exit_head: bool = False

  @property
  def num_exits(self) -> int:
    return self.qrnn_layers if self.early_exit else 1

  def exit_head_suffix(self, exit_index: int) -> str:
    return "" if self.shared_exit_head else super().exit_head_suffix(exit_index)

  def encoder(self) -> qrnn.QRNNEncoder:
    return qrnn.QRNNEncoder(
        num_layers=self.qrnn_layers,
        features=self.qrnn_features,
        kernel_size=self.qrnn_kernel_size,
        pooling=self.qrnn_pooling,
        bidirectional=self.bidirectional,
        dropout_rate=self.dropout_rate,
        zoneout=self.zoneout,
        scan=self.qrnn_scan,
        quant=self.quant,
        name="encoder")

  def encode(self, x, mask, *, deterministic):
    return self.encoder()(x, mask, deterministic=deterministic), mask

  def encode_exits(self, x, mask, *, deterministic, depth, start=0):
    if not self.early_exit:
      return super().encode_exits(x, mask, deterministic=deterministic, depth=depth,
                                  start=start)
    layers = self.encoder()(x, mask, deterministic=deterministic, depth=depth,
                            first_layer=start, all_layers=True)
    return [(layer, mask) for layer in layers]


class TransformerClassifier(ByteClassifier):
  """What the transformer classifiers share: layer shape and GBST downsampling by 4.

  Attributes (besides `ByteClassifier`'s):
    num_heads, mlp_dim, mlp_activation: see `transformer.TransformerEncoder`.
  """
  gbst_downsample_rate: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  mlp_activation: str = "gelu"

  def transformer_encoder(self, block_layers: tuple[int, ...], **funnel) -> nn.Module:
    return transformer.TransformerEncoder(
        block_layers=block_layers,
        num_heads=self.num_heads,
        mlp_dim=self.mlp_dim,
        mlp_activation=self.mlp_activation,
        dropout_rate=self.dropout_rate,
        quant=self.quant,
        name="encoder",
        **funnel)


class ByteTransformer(TransformerClassifier):
  """embed -> GBST -> pre-LN transformer encoder (rotary positions) -> pooling -> logits.

  Attributes (besides `TransformerClassifier`'s):
    num_layers: encoder layers.
  """
  num_layers: int = 4

  def encode(self, x, mask, *, deterministic):
    return self.transformer_encoder((self.num_layers,))(x, mask, deterministic=deterministic)


class RawByteTransformer(ByteTransformer):
  """The ByT5-style control: `ByteTransformer` on every byte, without GBST."""
  use_gbst: bool = False


class ByteFunnelTransformer(TransformerClassifier):
  """embed -> GBST -> Funnel Transformer -> pooling -> logits.

  Attributes (besides `TransformerClassifier`'s):
    block_layers, pool_stride, pool_kind: see `transformer.TransformerEncoder`.
  """
  block_layers: tuple[int, ...] = (2, 2)
  pool_stride: int = 2
  pool_kind: str = "mean"

  def encode(self, x, mask, *, deterministic):
    return self.transformer_encoder(
        tuple(self.block_layers), pool_stride=self.pool_stride, pool_kind=self.pool_kind
    )(x, mask, deterministic=deterministic)


MODELS: dict[str, type[nn.Module]] = {
    "byte_qrnn": ByteQRNN,
    "byte_transformer": ByteTransformer,
    "byte_funnel_transformer": ByteFunnelTransformer,
    "raw_byte_transformer": RawByteTransformer,
}


def build_model(name: str, num_labels: int, kwargs: Mapping[str, Any],
                quant: quant_lib.QuantConfig = quant_lib.QuantConfig()) -> nn.Module:
  """Instantiates `MODELS[name](num_labels=..., quant=..., **kwargs)` with clear errors.

  `quant` comes from config.quant, not config.model; models without a `quant` attribute
  can only be built with quantization off.
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model_name {name!r}; registered models: {sorted(MODELS)}.")
  cls = MODELS[name]
  fields = set(cls.__dataclass_fields__) - {"parent", "name"}
  configurable = fields - {"num_labels", "quant"}
  unknown = set(kwargs) - configurable
  if unknown:
    raise ValueError(
        f"config.model has keys {sorted(unknown)} that {cls.__name__} does not take; "
        f"valid keys: {sorted(configurable)}.")
  if not quant.enabled:
    return cls(num_labels=num_labels, **kwargs)
  if "quant" not in fields:
    raise ValueError(f"{cls.__name__} has no quantized form (no `quant` attribute); "
                     "set config.quant.enabled=False.")
  return cls(num_labels=num_labels, quant=quant, **kwargs)
