"""ByteSplitter: text <-> byte ids, the only "tokenizer" a byte-level model needs.

Ids follow ByT5 / `seqio.ByteVocabulary`: 0 = pad, 1 = end of sequence, 2 = unknown, and
byte `b` -> `b + 3`, so the vocabulary has 259 entries. Any byte string, valid UTF-8 or not,
has an encoding, so there is no out-of-vocabulary input; the unknown id exists only for
compatibility with ByT5 checkpoints and is never produced here.

The same mapping is a few lines of C on device (docs/export.md, "On the device").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
NUM_SPECIAL_IDS = 3
VOCAB_SIZE = 256 + NUM_SPECIAL_IDS


def _to_bytes(text: str | bytes) -> bytes:
  if isinstance(text, bytes):
    return text
  if isinstance(text, str):
    # Lone surrogates (e.g. from a bad JSON decode) cannot be UTF-8 encoded; replacing them
    # with "?" keeps the rest of the text instead of failing the whole batch.
    return text.encode("utf-8", errors="replace")
  raise TypeError(f"ByteSplitter takes str or bytes, got {type(text).__name__}.")


class ByteSplitter:
  """Encodes text to int32 byte ids and back.

  Attributes:
    max_length: if set, encodings are truncated to at most this many ids; with `add_eos`
      the last id is always EOS, so a truncated text keeps its end marker.
    add_eos: append EOS_ID after the bytes.
  """

  def __init__(self, max_length: int | None = None, add_eos: bool = True):
    if max_length is not None and max_length < (2 if add_eos else 1):
      raise ValueError(
          f"max_length={max_length} leaves no room for a byte"
          f"{' and the EOS id' if add_eos else ''}.")
    self.max_length = max_length
    self.add_eos = add_eos

  def encode(self, text: str | bytes, max_length: int | None = None) -> np.ndarray:
    """Returns int32 ids `[n]` for one text, n <= max_length (default self.max_length)."""
    max_length = max_length or self.max_length
    budget = None if max_length is None else max_length - int(self.add_eos)
    # Slicing the bytes before the numpy conversion keeps 1 MB inputs cheap when truncated.
    data = _to_bytes(text)[:budget]
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int32) + NUM_SPECIAL_IDS
    if self.add_eos:
      ids = np.append(ids, np.int32(EOS_ID))
    return ids

  def encode_batch(self, texts: Sequence[str | bytes],
                   length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encodes and right-pads a batch.

    Args:
      texts: the batch.
      length: padded length; defaults to max_length, else the longest encoding. Longer
        texts are truncated to it (keeping EOS).

    Returns:
      ids `[batch, length]` int32 (PAD_ID after the end) and mask `[batch, length]` bool,
      True on real ids (bytes and EOS).
    """
    length = length or self.max_length
    encoded = [self.encode(t, length) for t in texts]
    length = length or max((len(e) for e in encoded), default=1)
    ids = np.full((len(encoded), length), PAD_ID, dtype=np.int32)
    for row, e in enumerate(encoded):
      ids[row, :len(e)] = e
    return ids, ids != PAD_ID

  @staticmethod
  def decode(ids: Sequence[int] | np.ndarray) -> str:
    """Ids -> text; stops at the first EOS, skips pad/unk, invalid UTF-8 -> U+FFFD."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    end = np.flatnonzero(ids == EOS_ID)
    if end.size:
      ids = ids[:end[0]]
    byte_ids = ids[(ids >= NUM_SPECIAL_IDS) & (ids < VOCAB_SIZE)] - NUM_SPECIAL_IDS
    return byte_ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
