"""ByteSplitter: agreement with seqio.ByteVocabulary, truncation, batching, bad input."""

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import seqio

from byteflax import splitter
from byteflax.splitter import ByteSplitter

_SEQIO_VOCAB = seqio.ByteVocabulary()


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_encode_matches_seqio_byte_vocabulary(text):
  ids = ByteSplitter(add_eos=False).encode(text)
  assert ids.tolist() == _SEQIO_VOCAB.encode(text)
  assert ByteSplitter.decode(ids) == _SEQIO_VOCAB.decode(ids.tolist()) == text


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.binary())
def test_any_bytes_encode_and_decode_like_seqio(data):
  ids = ByteSplitter().encode(data)
  assert ids[-1] == splitter.EOS_ID
  assert (ids[:-1] - splitter.NUM_SPECIAL_IDS).astype(np.uint8).tobytes() == data
  assert ByteSplitter.decode(ids) == data.decode("utf-8", errors="replace")


def test_special_ids_and_vocab_size():
  assert (splitter.PAD_ID, splitter.EOS_ID, splitter.UNK_ID) == (
      _SEQIO_VOCAB.pad_id, _SEQIO_VOCAB.eos_id, _SEQIO_VOCAB.unk_id)
  assert splitter.VOCAB_SIZE == _SEQIO_VOCAB.vocab_size == 259
  assert ByteSplitter().encode("é").tolist() == [0xC3 + 3, 0xA9 + 3, 1]


def test_truncation_keeps_eos():
  ids = ByteSplitter(max_length=5).encode("abcdefgh")
  assert ids.tolist() == [ord(c) + 3 for c in "abcd"] + [splitter.EOS_ID]
  assert ByteSplitter(max_length=5, add_eos=False).encode("abcdefgh").size == 5
  with pytest.raises(ValueError, match="no room"):
    ByteSplitter(max_length=1)


def test_encode_batch_pads_and_masks():
  ids, mask = ByteSplitter().encode_batch(["ab", "", "abcd"])
  assert ids.shape == mask.shape == (3, 5)
  assert ids[1].tolist() == [splitter.EOS_ID, 0, 0, 0, 0]
  assert mask.sum(axis=1).tolist() == [3, 1, 5]
  ids, mask = ByteSplitter().encode_batch(["abcdefgh"], length=4)
  assert ids.tolist() == [[100, 101, 102, splitter.EOS_ID]] and mask.all()


def test_decode_stops_at_eos_and_skips_pad():
  assert ByteSplitter.decode([100, 101, splitter.EOS_ID, 102]) == "ab"
  assert ByteSplitter.decode([100, splitter.PAD_ID, splitter.UNK_ID, 101]) == "ab"


def test_empty_huge_and_invalid_inputs():
  assert ByteSplitter().encode("").tolist() == [splitter.EOS_ID]
  huge = "ü" * 500_000  # 1 MB of UTF-8.
  assert ByteSplitter().encode(huge).size == 1_000_001
  assert ByteSplitter(max_length=1024).encode(huge).size == 1024
  # Lone surrogates cannot be UTF-8: replaced, the rest of the text kept.
  assert ByteSplitter.decode(ByteSplitter().encode("a\ud800b")) == "a?b"
  with pytest.raises(TypeError, match="str or bytes"):
    ByteSplitter().encode(123)
