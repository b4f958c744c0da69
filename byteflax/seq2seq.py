"""Byte-level encoder-decoder: a GBST classifier's encoder + a causal or MAtt decoder.

Interface (what training, beam search and generation rely on; all via
`model.apply(variables, ..., method=...)`; byte ids as `seqio.ByteVocabulary`, pad 0):

  __call__(inputs [b, n] int32, targets [b, t] int32, train: bool) -> logits [b, t, vocab]
      Teacher forcing: the decoder reads the targets shifted right, starting from
      BOS = pad id 0 (as T5), so logits[:, i] predicts targets[:, i].
  encode(inputs [b, n], train=False) -> (encoded [b, m, d] float32, encoded_mask [b, m] bool)
      m = n / GBST downsample rate (the encoder's output length).
  init_cache(batch_size: int, max_length: int) -> cache pytree
      Fixed shapes; every leaf has batch as its leading axis, so beams are reordered with
      a gather on axis 0. "causal": per layer key / value `[b, max_length, heads,
      head_dim]`; "matt": per layer a `[b, dim]` running sum (independent of max_length).
  decode_step(token [b] int32, position int32 scalar, cache, encoded, encoded_mask)
      -> (logits [b, vocab] float32, new cache)
      `token` sits at `position` (BOS at 0); the logits predict the token after it, i.e.
      targets[:, position]. Steps 0..t-1 fed the targets shifted right give the logits of
      `__call__` (tested for both attention kinds, to float rounding).

The variable tree is {"encoder": <the classifier's embed, gbst, encoder>, "decoder": ...}:
`params["encoder"]` has exactly the names of a classifier of the same encoder (pooling and
head excluded), which is what fine-tuning initialises from (`train.load_pretrained_encoder`).

Config (`config.model_name = "byte_encoder_decoder"`):
  config.model.encoder_name   a classifier in `models.MODELS` (e.g. "byte_qrnn");
  config.model.encoder        that classifier's keyword arguments;
  config.model.decoder        `decoder.Decoder` keyword arguments (attention_kind, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from byteflax import decoder as decoder_lib
from byteflax import models
from byteflax import quant as quant_lib
from byteflax import splitter

MODEL_NAME = "byte_encoder_decoder"
# The decoder's first input (T5: the pad id doubles as BOS).
BOS_ID = splitter.PAD_ID


def shift_right(targets: jnp.ndarray) -> jnp.ndarray:
  """[batch, length] -> [batch, length]: BOS, then targets without their last id."""
  return jnp.pad(targets, ((0, 0), (1, 0)), constant_values=BOS_ID)[:, :-1]


class EncoderDecoder(nn.Module):
  """Encoder (any `models.ByteClassifier`, up to its encodings) + `decoder.Decoder`.

  Attributes:
    encoder: an unbound classifier; only embed, GBST and its encoder are built.
    decoder: an unbound decoder.
  """
  encoder: models.ByteClassifier
  decoder: decoder_lib.Decoder

  def __call__(self, inputs: jnp.ndarray, targets: jnp.ndarray, train: bool = False
               ) -> jnp.ndarray:
    """inputs [b, n], targets [b, t] int32 -> logits [b, t, vocab] (teacher forcing)."""
    encoded, encoded_mask = self.encode(inputs, train=train)
    logits, _ = self.decoder(shift_right(targets), encoded, encoded_mask,
                             jnp.arange(targets.shape[1]), deterministic=not train)
    return logits

  def encode(self, inputs: jnp.ndarray, train: bool = False
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """inputs [b, n] -> encodings [b, m, d] and their mask [b, m]."""
    return self.encoder(inputs, train=train, encodings_only=True)

  def init_cache(self, batch_size: int, max_length: int) -> decoder_lib.Cache:
    """The decoder's zero state (see `decoder.Decoder.init_cache`)."""
    return self.decoder.init_cache(batch_size, max_length)

  def decode_step(self, token: jnp.ndarray, position: jnp.ndarray, cache: decoder_lib.Cache,
                  encoded: jnp.ndarray, encoded_mask: jnp.ndarray
                  ) -> tuple[jnp.ndarray, decoder_lib.Cache]:
    """token [b] at `position` -> next-token logits [b, vocab] and the updated cache."""
    positions = jnp.reshape(jnp.asarray(position, jnp.int32), (1,))
    logits, cache = self.decoder(token[:, None], encoded, encoded_mask, positions, cache,
                                 deterministic=True)
    return logits[:, 0], cache


def build_encoder_decoder(model_config: Mapping[str, Any],
                          quant: quant_lib.QuantConfig = quant_lib.QuantConfig()
                          ) -> EncoderDecoder:
  """From `config.model` ({encoder_name, encoder, decoder}), with clear errors."""
  expected = {"encoder_name", "encoder", "decoder"}
  if set(model_config) != expected:
    raise ValueError(f"config.model of {MODEL_NAME} needs exactly the keys "
                     f"{sorted(expected)}; got {sorted(model_config)}.")
  encoder = models.build_model(model_config["encoder_name"], 1,
                               dict(model_config["encoder"]), quant)
  decoder_kwargs = dict(model_config["decoder"])
  fields = set(decoder_lib.Decoder.__dataclass_fields__) - {"parent", "name", "quant"}
  unknown = set(decoder_kwargs) - fields
  if unknown:
    raise ValueError(f"config.model.decoder has keys {sorted(unknown)} that Decoder does "
                     f"not take; valid keys: {sorted(fields)}.")
  return EncoderDecoder(encoder=encoder, decoder=decoder_lib.Decoder(quant=quant,
                                                                     **decoder_kwargs))
