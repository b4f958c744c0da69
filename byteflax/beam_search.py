"""Beam search, greedy decoding and temperature sampling over any step-wise decoder.

Everything runs in one `lax.while_loop` with fixed shapes, so a whole search jits into one
program. The decoder is a step function

  step_fn(tokens [batch * beams] int32, position int32 scalar, cache)
      -> (logits [batch * beams, vocab], new cache)

whose cache is a pytree with the flattened (batch * beams) axis leading on every leaf; beams
are reordered by gathering along that axis. Row r of the flattened axis is beam r % beams of
batch element r // beams (`repeat_beams` lays out per-example tensors, e.g. encoder outputs,
the same way). Position 0 is fed `bos_id`; each later step is fed the token chosen before.

The search (alive and finished sets, as in t5x):
- every step scores all beams x vocab extensions (running score + this step's score) and
  ranks them; extensions ending in EOS that rank among the `beams` best of the step are
  moved to the finished set (and, at the last position, every extension in that top
  `beams`: a hypothesis that runs out of length is complete);
- the alive set is refilled with the `beams` best extensions that do not end in EOS, so
  `beams` hypotheses stay alive;
- the finished set keeps the `beams` best by length-penalized score (GNMT, Wu et al. 2016):
      score(Y) = log P(Y) / lp(|Y|),   lp(n) = ((5 + n) / 6) ** alpha,
  |Y| counting every generated token including EOS; alpha = 0 ranks by log P(Y);
- it stops at max_length or once no alive hypothesis can enter the finished set: the best
  length-penalized score an alive hypothesis can still reach (its score so far over
  lp(current or max length), whichever is larger: log-probs only fall) is no better than
  the worst finished one (ties go to the finished hypothesis).
With beams >= every prefix the search is exhaustive; with one beam and alpha = 0 it is
greedy decoding (EOS enters only when it is the step's argmax, and then nothing alive can
beat it).

Greedy and temperature sampling use the same loop with one beam and a different selection:
the step's extensions are ranked by score + Gumbel noise (the Gumbel-max trick: the argmax
of log p + Gumbel is a sample from p) and an EOS'd hypothesis leaves the alive set instead of
being replaced, so the sampled sequence ends at its EOS.

Scorers (what a step adds to a running score):
- `FloatScorer`: float32 log-probabilities, log_softmax(logits / temperature).
- `Uint8Scorer`: the on-device form, as SeqFlowLite's TFLite beam-search op reads a uint8
  decoder output with higher-precision normalisers per row. Each step, per row (beam):
      offset = round(max_k log p_k / u)                              (int32)
      scale  = ceil(256 R / G)                                       (int32, in units u)
      q_k    = round((max_k log p_k - log p_k) / (scale u))          (uint8)
      step score_k = offset - scale q_k                              (int32, in units u)
  with G = `max_gap` (default 6 nats), u = G / 255 / 256 nats and R the row's range: G,
  or in beam search the gap to the row's (beams + 1)-th best token when smaller, since a
  step keeps at most `beams` extensions of a row besides EOS and the tokens below can
  never be chosen. The full range is s = G / 255 = 0.0235 nats per code; with 4 beams on
  the test's random decoders the median range is 3.5 nats (codes 1.7x finer; quartiles
  2.3-5.1 nats). The [rows, vocab] tensor is 8 bits a token; only
  the per-row offset and scale are wider, so the step's best token costs its log-prob to
  within u / 2 and every other token is rounded to a code. Running scores are int32 sums
  of step scores (exact comparisons, no float rounding accumulates); score * u is the
  log-probability. A token beyond the range (at most G below the best: p_k < 0.0025
  p_best) has no code: it is excluded like a masked token (logit -inf), as a quantized
  probability of 0 is in the on-device op (log 0 = -inf). Clamping it to code 255 instead
  made it look far likelier than it is: on a trained byte decoder the search then ended
  hypotheses early through "cheap" EOS tokens (docs/generation.md). Codes are gaps to
  the best token rather than log-probs from 0 because beams mostly extend by their best
  token, which then costs no rounding; G and the per-row range were chosen on random
  decoders apart from the test set's. Length penalties are applied in float to the (few)
  finished candidates only.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from byteflax import splitter

StepFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


@dataclasses.dataclass(frozen=True)
class FloatScorer:
  """Running scores are float32 sums of log-probabilities; -inf marks a dead hypothesis."""
  dtype = jnp.float32
  dead = -jnp.inf

  def max_steps(self, vocab: int) -> int:
    del vocab  # Float sums cannot overflow.
    return sys.maxsize

  def step_scores(self, log_probs: jax.Array, keep: int | None = None) -> jax.Array:
    del keep  # Float scores need no range.
    return log_probs

  def add(self, scores: jax.Array, step: jax.Array) -> jax.Array:
    return scores + step

  def to_log_prob(self, scores: jax.Array) -> jax.Array:
    return scores

  def ranking_keys(self, scores: jax.Array) -> jax.Array:
    return scores


@dataclasses.dataclass(frozen=True)
class Uint8Scorer:
  """Running scores are int32 sums in units of 1/256 of a full-range code (module docstring).

  Attributes:
    max_gap: the largest gap below the step's best log-prob a code holds, in nats; the
      full-range code scale is max_gap / 255 nats. Tokens further below are excluded.
  """
  max_gap: float = 6.0
  dtype = jnp.int32
  # Sub-code resolution of the per-row offset (the step's best log-prob).
  offset_steps = 256
  # Dead hypotheses saturate at -2**30, so adding one step (>= -2**30 itself) cannot
  # overflow int32; `max_length` is checked so no real score gets near it.
  dead = -(2 ** 30)

  @property
  def scale(self) -> float:
    """Nats per uint8 code."""
    return self.max_gap / 255

  @property
  def unit(self) -> float:
    """Nats per unit of the int32 scores."""
    return self.scale / self.offset_steps

  def max_steps(self, vocab: int) -> int:
    """Steps before a worst-case score could reach `dead` (best log-prob >= -log vocab)."""
    worst_step = np.log(vocab) / self.unit + self.offset_steps * 255
    return int(-self.dead / worst_step)

  def quantize(self, log_probs: jax.Array, keep: int | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """[..., vocab] float log-probs -> per-row offsets [..., 1] int32 and code scales
    [..., 1] int32 (both in units), codes [..., vocab] uint8 and which tokens are coded
    [..., vocab] bool (the others are excluded).

    The codes span [0, range] below the row's best log-prob, range = max_gap, or with
    `keep` the gap to the row's keep-th largest distinct log-prob if that is smaller (tied
    tokens share a code, so ties only widen the coded set):
      offset = round(max log p / unit); scale = ceil(256 range / max_gap) units;
      code = round((max log p - log p) / scale).
    """
    best = jnp.max(log_probs, axis=-1, keepdims=True)
    best = jnp.where(jnp.isfinite(best), best, 0.0)  # An all-masked row: every token dead.
    gaps = best - log_probs
    span = jnp.full_like(best, self.max_gap)
    if keep is not None and keep < log_probs.shape[-1]:
      kth_best = _kth_largest_distinct(log_probs, keep)
      span = jnp.minimum(span, jnp.where(jnp.isfinite(kth_best), best - kth_best, span))
    coded = gaps <= span
    # ceil keeps every coded gap within 255 codes; a scale of at least one unit.
    scale = jnp.maximum(jnp.ceil(span / self.max_gap * self.offset_steps), 1.0)
    codes = jnp.round(jnp.where(coded, gaps, 0.0) / (scale * self.unit))
    codes = jnp.minimum(codes, 255).astype(jnp.uint8)
    return (jnp.round(best / self.unit).astype(jnp.int32), scale.astype(jnp.int32), codes,
            coded)

  def step_scores(self, log_probs: jax.Array, keep: int | None = None) -> jax.Array:
    offsets, scale, codes, coded = self.quantize(log_probs, keep)
    scores = offsets - scale * codes.astype(jnp.int32)
    return jnp.where(coded, scores, self.dead)

  def add(self, scores: jax.Array, step: jax.Array) -> jax.Array:
    return jnp.maximum(scores + step, self.dead)

  def to_log_prob(self, scores: jax.Array) -> jax.Array:
    return jnp.where(scores <= self.dead, -jnp.inf, scores.astype(jnp.float32) * self.unit)

  def ranking_keys(self, scores: jax.Array) -> jax.Array:
    """float32 keys in exactly the order of the int32 scores (ties kept).

    XLA:CPU's top_k is ~30x slower on int32 than on float32 (a full sort), so scores
    (in [dead, 0]) are ranked through their bit patterns: -score + 2**23 lies in
    [2**23, 2**30 + 2**23], whose bits, read as float32, are positive normal floats
    ordered like the integers (no subnormals a flush-to-zero CPU would merge).
    """
    bits = jax.lax.bitcast_convert_type(2 ** 23 - scores, jnp.float32)
    return -bits


def _kth_largest_distinct(x: jax.Array, k: int) -> jax.Array:
  """[..., n] -> [..., 1]: the k-th largest distinct value (-inf if there are fewer).

  k - 1 rounds of max-and-remove: ~6x faster than `lax.top_k` on XLA:CPU for a beam's
  few rows, where it ran every search step.
  """
  for _ in range(k - 1):
    x = jnp.where(x >= jnp.max(x, axis=-1, keepdims=True), -jnp.inf, x)
  return jnp.max(x, axis=-1, keepdims=True)


SCORERS = {"float": FloatScorer, "uint8": Uint8Scorer}


def make_scorer(name: str) -> FloatScorer | Uint8Scorer:
  if name not in SCORERS:
    raise ValueError(f"Unknown scorer {name!r}; choose from {sorted(SCORERS)}.")
  return SCORERS[name]()


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT's lp(n) = ((5 + n) / 6) ** alpha; scores are log P / lp."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def repeat_beams(tree: Any, beams: int) -> Any:
  """Every leaf [batch, ...] -> [batch * beams, ...], row r a copy of row r // beams."""
  return jax.tree.map(lambda x: jnp.repeat(x, beams, axis=0), tree)


