"""Beam search, greedy decoding and sampling against exhaustive and step-by-step references.

The decoders are random tables whose logits depend on the whole prefix through their cache,
so a search that reorders its cache wrongly scores the wrong prefixes and fails.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byteflax import beam_search
from byteflax import splitter

EOS = splitter.EOS_ID
FLOAT = beam_search.FloatScorer()
UINT8 = beam_search.Uint8Scorer()


def markov_decoder(tables, mix, rows_per_decoder):
  """A step function over random decoders.

  Args:
    tables: [decoders, states, vocab] logits.
    mix: [3, vocab] weights of the token-class counts.
    rows_per_decoder: row r of the flattened batch * beams axis uses decoder
      r // rows_per_decoder.

  The cache holds a hash of the prefix ("state", int32 [rows]) and counts of the token
  classes fed so far ("counts", float32 [rows, 3]); logits = tables[decoder, state] +
  counts @ mix.
  """
  num_states = tables.shape[1]

  def step_fn(tokens, position, cache):
    decoder = jnp.arange(tokens.shape[0]) // rows_per_decoder
    state = (cache["state"] * 7 + tokens * 3 + position + 1) % num_states
    counts = cache["counts"] + jax.nn.one_hot(tokens % 3, 3)
    return tables[decoder, state] + counts @ mix, {"state": state, "counts": counts}

  return step_fn


def init_cache(rows):
  return {"state": jnp.zeros(rows, jnp.int32), "counts": jnp.zeros((rows, 3), jnp.float32)}


def random_decoders(seed, num, vocab, scale=(1.0, 4.0), states=61):
  """tables [num, states, vocab] with a random logit scale per decoder, and mix [3, vocab]."""
  rng = np.random.default_rng(seed)
  tables = rng.normal(size=(num, states, vocab)) * rng.uniform(*scale, size=(num, 1, 1))
  mix = rng.normal(size=(3, vocab)) * 0.3
  return jnp.asarray(tables, jnp.float32), jnp.asarray(mix, jnp.float32)


@functools.partial(jax.jit, static_argnames=("scorer", "temperature", "keep"))
def score_sequences(tables, mix, sequences, scorer=FLOAT, temperature=1.0, keep=None):
  """Teacher-forced scores of sequences [n, max_length] (EOS-terminated or full length)
  under decoder tables[0]: (scorer running scores [n], lengths [n]). `keep` as the search
  passes it to the scorer (beams + 1)."""
  sequences = jnp.asarray(sequences, jnp.int32)
  count, max_length = sequences.shape
  step_fn = markov_decoder(tables, mix, count)
  cache, tokens = init_cache(count), jnp.zeros(count, jnp.int32)
  total = jnp.zeros(count, scorer.dtype)
  ended = jnp.zeros(count, bool)
  for position in range(max_length):
    logits, cache = step_fn(tokens, jnp.int32(position), cache)
    log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
    step = jnp.take_along_axis(scorer.step_scores(log_probs, keep),
                               sequences[:, position:position + 1], axis=1)[:, 0]
    total = jnp.where(ended, total, scorer.add(total, step))
    ended = ended | (sequences[:, position] == EOS)
    tokens = sequences[:, position]
  lengths = jnp.where(sequences == EOS, jnp.arange(max_length), max_length - 1).min(1) + 1
  return total, lengths


def all_sequences(vocab, max_length):
  """Every complete output: n - 1 non-EOS tokens then EOS (n <= max_length), or max_length
  non-EOS tokens; PAD after EOS. [count, max_length] int32."""
  others = [t for t in range(vocab) if t != EOS]
  rows = []
  for length in range(1, max_length + 1):
    for prefix in itertools.product(others, repeat=length - 1):
      rows.append(list(prefix) + [EOS] + [splitter.PAD_ID] * (max_length - length))
  rows += [list(p) for p in itertools.product(others, repeat=max_length)]
  return np.asarray(rows, np.int32)


def run_beam_search(tables, mix, scorer=FLOAT, **kwargs):
  num, beams = tables.shape[0], kwargs["beam_size"]
  search = jax.jit(functools.partial(
      beam_search.beam_search, markov_decoder(tables, mix, beams), batch_size=num,
      scorer=scorer, **kwargs))
  return jax.tree.map(np.asarray, search(init_cache(num * beams)))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_equals_exhaustive_search(alpha):
  vocab, max_length, beams = 5, 3, 20  # 5 then 20 extensions: every prefix stays alive.
  tables, mix = random_decoders(0, 6, vocab)
  result = run_beam_search(tables, mix, beam_size=beams, max_length=max_length, alpha=alpha)
  candidates = all_sequences(vocab, max_length)
  for d in range(tables.shape[0]):
    log_probs, lengths = map(np.asarray, score_sequences(tables[d:d + 1], mix, candidates))
    scores = log_probs / beam_search.length_penalty(lengths, alpha)
    best = np.argsort(-scores, kind="stable")[:beams]
    np.testing.assert_array_equal(result.sequences[d], candidates[best])
    np.testing.assert_allclose(result.scores[d], scores[best], rtol=1e-5)
    np.testing.assert_allclose(result.log_probs[d], log_probs[best], rtol=1e-5)


def test_uint8_beam_search_equals_exhaustive_search_on_quantized_scores():
  vocab, max_length, beams = 5, 3, 20
  tables, mix = random_decoders(1, 6, vocab)
  result = run_beam_search(tables, mix, UINT8, beam_size=beams, max_length=max_length,
                           alpha=0.6)
  candidates = all_sequences(vocab, max_length)
  for d in range(tables.shape[0]):
    totals, lengths = score_sequences(tables[d:d + 1], mix, candidates, UINT8)
    scores = np.asarray(UINT8.to_log_prob(totals) / beam_search.length_penalty(lengths, 0.6))
    # Integer scores tie often: compare the top scores, and each returned sequence's own.
    np.testing.assert_allclose(result.scores[d], np.sort(scores)[::-1][:beams], rtol=1e-6)
    returned_totals, _ = score_sequences(tables[d:d + 1], mix, result.sequences[d], UINT8)
    np.testing.assert_allclose(result.log_probs[d], UINT8.to_log_prob(returned_totals),
                               rtol=1e-6)


def test_beam_search_hypotheses_are_consistent():
  """Narrow beams on longer outputs: every returned hypothesis is scored as teacher forcing
  scores it, ranked best first, and ends in EOS or at max_length."""
  max_length, alpha, beams = 9, 0.6, 4
  tables, mix = random_decoders(2, 8, vocab=7)
  for scorer in (FLOAT, UINT8):
    result = run_beam_search(tables, mix, scorer, beam_size=beams, max_length=max_length,
                             alpha=alpha)
    assert np.all(np.diff(result.scores, axis=1) <= 0)
    for d in range(tables.shape[0]):
      totals, lengths = score_sequences(tables[d:d + 1], mix, result.sequences[d], scorer,
                                        keep=beams + 1)
      log_probs = np.asarray(scorer.to_log_prob(totals))
      np.testing.assert_allclose(result.log_probs[d], log_probs, rtol=1e-5)
      np.testing.assert_allclose(
          result.scores[d], log_probs / beam_search.length_penalty(lengths, alpha), rtol=1e-5)
      assert len(set(map(tuple, result.sequences[d]))) == beams
  # Some outputs end early, some run to max_length: both paths are exercised.
  assert 0 < np.mean(np.any(result.sequences == EOS, axis=2)) < 1


def greedy_reference(tables, mix, max_length):
  """Argmax decoding one step at a time in numpy: (sequences [n, max_length], log-probs)."""
  count = tables.shape[0]
  step_fn = markov_decoder(tables, mix, 1)
  cache, tokens = init_cache(count), jnp.zeros(count, jnp.int32)
  sequences = np.zeros((count, max_length), np.int32)
  totals, ended = np.zeros(count), np.zeros(count, bool)
  for position in range(max_length):
    logits, cache = step_fn(tokens, jnp.int32(position), cache)
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    chosen = log_probs.argmax(-1)
    sequences[:, position] = np.where(ended, splitter.PAD_ID, chosen)
    totals += np.where(ended, 0.0, log_probs[np.arange(count), chosen])
    ended |= chosen == EOS
    tokens = jnp.asarray(chosen, jnp.int32)
  return sequences, totals


def test_greedy_and_beam_one_equal_argmax_decoding():
  max_length = 10
  tables, mix = random_decoders(3, 32, vocab=8)
  expected, expected_log_probs = greedy_reference(tables, mix, max_length)
  assert 0 < np.mean(np.any(expected == EOS, axis=1)) < 1
  greedy = jax.jit(functools.partial(
      beam_search.sample, markov_decoder(tables, mix, 1), batch_size=32,
      max_length=max_length))
  sequences, log_probs = greedy(init_cache(32))
  np.testing.assert_array_equal(sequences, expected)
  np.testing.assert_allclose(log_probs, expected_log_probs, rtol=1e-5)
  beam = run_beam_search(tables, mix, beam_size=1, max_length=max_length, alpha=0.0)
  np.testing.assert_array_equal(beam.sequences[:, 0], expected)
  np.testing.assert_allclose(beam.log_probs[:, 0], expected_log_probs, rtol=1e-5)


def test_sampling_follows_the_tempered_distribution():
  vocab, max_length, temperature, count = 3, 2, 0.7, 20_000
  tables, mix = random_decoders(4, 1, vocab, scale=(1.0, 1.0))
  run = jax.jit(lambda rng: beam_search.sample(
      markov_decoder(tables, mix, count), init_cache(count), batch_size=count,
      max_length=max_length, rng=rng, temperature=temperature))
  sequences, log_probs = map(np.asarray, run(jax.random.PRNGKey(0)))
  candidates = all_sequences(vocab, max_length)
  expected = np.asarray(score_sequences(tables, mix, candidates, temperature=temperature)[0])
  np.testing.assert_allclose(np.exp(expected).sum(), 1.0, rtol=1e-5)
  for candidate, log_prob in zip(candidates, expected):
    drawn = np.all(sequences == candidate, axis=1)
    p = np.exp(log_prob)
    assert abs(drawn.mean() - p) < 5 * np.sqrt(p * (1 - p) / count) + 1e-3
    np.testing.assert_allclose(log_probs[drawn], log_prob, rtol=1e-5)
  assert not np.array_equal(np.asarray(run(jax.random.PRNGKey(1))[0]), sequences)
  np.testing.assert_array_equal(run(jax.random.PRNGKey(0))[0], sequences)


def test_uint8_top_sequence_matches_float_on_random_decoders():
  """The test set, fixed before it was run: 500 random byte-vocabulary decoders (logit
  scale 3-8, ~1.4 nats per step), outputs up to 8 bytes, beam 4, alpha 0.6, seed 0;
  Uint8Scorer's max_gap was chosen on other seeds.

  Measured: 99.4% (497 of 500) with codes spanning each row's beams + 1 best tokens;
  98.8% (494) when every row's codes spanned the full 6 nats. The mismatches are mostly
  not ties of the final ranking but beams pruned differently (a candidate within a
  rounding step of the k-th best), so the uint8 search also finds better-scoring
  sequences than the float search on some decoders (docs/generation.md).
  """
  tables, mix = random_decoders(0, 500, splitter.VOCAB_SIZE, scale=(3.0, 8.0))
  kwargs = dict(beam_size=4, max_length=8, alpha=0.6)
  float_result = run_beam_search(tables, mix, FLOAT, **kwargs)
  uint8_result = run_beam_search(tables, mix, UINT8, **kwargs)
  same = np.all(float_result.sequences[:, 0] == uint8_result.sequences[:, 0], axis=1)
  print(f"uint8 top sequence = float top sequence on {same.mean():.1%} of 500 decoders")
  assert same.mean() >= 0.99


def test_uint8_quantization_error():
  log_probs = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(0), (64, 259)) * 3)
  offsets, scale, codes, coded = UINT8.quantize(log_probs)
  assert codes.dtype == jnp.uint8 and offsets.dtype == jnp.int32
  np.testing.assert_array_equal(scale, UINT8.offset_steps)  # The full range: max_gap.
  dequantized = UINT8.to_log_prob(UINT8.step_scores(log_probs))
  gap = log_probs.max(-1, keepdims=True) - log_probs
  np.testing.assert_array_equal(coded, gap <= UINT8.max_gap)
  assert 0 < coded.mean() < 1
  error = jnp.abs(dequantized - log_probs)
  assert jnp.all(jnp.where(coded, error, 0) <= UINT8.scale / 2 + UINT8.unit)
  best = log_probs.argmax(-1)
  assert jnp.all(jnp.take_along_axis(error, best[:, None], 1) <= UINT8.unit / 2 + 1e-6)
  assert jnp.all(jnp.where(coded, True, jnp.isneginf(dequantized)))


def test_uint8_never_takes_a_token_beyond_its_range():
  """EOS 12 nats below five equally likely bytes: clamped to the range's end (6 nats) it
  would look likelier than eight more bytes and end the search at once."""
  logits = jnp.asarray([-jnp.inf, -12.0, 0.0, 0.0, 0.0, 0.0, 0.0])
  for scorer in (FLOAT, UINT8):
    result = beam_search.beam_search(constant_decoder(logits), init_cache(4), batch_size=1,
                                     beam_size=4, max_length=8, alpha=0.6, scorer=scorer)
    assert not np.any(np.asarray(result.sequences[0, 0]) == EOS)
    np.testing.assert_allclose(result.log_probs[0, 0], 8 * np.log(0.2), rtol=1e-3)


def test_uint8_ranking_keys_keep_the_integer_order():
  rng = np.random.default_rng(0)
  scores = np.concatenate([rng.integers(UINT8.dead, 1, size=5000),
                           rng.integers(-3000, 1, size=5000), [UINT8.dead, -1, 0, 0]])
  keys = np.asarray(UINT8.ranking_keys(jnp.asarray(scores, jnp.int32)))
  assert keys.dtype == np.float32 and np.all(np.isfinite(keys))
  order = np.argsort(scores, kind="stable")
  np.testing.assert_array_equal(np.argsort(keys, kind="stable"), order)
  np.testing.assert_array_equal(np.diff(keys[order]) == 0, np.diff(scores[order]) == 0)


def constant_decoder(logits):
  """A decoder with the same logits [vocab] at every step."""
  logits = jnp.asarray(logits, jnp.float32)
  return lambda tokens, position, cache: (
      jnp.broadcast_to(logits, (tokens.shape[0], logits.shape[0])), cache)


@pytest.mark.parametrize("scorer", [FLOAT, UINT8], ids=["float", "uint8"])
def test_every_token_eos(scorer):
  only_eos = constant_decoder([-jnp.inf, 0.0, -jnp.inf, -jnp.inf])
  result = beam_search.beam_search(only_eos, init_cache(8), batch_size=2, beam_size=4,
                                   max_length=5, scorer=scorer)
  np.testing.assert_array_equal(result.sequences[:, 0], [[EOS, 0, 0, 0, 0]] * 2)
  np.testing.assert_array_equal(result.scores[:, 0], 0.0)
  assert np.all(np.isneginf(result.scores[:, 1:])) and not np.any(np.isnan(result.scores))
  np.testing.assert_array_equal(result.sequences[:, 1:], 0)
  sequences, log_probs = beam_search.sample(only_eos, init_cache(2), batch_size=2,
                                            max_length=5, rng=jax.random.PRNGKey(0),
                                            temperature=1.0, scorer=scorer)
  np.testing.assert_array_equal(sequences, [[EOS, 0, 0, 0, 0]] * 2)
  np.testing.assert_array_equal(log_probs, 0.0)


@pytest.mark.parametrize("scorer", [FLOAT, UINT8], ids=["float", "uint8"])
def test_max_length_one(scorer):
  logits = jnp.asarray([0.5, 2.0, 1.0, -1.0, 3.0])
  result = beam_search.beam_search(constant_decoder(logits), init_cache(3), batch_size=1,
                                   beam_size=3, max_length=1, alpha=0.6, scorer=scorer)
  np.testing.assert_array_equal(result.sequences[0, :, 0], [4, 1, 2])
  expected = jax.nn.log_softmax(logits)[jnp.asarray([4, 1, 2])]
  tolerance = 1e-6 if scorer is FLOAT else UINT8.scale / 2 + UINT8.unit
  np.testing.assert_allclose(result.log_probs[0], expected, atol=tolerance)
  np.testing.assert_allclose(result.scores[0], result.log_probs[0], rtol=1e-6)  # lp(1) = 1


@pytest.mark.parametrize("scorer", [FLOAT, UINT8], ids=["float", "uint8"])
def test_masked_tokens_never_chosen_and_no_nans(scorer):
  vocab = 8
  tables, mix = random_decoders(5, 4, vocab)
  masked_ids = [3, 5, 6]
  masked = jnp.zeros(vocab, bool).at[jnp.asarray(masked_ids)].set(True)
  beams = 6  # >= the 5 unmasked tokens: every first step's EOS enters the finished set.
  base = markov_decoder(tables, mix, beams)

  def step_fn(tokens, position, cache):
    logits, cache = base(tokens, position, cache)
    logits = jnp.where(masked, -jnp.inf, logits)
    # At position 2 rows of odd decoders mask everything (a NaN log-softmax row).
    everything = (position == 2) & ((jnp.arange(tokens.shape[0]) // beams) % 2 == 1)
    return jnp.where(everything[:, None], -jnp.inf, logits), cache

  result = beam_search.beam_search(step_fn, init_cache(4 * beams), batch_size=4,
                                   beam_size=beams, max_length=6, scorer=scorer)
  assert not np.any(np.isnan(result.scores)) and not np.any(np.isnan(result.log_probs))
  found = np.isfinite(result.scores)
  assert np.all(found[:, 0])
  assert not np.any(np.isin(result.sequences, masked_ids))
  # Odd decoders can only have finished by position 1 (EOS at position 0 or 1).
  odd_lengths = (result.sequences[1::2] != 0).sum(-1)[found[1::2]]
  assert np.all(odd_lengths <= 2)
  sequences, log_probs = beam_search.sample(
      step_fn, init_cache(4 * beams), batch_size=4 * beams, max_length=6,
      rng=jax.random.PRNGKey(0), temperature=1.0, scorer=scorer)
  assert not np.any(np.isnan(log_probs))
  assert not np.any(np.isin(sequences, masked_ids))


def test_bad_arguments_are_clear_errors():
  step_fn = constant_decoder([0.0, 0.0, 0.0])
  with pytest.raises(ValueError, match="batch \\* beams = 8"):
    beam_search.beam_search(step_fn, init_cache(4), batch_size=2, beam_size=4,
                            max_length=3)
  with pytest.raises(ValueError, match="num_return"):
    beam_search.beam_search(step_fn, init_cache(8), batch_size=2, beam_size=4,
                            max_length=3, num_return=5)
  with pytest.raises(ValueError, match="needs an rng"):
    beam_search.sample(step_fn, init_cache(2), batch_size=2, max_length=3, temperature=1.0)
  with pytest.raises(ValueError, match="overflow"):
    beam_search.beam_search(step_fn, init_cache(2), batch_size=2, beam_size=1,
                            max_length=10**6, scorer=UINT8)
  with pytest.raises(ValueError, match="Unknown scorer"):
    beam_search.make_scorer("int4")


@pytest.mark.parametrize("keep", [2, 5, 259])
def test_uint8_codes_span_the_kept_tokens(keep):
  """With `keep`, a row's 255 codes span the gap to its keep-th best token (at most max_gap):
  those tokens are coded (with a finer scale when the gap is smaller), the rest excluded."""
  log_probs = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(1), (64, 259)) * 3)
  offsets, scale, codes, coded = map(np.asarray, UINT8.quantize(log_probs, keep))
  log_probs = np.asarray(log_probs)
  gap = log_probs.max(-1, keepdims=True) - log_probs
  distinct_gaps = [np.unique(row) for row in gap]  # Random normals: no ties in practice.
  span = np.minimum([[row[min(keep, len(row)) - 1]] for row in distinct_gaps], UINT8.max_gap)
  np.testing.assert_array_equal(coded, gap <= span)
  assert np.all(coded.sum(-1) >= np.where(span[:, 0] < UINT8.max_gap, keep, 1))
  assert np.all((scale >= 1) & (scale <= UINT8.offset_steps))
  # ceil(scale) keeps every coded gap within 255 codes: the uint8 cast never clips.
  assert np.all(np.where(coded, gap / (scale * UINT8.unit), 0) <= 255 + 1e-3)
  dequantized = np.asarray(UINT8.to_log_prob(UINT8.step_scores(jnp.asarray(log_probs), keep)))
  error = np.abs(dequantized - log_probs)
  assert np.all(np.where(coded, error, 0) <= scale * UINT8.unit / 2 + UINT8.unit)
  assert np.all(np.where(coded, True, np.isneginf(dequantized)))
  if keep < 259:
    assert np.mean(scale) < UINT8.offset_steps / 2  # Finer than the full range's codes.
