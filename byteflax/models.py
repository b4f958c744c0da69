"""Byte-level classifiers, chosen by name from the config (`config.model_name`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from byteflax import gbst as gbst_lib
from byteflax import pooling
from byteflax import qrnn
from byteflax import quant as quant_lib
from byteflax import splitter


class ByteQRNN(nn.Module):
  """embed -> GBST -> bidirectional QRNN -> masked pooling -> logits.

  SeqFlowLite's ByteQRNN without its embedding-to-bottleneck dense layer: a dense map right
  after a lookup table is itself a lookup table, so it adds parameters and no capacity.

  Attributes:
    num_labels: independent binary labels (sigmoid outputs; civil_comments has 7).
    embed_dim: byte embedding width (the GBST width too).
    gbst_max_block_size, gbst_downsample_rate, gbst_conv_kernel_size,
      gbst_score_calibration: see `gbst.GBST`. Rate 1 keeps every byte position.
    qrnn_layers, qrnn_features, qrnn_kernel_size, qrnn_pooling, bidirectional, zoneout,
      qrnn_scan: see `qrnn.QRNNEncoder` (qrnn_scan is its `scan`).
    dropout_rate: dropout on the GBST output and between QRNN layers.
    pooling: "attention", "mean" or "max" over positions.
    quant: fake quantization of every matmul / conv (config.quant; off by default).
  """
  num_labels: int = 1
  embed_dim: int = 128
  gbst_max_block_size: int = 4
  gbst_downsample_rate: int = 2
  gbst_conv_kernel_size: int = 5
  gbst_score_calibration: bool = False
  qrnn_layers: int = 3
  qrnn_features: int = 128
  qrnn_kernel_size: int = 3
  qrnn_pooling: str = "fo"
  bidirectional: bool = True
  zoneout: float = 0.01
  dropout_rate: float = 0.1
  pooling: str = "attention"
  qrnn_scan: str = "associative"
  quant: quant_lib.QuantConfig = quant_lib.QuantConfig()

  @nn.compact
  def __call__(self, ids, *, train: bool = False):
    """ids: `[batch, length]` int32 byte ids (0 = pad) -> logits `[batch, num_labels]`."""
    mask = ids != splitter.PAD_ID
    x = quant_lib.QuantEmbed(
        splitter.VOCAB_SIZE, self.embed_dim,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
        quant=self.quant, name="embed")(ids)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x, mask = gbst_lib.GBST(
        max_block_size=self.gbst_max_block_size,
        downsample_rate=self.gbst_downsample_rate,
        conv_kernel_size=self.gbst_conv_kernel_size,
        score_calibration=self.gbst_score_calibration,
        quant=self.quant,
        name="gbst")(x, mask)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    x = qrnn.QRNNEncoder(
        num_layers=self.qrnn_layers,
        features=self.qrnn_features,
        kernel_size=self.qrnn_kernel_size,
        pooling=self.qrnn_pooling,
        bidirectional=self.bidirectional,
        dropout_rate=self.dropout_rate,
        zoneout=self.zoneout,
        scan=self.qrnn_scan,
        quant=self.quant,
        name="encoder")(x, mask, deterministic=not train)
    x = nn.with_logical_constraint(x, ("batch", "length", "hidden"))
    x = pooling.MaskedPooling(self.pooling, quant=self.quant, name="pool")(x, mask)
    return nn.Dense(
        self.num_labels,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("hidden", "labels")),
        dot_general_cls=quant_lib.dot_general_cls(self.quant),
        name="head")(x).astype(jnp.float32)


MODELS: dict[str, type[nn.Module]] = {
    "byte_qrnn": ByteQRNN,
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