class Hypotheses(NamedTuple):
  """The search's result, best first.

  sequences: [batch, n, max_length] int32 generated tokens (EOS included, PAD after it).
  scores: [batch, n] float32 length-penalized scores (the ranking); -inf where the search
    found fewer than n hypotheses (then the sequence is all PAD).
  log_probs: [batch, n] float32 log-probabilities of the sequences under the scorer.
  """
  sequences: jax.Array
  scores: jax.Array
  log_probs: jax.Array


class _State(NamedTuple):
  position: jax.Array        # int32 scalar: the position decoded next.
  alive_sequences: jax.Array  # [batch, beams, max_length] int32
  alive_scores: jax.Array     # [batch, beams] scorer dtype
  last_tokens: jax.Array      # [batch, beams] int32, fed at `position`
  finished_sequences: jax.Array  # [batch, beams, max_length] int32
  finished_scores: jax.Array  # [batch, beams] float32, length-penalized
  finished_log_probs: jax.Array  # [batch, beams] float32
  cache: Any                  # leaves [batch * beams, ...]
  rng: jax.Array


def _gather_beams(x: jax.Array, beam_index: jax.Array) -> jax.Array:
  """x [batch, beams_in, ...], beam_index [batch, beams_out] -> [batch, beams_out, ...]."""
  return jax.vmap(lambda rows, index: rows[index])(x, beam_index)


