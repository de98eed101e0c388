"""Sampling strategies and the choice of one decoding step's token.

A strategy is a tiny frozen dataclass, hashable, so it is a static argument of the jitted decode
loops (the static sampler's in `sampler.py` and the rollout engine's in `rollout.py`): `Greedy`,
`Temperature`, `TopK` (the paper's top-k 40 at temperature 0.7), `TopP`, built from the usual knobs
by `make_strategy`. `choose_token` turns one step's logits into each row's token, its
log-probability and whether the row has finished; both loops call it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from restem_jax.sampling import calculator

Array = jax.Array

FINISH_REASONS = ("length", "eos", "stop")  # index = the code the decode loop records
_LENGTH, _EOS, _STOP = 0, 1, 2
# Gumbel variates (float32) drawn before the decode loop, at most: above it (sampling from the
# whole of a large vocabulary), each step draws its own.
NOISE_LIMIT = 1 << 24


# ---------------------------------------------------------------------------------------------
# Strategies: tiny frozen dataclasses, hashable, so they are static arguments of the jitted loop.
# Each draws a token per row from logits [B, V] float32 by the Gumbel-max trick, as
# `jax.random.categorical` does: `draws(V)` is how many Gumbel variates a row needs per step
# and `choose(logits_BV, gumbel_BX)` picks the tokens. The decode loop draws all steps' variates
# before it starts (one vectorised call instead of a rolled hash loop in every step);
# `strategy(logits_BV, keys_B)` draws them from one PRNG key per row and gives the same tokens.


def gumbel(keys_B: Array, draws: int) -> Array:
  """The noise `jax.random.categorical(key, logits)` adds to `draws` logits, for each row's key."""
  # vmap over per-row keys: row b's draws depend on its own key only, not on the batch.
  return jax.vmap(lambda key: jax.random.gumbel(key, (draws,), jnp.float32))(keys_B)


def _argmax(z_BX: Array) -> Array:
  """`jnp.argmax(z_BX, axis=-1)` as int32 (ties to the first index), for values without NaN.

  Computed as a max and then the first index that reaches it: `jnp.argmax` is a reduction over
  (value, index) pairs, which XLA's CPU backend runs as scalar code (about 4x slower here).
  """
  X = z_BX.shape[-1]
  first_B = jnp.min(jnp.where(z_BX == z_BX.max(axis=-1, keepdims=True), jnp.arange(X), X),
                    axis=-1)
  return jnp.minimum(first_B, X - 1).astype(jnp.int32)  # X - 1 only for NaN logits


def _argmax_with_noise(scaled_BX: Array, gumbel_BX: Array) -> Array:
  return _argmax(gumbel_BX + scaled_BX)


_CHUNK = 8  # logits per chunk in `top_k`'s first pass


def top_k(x_BV: Array, k: int) -> tuple[Array, Array]:
  """`jax.lax.top_k(x_BV, k)`, the same values and indices (ties too), for rows without NaN.

  XLA's CPU TopK is a partial sort per row, about 500 us for 64 rows of 1024 at k = 40 here
  (a tenth of a decode step). Most logits cannot be among the k largest, so they are set to
  -inf first, which makes the partial sort about 4 times cheaper: a threshold `lo` that at least
  k chunk maxima reach (found by bisection over the chunk maxima) is reached by at least k
  logits, so it is at most the k-th largest and every one of the k largest reaches it.
  """
  B, V = x_BV.shape
  C = V // _CHUNK
  if V % _CHUNK or C < 2 * k:  # too few chunks for the first pass to leave much out
    return jax.lax.top_k(x_BV, k)
  max_BC = x_BV.reshape(B, C, _CHUNK).max(-1)

  def bisect(_, lo_hi):
    lo_B, hi_B = lo_hi
    mid_B = 0.5 * (lo_B + hi_B)
    ok_B = (max_BC >= mid_B[:, None]).sum(-1) >= k  # keeps: >= k chunk maxima reach lo
    return jnp.where(ok_B, mid_B, lo_B), jnp.where(ok_B, hi_B, mid_B)

  lo_B, _ = jax.lax.fori_loop(0, 8, bisect, (max_BC.min(-1), max_BC.max(-1)), unroll=True)
  return jax.lax.top_k(jnp.where(x_BV >= lo_B[:, None], x_BV, -jnp.inf), k)


def _check_temperature(temperature: float) -> None:
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0 (use Greedy() for 0), got {temperature}")


class _Draws:
  """`strategy(logits_BV, keys_B)`: the tokens for one PRNG key per row."""

  def __call__(self, logits_BV: Array, keys_B: Array) -> Array:
    return self.choose(logits_BV, gumbel(keys_B, self.draws(logits_BV.shape[-1])))


@dataclasses.dataclass(frozen=True)
class Greedy(_Draws):
  """The most likely token (test-time decoding in the paper)."""

  def draws(self, vocab_size: int) -> int:
    del vocab_size
    return 0

  def choose(self, logits_BV: Array, gumbel_BX: Array) -> Array:
    del gumbel_BX
    return _argmax(logits_BV)


@dataclasses.dataclass(frozen=True)
class Temperature(_Draws):
  """Ancestral sampling from softmax(logits / temperature)."""

  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)

  def draws(self, vocab_size: int) -> int:
    return vocab_size

  def choose(self, logits_BV: Array, gumbel_BX: Array) -> Array:
    return _argmax_with_noise(logits_BV / self.temperature, gumbel_BX)