def _gather_cache(cache: Any, beam_index: jax.Array) -> Any:
  """Reorders every cache leaf [batch * beams, ...] by beam_index [batch, beams]."""
  batch, beams = beam_index.shape
  rows = (jnp.arange(batch)[:, None] * beams + beam_index).reshape(-1)
  return jax.tree.map(lambda leaf: jnp.take(leaf, rows, axis=0), cache)


def _top(keys: jax.Array, scores: jax.Array, sequences: jax.Array, k: int, vocab: int,
         position: jax.Array):
  """The k best of beams x vocab extensions by float32 `keys` [batch, beams * vocab].

  Returns their scores [batch, k], parent beams [batch, k], tokens [batch, k] and
  sequences [batch, k, max_length] (parents' with the token written at `position`).
  """
  _, index = jax.lax.top_k(keys, k)
  parents, tokens = index // vocab, (index % vocab).astype(jnp.int32)
  new_sequences = _gather_beams(sequences, parents).at[:, :, position].set(tokens)
  return jnp.take_along_axis(scores, index, axis=1), parents, tokens, new_sequences


def _search(step_fn: StepFn, cache: Any, rng: jax.Array | None, *, batch_size: int,
            beams: int, max_length: int, alpha: float, temperature: float, ancestral: bool,
            scorer, eos_id: int, bos_id: int) -> Hypotheses:
  """The loop behind `beam_search` and `sample` (module docstring).

  ancestral: the selection rule of greedy decoding and sampling: an extension that ends in
    EOS leaves the alive set instead of being replaced by the next best one, and with
    temperature > 0 extensions are ranked by score + Gumbel noise.
  """
  sampling = ancestral and temperature > 0
  if max_length < 1:
    raise ValueError(f"max_length must be >= 1, got {max_length}.")
  rows = batch_size * beams
  for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
    if not leaf.shape or leaf.shape[0] != rows:
      raise ValueError(
          f"Cache leaf {jax.tree_util.keystr(path)} has shape {leaf.shape}; every leaf "
          f"needs the batch * beams = {rows} axis first (build the cache for {rows} rows).")

  def log_probs_of(logits: jax.Array) -> jax.Array:
    if temperature > 0:
      logits = logits / temperature
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    # A row whose logits are all -inf (every token masked) gives NaN: treat it as masked.
    return jnp.where(jnp.isnan(log_probs), -jnp.inf, log_probs)

  def body(state: _State) -> _State:
    position = state.position
    logits, cache = step_fn(state.last_tokens.reshape(rows), position, state.cache)
    vocab = logits.shape[-1]
    if max_length > scorer.max_steps(vocab):
      raise ValueError(f"max_length {max_length} could overflow the {scorer} running "
                       f"scores (at most {scorer.max_steps(vocab)} steps).")
    # Beam search takes at most `beams` extensions of a row, EOS aside: its beams + 1 best
    # tokens are all a quantized scorer has to tell apart.
    keep = None if ancestral else beams + 1
    step = scorer.step_scores(log_probs_of(logits), keep).reshape(batch_size, beams, vocab)
    candidates = scorer.add(state.alive_scores[:, :, None], step).reshape(batch_size, -1)
    if sampling:
      key = jax.random.fold_in(state.rng, position)
      keys = scorer.to_log_prob(candidates) + jax.random.gumbel(key, candidates.shape)
    else:
      keys = scorer.ranking_keys(candidates)
    is_last = position == max_length - 1
    length = position + 1
    penalty = length_penalty(length, alpha)

    # The step's `beams` best extensions: those ending in EOS (all of them at the last
    # position) are complete and compete for the finished set.
    top_scores, top_parents, top_tokens, top_sequences = _top(
        keys, candidates, state.alive_sequences, beams, vocab, position)
    completes = ((top_tokens == eos_id) | is_last) & (top_scores > scorer.dead)
    new_log_probs = jnp.where(completes, scorer.to_log_prob(top_scores), -jnp.inf)
    merged_scores = jnp.concatenate(
        [state.finished_scores, new_log_probs / penalty], axis=1)
    merged_log_probs = jnp.concatenate([state.finished_log_probs, new_log_probs], axis=1)
    merged_sequences = jnp.concatenate([state.finished_sequences, top_sequences], axis=1)
    finished_scores, keep = jax.lax.top_k(merged_scores, beams)

    if ancestral:
      # A sequence that ended leaves the alive set (its slot dies) rather than continuing.
      alive_scores = jnp.where(top_tokens == eos_id, scorer.dead, top_scores)
      parents, tokens, alive_sequences = top_parents, top_tokens, top_sequences
    else:
      not_eos = jnp.arange(candidates.shape[1]) % vocab != eos_id
      alive_scores, parents, tokens, alive_sequences = _top(
          jnp.where(not_eos, keys, -jnp.inf), jnp.where(not_eos, candidates, scorer.dead),
          state.alive_sequences, beams, vocab, position)
    return _State(
        position=position + 1,
        alive_sequences=alive_sequences,
        alive_scores=alive_scores,
        last_tokens=tokens,
        finished_sequences=_gather_beams(merged_sequences, keep),
        finished_scores=finished_scores,
        finished_log_probs=jnp.take_along_axis(merged_log_probs, keep, axis=1),
        cache=_gather_cache(cache, parents),
        rng=state.rng)

  def not_done(state: _State) -> jax.Array:
    # The best score an alive hypothesis could still finish with: log-probs only fall, so
    # its score so far over the larger lp of the remaining lengths (now or max_length).
    alive = scorer.to_log_prob(state.alive_scores)
    best_alive = jnp.max(jnp.maximum(
        alive / length_penalty(state.position + 1, alpha),
        alive / length_penalty(jnp.int32(max_length), alpha)), axis=1)
    worst_finished = jnp.min(state.finished_scores, axis=1)
    can_improve = jnp.any(best_alive > worst_finished)
    return (state.position < max_length) & can_improve

  first_alive = jnp.zeros((batch_size, beams), scorer.dtype).at[:, 1:].set(scorer.dead)
  sequences = jnp.zeros((batch_size, beams, max_length), jnp.int32)
  init = _State(
      position=jnp.int32(0),
      alive_sequences=sequences,
      alive_scores=first_alive,
      last_tokens=jnp.full((batch_size, beams), bos_id, jnp.int32),
      finished_sequences=sequences,
      finished_scores=jnp.full((batch_size, beams), -jnp.inf, jnp.float32),
      finished_log_probs=jnp.full((batch_size, beams), -jnp.inf, jnp.float32),
      cache=cache,
      rng=jax.random.PRNGKey(0) if rng is None else rng)
  final = jax.lax.while_loop(not_done, body, init)
  found = final.finished_scores > -jnp.inf
  return Hypotheses(
      sequences=jnp.where(found[:, :, None], final.finished_sequences, splitter.PAD_ID),
      scores=final.finished_scores, log_probs=final.finished_log_probs)


def beam_search(step_fn: StepFn, cache: Any, *, batch_size: int, beam_size: int,
                max_length: int, alpha: float = 0.6, num_return: int | None = None,
                scorer: FloatScorer | Uint8Scorer = FloatScorer(), temperature: float = 1.0,
                eos_id: int = splitter.EOS_ID, bos_id: int = splitter.PAD_ID) -> Hypotheses:
  """Beam search; jit it with the step function and the ints static.

  Args:
    step_fn: the decoder step (module docstring).
    cache: its initial cache, every leaf [batch_size * beam_size, ...].
    batch_size: examples.
    beam_size: hypotheses kept alive (and finished) per example.
    max_length: the most tokens generated, EOS included.
    alpha: length-penalty exponent (GNMT; 0 ranks by log-probability).
    num_return: how many of the best hypotheses to return (default beam_size).
    scorer: FloatScorer() or Uint8Scorer(...).
    temperature: logits are divided by it before the log-softmax (1 = the model's scores).
    eos_id, bos_id: the end token, and the token fed at position 0.

  Returns:
    Hypotheses with n = num_return, best first.
  """
  num_return = beam_size if num_return is None else num_return
  if not 1 <= num_return <= beam_size:
    raise ValueError(f"num_return must be in [1, beam_size={beam_size}], got {num_return}.")
  if temperature <= 0:
    raise ValueError(f"Beam search needs temperature > 0, got {temperature}.")
  result = _search(step_fn, cache, None, batch_size=batch_size, beams=beam_size,
                   max_length=max_length, alpha=alpha, temperature=temperature,
                   ancestral=False, scorer=scorer, eos_id=eos_id, bos_id=bos_id)
  return jax.tree.map(lambda x: x[:, :num_return], result)