@dataclasses.dataclass(frozen=True)
class TopK(_Draws):
  """Sampling among the k most likely tokens (the paper's Generate step: k=40, T=0.7)."""

  k: int = 40
  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)
    if self.k < 1:
      raise ValueError(f"top-k needs k >= 1, got {self.k}")

  def draws(self, vocab_size: int) -> int:
    return min(self.k, vocab_size)

  def choose(self, logits_BV: Array, gumbel_BX: Array) -> Array:
    # A partial selection, far cheaper than sorting the vocabulary.
    vals_Bk, idx_Bk = top_k(logits_BV, self.draws(logits_BV.shape[-1]))
    choice_B = _argmax_with_noise(vals_Bk / self.temperature, gumbel_BX)
    return jnp.take_along_axis(idx_Bk, choice_B[:, None], axis=-1)[:, 0].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TopP(_Draws):
  """Nucleus sampling: the smallest set of tokens whose probability reaches p.

  `top_k` > 0 first keeps the k best tokens (and sorts only those); 0 sorts the whole vocabulary.
  """

  p: float = 0.95
  temperature: float = 1.0
  top_k: int = 0

  def __post_init__(self):
    _check_temperature(self.temperature)
    if not 0 < self.p <= 1:
      raise ValueError(f"top-p needs 0 < p <= 1, got {self.p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")

  def draws(self, vocab_size: int) -> int:
    return min(self.top_k, vocab_size) if self.top_k else vocab_size

  def choose(self, logits_BV: Array, gumbel_BX: Array) -> Array:
    vals_Bk, idx_Bk = top_k(logits_BV, self.draws(logits_BV.shape[-1]))  # best first
    scaled_Bk = vals_Bk / self.temperature
    probs_Bk = jax.nn.softmax(scaled_Bk, axis=-1)
    # Keep a token if the mass before it is < p: the best token is always kept.
    keep_Bk = (jnp.cumsum(probs_Bk, axis=-1) - probs_Bk) < self.p
    choice_B = _argmax_with_noise(jnp.where(keep_Bk, scaled_Bk, -jnp.inf), gumbel_BX)
    return jnp.take_along_axis(idx_Bk, choice_B[:, None], axis=-1)[:, 0].astype(jnp.int32)


Strategy = Greedy | Temperature | TopK | TopP


def make_strategy(temperature: float, top_k: int = 0, top_p: float = 1.0) -> Strategy:
  """The strategy for the usual knobs: temperature 0 is greedy; top_k 0 and top_p 1 are off.

  Args:
    temperature: 0 for greedy, else the softmax temperature.
    top_k: keep the k most likely tokens (0: all).
    top_p: nucleus mass (1: off); combines with top_k (top-k first).

  Returns:
    A strategy dataclass.
  """
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  if temperature == 0:
    return Greedy()
  if top_p < 1:
    return TopP(p=top_p, temperature=temperature, top_k=top_k)
  if top_k:
    return TopK(k=top_k, temperature=temperature)
  return Temperature(temperature)


def choose_token(strategy: Strategy, logits_BV: Array, gumbel_BX: Array, live_B: Array,
                 reason_B: Array, stop_state_BS: Array, eos_id: int | None,
                 stop_next_SQV: Array, stop_len_S: Array, calc_V: Array):
  """One decoding step's token per row, its log-probability and how rows finish.

  The static sampler's loop and the rollout engine's both call it. `stop_state_BS` holds each
  row's S stop-string automaton states, then (where `calc_V` is a `calculator.table`, not
  empty) the calculator's `calculator.COLUMNS`. Returns (token_B, logprob_B, stop_state_BS
  advanced by the token, ended_B: the token is EOS or completes a stop string, reason_B: that
  reason for the live rows it ends, unchanged otherwise).
  """
  num_stops = stop_len_S.shape[0]
  calc_BC = stop_state_BS[:, num_stops:]
  if calc_V.shape[0]:
    logits_BV = calculator.mask_logits(calc_V, calc_BC, logits_BV)
  token_B = strategy.choose(logits_BV, gumbel_BX)
  if calc_V.shape[0]:
    token_B = calculator.override(calc_V, calc_BC, token_B)
    calc_BC = calculator.advance(calc_V, calc_BC, token_B)
  logprob_B = (jnp.take_along_axis(logits_BV, token_B[:, None], axis=-1)[:, 0]
               - jax.nn.logsumexp(logits_BV, axis=-1))
  hit_eos_B = (token_B == eos_id) if eos_id is not None else jnp.zeros_like(live_B)
  hit_stop_B = jnp.zeros_like(live_B)
  stops_BS = stop_state_BS[:, :num_stops]
  if num_stops:
    stops_BS = stop_next_SQV[jnp.arange(num_stops)[None, :], stops_BS,
                             token_B[:, None]].astype(jnp.int32)
    hit_stop_B = jnp.any(stops_BS == stop_len_S[None, :], axis=-1)
  reason_B = jnp.where(live_B & hit_eos_B, _EOS, jnp.where(live_B & hit_stop_B, _STOP, reason_B))
  stop_state_BS = jnp.concatenate([stops_BS, calc_BC], axis=1) if calc_V.shape[0] else stops_BS
  return token_B, logprob_B, stop_state_BS, hit_eos_B | hit_stop_B, reason_B