def sample(step_fn: StepFn, cache: Any, *, batch_size: int, max_length: int,
           rng: jax.Array | None = None, temperature: float = 0.0,
           scorer: FloatScorer | Uint8Scorer = FloatScorer(), eos_id: int = splitter.EOS_ID,
           bos_id: int = splitter.PAD_ID) -> tuple[jax.Array, jax.Array]:
  """Greedy decoding (temperature 0) or sampling from softmax(logits / temperature).

  Args:
    step_fn, cache, batch_size, max_length, scorer, eos_id, bos_id: as in `beam_search`
      with one beam (cache leaves [batch_size, ...]).
    rng: the sampling key; required when temperature > 0.
    temperature: 0 = argmax at every step; otherwise sampling.

  Returns:
    sequences [batch, max_length] int32 (EOS included, PAD after it) and their log-probs
    [batch] under the scorer (of the tempered distribution when sampling).
  """
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}.")
  if temperature > 0 and rng is None:
    raise ValueError("Sampling (temperature > 0) needs an rng.")
  result = _search(step_fn, cache, rng, batch_size=batch_size, beams=1,
                   max_length=max_length, alpha=0.0, temperature=temperature,
                   ancestral=True, scorer=scorer, eos_id=eos_id, bos_id=bos_id)
  return result.sequences[:, 0], result.log_probs[:, 0]
