"""Continuous batching: a rollout engine whose finished rows take new work at once.

`sampler_lib.Sampler.generate` batches statically: P prompts x n samples decode until the batch's
longest row ends, so with solution lengths that spread (tens to hundreds of tokens) most of the
compute goes to rows that have already finished. `RolloutEngine.generate` (same arguments, same
`Sample`s) keeps B rows in fixed slots instead:

  work queue   every (problem, sample index) of the job;
  prompt pool  (N > 1 samples a problem) `prompt_slots` prompts' keys and values, each prefilled
               once and read by all of its rows, as in `decode_step.py`: row b is member m of
               pool slot p (the `Cache` member map), at most M = min(N, B) rows a prompt at once.
               A slot is freed when its prompt's last sample ends, and refilled by the next
               problems of the queue, prefilled together in one call per (count, length) bucket;
               with N = 1 each row holds its own prompt (`decode_step`'s unshared layout);
  visits       the device runs up to `steps_per_visit` decode steps in one jitted `while_loop`,
               leaving early once `refill` more rows have finished; the host then reads the
               finished rows, frees their slots, prefills waiting prompts into free pool slots
               and admits the next samples into the free rows (the admission is applied at the
               start of the next device call, so a visit costs one prefill call per new batch of
               prompts and one decode call).

Determinism: a row keys its t-th token exactly as the static sampler does,
fold_in(fold_in(fold_in(fold_in(key(seed), iteration), hash(problem id)), sample index), t), and
every op it runs is row-wise with the same arithmetic (prefill of its prompt, shared-prefix
handling, the shared/unshared cache layout chosen from N, the strategy's Gumbel-max draw, stop
automata), so each sample is token-for-token the static sampler's for the same inputs, whatever
the engine's capacity, the order rows are refilled in, or the number of devices
(`tests/sampling/test_rollout.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from restem_jax import model as model_lib
from restem_jax.model import decode_step
from restem_jax.model import partitioning
from restem_jax.sampling import calculator
from restem_jax.sampling import sampler as sampler_lib
from restem_jax.sampling import strategies

Array = jax.Array

_ROWS = ("activation_batch",)
_OWN_K = ("cache_batch", "cache_kv_heads", "kv", "cache_length")
_OWN_V = ("cache_batch", "cache_kv_heads", "cache_length", "kv")
# Prompts prefilled in one call: 8 while at least 8 wait, else one at a time. Few shapes: each
# (count, length bucket) compiles once, and with counts of every power of two the shapes a run
# met depended on the order its rows happened to finish (compiles inside timed runs).
_PREFILL_BATCH = 8


@flax.struct.dataclass
class _State:
  """The rows on device. A row is live while not done_B; step_B counts its tokens so far."""

  cache: decode_step.Cache
  token_B: Array  # the next step's input
  step_B: Array
  cached_B: Array  # prompt tokens in the cache (position of the first input)
  hash_B: Array  # problem hash and sample index: the row's PRNG key
  sample_B: Array
  done_B: Array
  reason_B: Array
  num_tokens_B: Array
  stop_state_BS: Array
  tokens_BT: Array
  logprobs_BT: Array


def _bucket(length: int, cap: int) -> int:
  """Prompt lengths padded to two buckets per octave (16, 24, 32, 48, 64, 96, ..): few compiles."""
  if length <= 16:
    return min(16, cap)
  high = 1 << (length - 1).bit_length()
  return min(high * 3 // 4 if length <= high * 3 // 4 else high, cap)


def _init_state(B: int, T: int, own_len: int, pool: int, pool_len: int, num_stops: int, *,
                cfg: model_lib.ModelConfig, shared: bool, pad_id: int) -> _State:
  dtype = jnp.dtype(cfg.dtype)
  K, H, layers = cfg.num_kv_heads, cfg.head_dim, range(cfg.num_layers)
  own_k = tuple(nn.with_logical_constraint(jnp.zeros((B, K, H, own_len), dtype), _OWN_K)
                for _ in layers)
  own_v = tuple(nn.with_logical_constraint(jnp.zeros((B, K, own_len, H), dtype), _OWN_V)
                for _ in layers)
  if shared:
    cache = decode_step.Cache(
        shared_k=tuple(jnp.zeros((pool, K, H, pool_len), dtype) for _ in layers),
        shared_v=tuple(jnp.zeros((pool, K, pool_len, H), dtype) for _ in layers),
        shared_bias_PS=jnp.full((pool, pool_len), model_lib.NEG_INF, jnp.float32),
        own_k=own_k, own_v=own_v, own_prompt_len_B=jnp.zeros((B,), jnp.int32), offset=0)
  else:
    cache = decode_step.Cache(
        shared_k=(), shared_v=(), shared_bias_PS=jnp.zeros((1, 0), jnp.float32),
        own_k=own_k, own_v=own_v, own_prompt_len_B=jnp.zeros((B,), jnp.int32),
        offset=own_len - T)

  def rows(x):
    return nn.with_logical_constraint(x, _ROWS + (None,) * (x.ndim - 1))
  return _State(
      cache=cache, token_B=rows(jnp.zeros((B,), jnp.int32)),
      step_B=rows(jnp.zeros((B,), jnp.int32)),
      cached_B=rows(jnp.zeros((B,), jnp.int32)), hash_B=rows(jnp.zeros((B,), jnp.uint32)),
      sample_B=rows(jnp.zeros((B,), jnp.int32)), done_B=rows(jnp.ones((B,), bool)),
      reason_B=rows(jnp.zeros((B,), jnp.int32)), num_tokens_B=rows(jnp.zeros((B,), jnp.int32)),
      stop_state_BS=rows(jnp.zeros((B, num_stops), jnp.int32)),
      tokens_BT=rows(jnp.full((B, T), pad_id, jnp.int32)),
      logprobs_BT=rows(jnp.zeros((B, T), jnp.float32)))


def _prefill_kv(cfg, params, layers, prefix_C, prompts_PL, lengths_P):
  """The sampler's own prefill; keys [layers, P, K, H, L] and values [layers, P, K, L, H]."""
  kv, cached_P, _ = sampler_lib.prefill(cfg, params, layers, prompts_PL, lengths_P, prefix_C)
  dtype = jnp.dtype(cfg.dtype)
  return (jnp.transpose(kv["k"], (0, 1, 3, 4, 2)).astype(dtype),
          jnp.swapaxes(kv["v"], 2, 3).astype(dtype), cached_P)


def _fill_pool(params, layers, cache: decode_step.Cache, prefix_C, prompts_PL, lengths_P,
               slots_P, *, cfg: model_lib.ModelConfig) -> decode_step.Cache:
  """Prefills P prompts into pool slots slots_P (their keys/values and slot masks)."""
  k, v, cached_P = _prefill_kv(cfg, params, layers, prefix_C, prompts_PL, lengths_P)
  L = k.shape[-1]
  pool_len = cache.shared_bias_PS.shape[1]
  bias_PS = jnp.where(jnp.arange(pool_len)[None, :] < cached_P[:, None], 0.0,
                      model_lib.NEG_INF).astype(jnp.float32)
  return cache.replace(
      shared_k=tuple(c.at[slots_P, :, :, :L].set(k[i]) for i, c in enumerate(cache.shared_k)),
      shared_v=tuple(c.at[slots_P, :, :L, :].set(v[i]) for i, c in enumerate(cache.shared_v)),
      shared_bias_PS=cache.shared_bias_PS.at[slots_P].set(bias_PS))


def _fill_rows(params, layers, cache: decode_step.Cache, prefix_C, prompts_PL, lengths_P,
               rows_P, *, cfg: model_lib.ModelConfig) -> decode_step.Cache:
  """Prefills P prompts into the own slots [0, L) of rows rows_P (one sample a prompt)."""
  k, v, cached_P = _prefill_kv(cfg, params, layers, prefix_C, prompts_PL, lengths_P)
  L = k.shape[-1]
  return cache.replace(
      own_k=tuple(c.at[rows_P, :, :, :L].set(k[i]) for i, c in enumerate(cache.own_k)),
      own_v=tuple(c.at[rows_P, :, :L, :].set(v[i]) for i, c in enumerate(cache.own_v)),
      own_prompt_len_B=cache.own_prompt_len_B.at[rows_P].set(cached_P))


def _run(params, layers, state: _State, members_PM, row_prompt_B, row_member_B, admit_B,
         new_token_B, new_cached_B, new_hash_B, new_sample_B, seed, iteration, stop_next_SQV,
         stop_len_S, calc_V, target, strategy: strategies.Strategy, steps: int, *,
         cfg: model_lib.ModelConfig, eos_id: int | None, pad_id: int):
  """Admits new rows, then decodes until `steps` steps or `target` rows are done.

  Returns:
    (the state, the number of steps run).
  """
  B, T = state.tokens_BT.shape
  state = state.replace(
      token_B=jnp.where(admit_B, new_token_B, state.token_B),
      step_B=jnp.where(admit_B, 0, state.step_B),
      cached_B=jnp.where(admit_B, new_cached_B, state.cached_B),
      hash_B=jnp.where(admit_B, new_hash_B, state.hash_B),
      sample_B=jnp.where(admit_B, new_sample_B, state.sample_B),
      done_B=state.done_B & ~admit_B,
      reason_B=jnp.where(admit_B, 0, state.reason_B),
      num_tokens_B=jnp.where(admit_B, 0, state.num_tokens_B),
      stop_state_BS=jnp.where(admit_B[:, None], 0, state.stop_state_BS))
  cache = state.cache
  if cache.shared_k:
    cache = cache.replace(members_PM=members_PM, row_prompt_B=row_prompt_B,
                          row_member_B=row_member_B)
  keys_B = sampler_lib.row_keys(seed, iteration, state.hash_B, state.sample_B)
  draws = strategy.draws(cfg.vocab_size)

  def gumbel(t_B):  # as the static sampler: row b's step t draws with fold_in(keys_B[b], t)
    keys = jax.vmap(jax.random.fold_in)(keys_B, t_B.astype(jnp.uint32))
    return strategies.gumbel(keys, draws)

  # A live row's t-th step of this call is its step step_B + t: draw them all at once if small.
  gumbel_SBX = None
  if steps * B * draws <= strategies.NOISE_LIMIT:
    gumbel_SBX = jax.vmap(lambda s: gumbel(state.step_B + s))(jnp.arange(steps))

  def body(carry):
    i, st = carry
    t_B = jnp.minimum(st.step_B, T - 1)  # finished rows idle at their last slot
    live_B = ~st.done_B
    logits_BV, new_cache = decode_step.decode_step(cfg, params, layers, st.token_B,
                                                   st.cached_B + t_B, t_B, st.cache)
    logits_BV = nn.with_logical_constraint(logits_BV, ("activation_batch", "activation_vocab"))
    token_B, logprob_B, stop_state_BS, ended_B, reason_B = strategies.choose_token(
        strategy, logits_BV, gumbel(t_B) if gumbel_SBX is None else gumbel_SBX[i], live_B,
        st.reason_B, st.stop_state_BS, eos_id, stop_next_SQV, stop_len_S, calc_V)
    col_B = jnp.where(live_B, t_B, T)  # finished rows write nothing (T is dropped)
    rows_B = jnp.arange(B)
    return i + 1, st.replace(
        cache=new_cache,
        token_B=token_B,
        step_B=st.step_B + live_B.astype(jnp.int32),
        done_B=st.done_B | (live_B & (ended_B | (t_B + 1 >= T))),
        reason_B=reason_B.astype(jnp.int32),
        num_tokens_B=st.num_tokens_B + live_B.astype(jnp.int32),
        stop_state_BS=jnp.where(live_B[:, None], stop_state_BS, st.stop_state_BS),
        tokens_BT=st.tokens_BT.at[rows_B, col_B].set(token_B, mode="drop"),
        logprobs_BT=st.logprobs_BT.at[rows_B, col_B].set(logprob_B, mode="drop"))

  def running(carry):
    i, st = carry
    return (i < steps) & (jnp.sum(st.done_B.astype(jnp.int32)) < target)

  count, state = jax.lax.while_loop(running, body, (jnp.zeros((), jnp.int32),
                                                    state.replace(cache=cache)))
  return state.replace(cache=state.cache.replace(
      members_PM=None, row_prompt_B=None, row_member_B=None)), count


@dataclasses.dataclass
class RolloutStats:
  """What the last `generate` call computed: row_steps = decode steps x rows run."""

  row_steps: int = 0
  tokens: int = 0
  visits: int = 0
  prefill_calls: int = 0

  @property
  def useful_fraction(self) -> float:
    return self.tokens / self.row_steps if self.row_steps else 0.0


class RolloutEngine:
  """Continuous batching over a `sampler_lib.Sampler`'s parameters, mesh, vocabulary and checks.

  Its samples equal `sampler.generate`'s token for token (see the module docstring).
  """

  def __init__(self, sampler: sampler_lib.Sampler, *, capacity: int = 64,
               steps_per_visit: int = 16, refill: int = 1, prompt_slots: int | None = None):
    """
    Args:
      sampler: gives the parameters (read at each call: `set_params` is followed), the mesh and
        rules, the vocabulary and the EOS/pad ids.
      capacity: rows decoded together (rounded up to a multiple of the row-sharding devices;
        a job with fewer samples gets fewer rows).
      steps_per_visit: the most decode steps a device call runs before the host refills rows.
      refill: a device call returns early once this many rows have finished (and work waits).
      prompt_slots: prompts held at once when prompts are shared (default: enough for every
        row plus half as many again, so that rows need not wait for a slot to free up).
    """
    if capacity < 1 or steps_per_visit < 1 or refill < 1:
      raise ValueError(f"capacity={capacity}, steps_per_visit={steps_per_visit} and "
                       f"refill={refill} must all be >= 1")
    self.sampler = sampler
    self.capacity = capacity
    self.steps_per_visit = steps_per_visit
    self.refill = refill
    self.prompt_slots = prompt_slots
    self.stats = RolloutStats()
    cfg = sampler.cfg
    self._layers_of: tuple[Any, Any] | None = None  # (params, their split layers)
    self._init = jax.jit(functools.partial(_init_state, cfg=cfg, pad_id=sampler.pad_id),
                         static_argnums=(0, 1, 2, 3, 4, 5), static_argnames=("shared",))
    self._fill_pool = jax.jit(functools.partial(_fill_pool, cfg=cfg), donate_argnums=(2,))
    self._fill_rows = jax.jit(functools.partial(_fill_rows, cfg=cfg), donate_argnums=(2,))
    self._run = jax.jit(functools.partial(_run, cfg=cfg, eos_id=sampler.eos_id,
                                          pad_id=sampler.pad_id),
                        static_argnums=(17, 18), donate_argnums=(2,))
    self._split = jax.jit(functools.partial(decode_step.split_layers, cfg))

  def _layers(self):
    params = self.sampler.params
    if self._layers_of is None or self._layers_of[0] is not params:
      with partitioning.activate(self.sampler.mesh, self.sampler.rules):
        self._layers_of = (params, self._split(params))
    return self._layers_of[1]

  def generate(self, ids: Sequence[Any], prompts: Sequence[Sequence[int]], *, num_samples: int,
               strategy: strategies.Strategy, max_new_tokens: int, seed: int = 0,
               iteration: int = 0, stop_strings: Sequence[str] = (),
               batch_size: int | None = None, shared_prefix: Sequence[int] = (),
               on_batch: Callable[[int, int], None] | None = None, first_sample: int = 0
               ) -> list[list[sampler_lib.Sample]]:
    """`Sampler.generate`'s contract and samples; `batch_size`, if given, is the capacity.

    `on_batch(problems finished, tokens generated)` is called after each visit that finished
    samples. `self.stats` then holds the call's row-steps and tokens.
    """
    s = self.sampler
    capacity = self.capacity if batch_size is None else batch_size
    ids, prompts = s.check_request(ids, prompts, num_samples=num_samples, batch_size=capacity,
                                   max_new_tokens=max_new_tokens, first_sample=first_sample)
    self.stats = RolloutStats()
    if not prompts:
      return []
    job = _Job(self, ids, prompts, num_samples, strategy, max_new_tokens, seed, iteration,
               stop_strings, [int(t) for t in shared_prefix], capacity, on_batch, first_sample)
    with partitioning.activate(s.mesh, s.rules):
      return job.run()


class _Job:
  """One `generate` call: the host's view of the rows, the prompt pool and the work queue."""

  def __init__(self, engine: RolloutEngine, ids, prompts, num_samples, strategy, max_new_tokens,
               seed, iteration, stop_strings, prefix, capacity, on_batch, first=0):
    s = engine.sampler
    self.engine, self.s, self.ids, self.prompts = engine, s, ids, prompts
    self.N, self.strategy, self.T = num_samples, strategy, max_new_tokens
    self.first = first  # sample indices [first, first + N) of every problem
    self.end = first + num_samples
    self.seed, self.iteration, self.stop_strings = seed, iteration, tuple(stop_strings)
    self.on_batch = on_batch
    self.stop = s._stop_table(self.stop_strings)  # pylint: disable=protected-access
    self.shared = num_samples > 1  # as the static sampler's share_prompt
    limit = s.max_prompt_len(max_new_tokens)
    self.prefix = prefix
    C = len(prefix)
    self.has_prefix = [bool(prefix) and len(p) > C and p[:C] == prefix for p in prompts]

    def kv_len(i):
      c = C if self.has_prefix[i] else 0
      return c + _bucket(len(prompts[i]) - c, limit - c)
    self.kv_len = max(kv_len(i) for i in range(len(prompts)))
    total = len(prompts) * num_samples
    B = min(capacity, 1 << (total - 1).bit_length())  # a small job gets fewer rows
    self.B = B = -(-B // s.row_shards) * s.row_shards
    self.M = M = min(num_samples, B)
    slots = engine.prompt_slots or -(-B // M) + max(1, -(-B // M) // 2)
    self.pool = max(slots, -(-B // M) + 1) if self.shared else 0
    # Problems in the static sampler's order: prefix group last, by length (less padding).
    self.queue = sorted(range(len(prompts)), key=lambda i: (self.has_prefix[i], len(prompts[i])))
    self.queue.reverse()  # popped from the end
    self.results: list[list[sampler_lib.Sample | None]] = [[None] * num_samples for _ in prompts]
    self.left = [num_samples] * len(prompts)  # samples not finished
    # Host mirrors: which (problem, sample) each row runs; pool slots' problems and members.
    self.row_job: list[tuple[int, int] | None] = [None] * B
    self.row_prompt = np.zeros((B,), np.int32)
    self.row_member = np.zeros((B,), np.int32)
    self.members = np.full((max(self.pool, 1), M), B, np.int32)
    self.slot_problem: list[int | None] = [None] * self.pool
    self.slot_next = [0] * self.pool  # next sample index to start
    self.slot_active = [0] * self.pool

  # -- admission ---------------------------------------------------------------------------------

  def _prefill(self, items: list[tuple[int, int]], fill) -> Any:
    """Prefills problems items[k][0] into targets items[k][1], by (prefix, count, length)."""
    s, cache = self.s, self.state.cache
    layers = self.engine._layers()  # pylint: disable=protected-access
    limit = s.max_prompt_len(self.T)
    for group in (False, True):
      todo = [it for it in items if self.has_prefix[it[0]] == group]
      prefix = self.prefix if group else []
      C = len(prefix)
      while todo:
        count = _PREFILL_BATCH if len(todo) >= _PREFILL_BATCH else 1
        batch, todo = todo[:count], todo[count:]
        L = _bucket(max(len(self.prompts[i]) - C for i, _ in batch), limit - C)
        prompts_PL = np.full((count, L), s.pad_id, np.int32)
        lengths_P = np.zeros((count,), np.int32)
        for p, (i, _) in enumerate(batch):
          prompts_PL[p, :len(self.prompts[i]) - C] = self.prompts[i][C:]
          lengths_P[p] = len(self.prompts[i]) - C
        targets = np.array([t for _, t in batch], np.int32)
        cache = fill(s.params, layers, cache, np.asarray(prefix, np.int32), prompts_PL,
                     lengths_P, targets)
        self.engine.stats.prefill_calls += 1
    self.state = self.state.replace(cache=cache)

  def _admit(self, admit: np.ndarray, new: dict[str, np.ndarray]) -> None:
    """Fills free pool slots with the next problems and free rows with the next samples."""
    free_rows = [b for b in range(self.B) if self.row_job[b] is None]
    if self.shared:
      free_slots = [p for p in range(self.pool) if self.slot_problem[p] is None]
      items = []
      while free_slots and self.queue:
        p, i = free_slots.pop(0), self.queue.pop()
        self.slot_problem[p], self.slot_next[p], self.slot_active[p] = i, self.first, 0
        items.append((i, p))
      if items:
        self._prefill(items, self.engine._fill_pool)  # pylint: disable=protected-access
      # Rows go to the earliest problems first, so their slots free up soonest.
      order = sorted((p for p in range(self.pool) if self.slot_problem[p] is not None),
                     key=lambda p: self.queue_rank[self.slot_problem[p]])
      for p in order:
        while free_rows and self.slot_next[p] < self.end and self.slot_active[p] < self.M:
          b = free_rows.pop(0)
          m = int(np.flatnonzero(self.members[p] == self.B)[0])
          self.members[p, m] = b
          self.row_prompt[b], self.row_member[b] = p, m
          self._start(b, self.slot_problem[p], self.slot_next[p], admit, new)
          self.slot_next[p] += 1
          self.slot_active[p] += 1
    else:
      items = []
      while free_rows and self.queue:
        b, i = free_rows.pop(0), self.queue.pop()
        self._start(b, i, self.first, admit, new)
        items.append((i, b))
      if items:
        self._prefill(items, self.engine._fill_rows)  # pylint: disable=protected-access

  def _start(self, b: int, i: int, j: int, admit, new) -> None:
    self.row_job[b] = (i, j)
    admit[b] = True
    new["token"][b] = self.prompts[i][-1]
    new["cached"][b] = len(self.prompts[i]) - 1  # the prefill caches all but the last token
    new["hash"][b] = sampler_lib.problem_hash(self.ids[i])
    new["sample"][b] = j

  def _more_work(self) -> bool:
    return bool(self.queue) or any(
        self.slot_problem[p] is not None and self.slot_next[p] < self.end
        for p in range(self.pool))

  # -- collection ----------------------------------------------------------------------------------

  def _collect(self, done_B, num_B, reason_B, tokens_BT, logprobs_BT) -> None:
    finished, generated = 0, 0
    for b in range(self.B):
      if self.row_job[b] is None or not done_B[b]:
        continue
      i, j = self.row_job[b]
      sample = sampler_lib.Sample(tokens=tokens_BT[b, :num_B[b]].tolist(), logprob=0.0,
                               finish_reason=strategies.FINISH_REASONS[reason_B[b]])
      generated += len(sample.tokens)
      if self.s.vocab is not None:
        self.s._finish_text(sample, self.stop_strings)  # pylint: disable=protected-access
      sample.logprob = float(np.sum(logprobs_BT[b, :len(sample.tokens)], dtype=np.float64))
      self.results[i][j - self.first] = sample
      self.row_job[b] = None
      self.left[i] -= 1
      finished += self.left[i] == 0
      if self.shared:
        p = int(self.row_prompt[b])
        self.members[p, self.row_member[b]] = self.B
        self.slot_active[p] -= 1
        if self.slot_next[p] == self.end and self.slot_active[p] == 0:
          self.slot_problem[p] = None  # its storage is free for the next problem
    self.engine.stats.tokens += generated
    if self.on_batch is not None and (finished or generated):
      self.on_batch(finished, generated)

  # -- the loop ------------------------------------------------------------------------------------

  def run(self) -> list[list[sampler_lib.Sample]]:
    s, engine, B, T = self.s, self.engine, self.B, self.T
    self.queue_rank = {i: r for r, i in enumerate(reversed(self.queue))}
    own_len = T if self.shared else self.kv_len + T
    # pylint: disable=protected-access
    self.state = engine._init(B, T, own_len, max(self.pool, 1), self.kv_len,
                              int(self.stop[1].shape[0]) + calculator.columns(self.stop[2]),
                              shared=self.shared)
    rows = s._rows  # pylint: disable=protected-access
    while True:
      admit = np.zeros((B,), bool)
      new = {"token": np.zeros((B,), np.int32), "cached": np.zeros((B,), np.int32),
             "hash": np.zeros((B,), np.uint32), "sample": np.zeros((B,), np.int32)}
      self._admit(admit, new)
      active = sum(job is not None for job in self.row_job)
      if not active:
        break
      # Return once `refill` rows have finished while work waits, else when all have.
      target = min(B, B - active + engine.refill) if self._more_work() else B
      placed = jax.device_put((admit, new["token"], new["cached"], new["hash"], new["sample"],
                               self.row_prompt, self.row_member), rows)
      members = jax.device_put(self.members, s._replicated)
      self.state, count = engine._run(
          s.params, engine._layers(), self.state, members, placed[5], placed[6], *placed[:5],
          np.uint32(self.seed), np.uint32(self.iteration), *self.stop, np.int32(target),
          self.strategy, engine.steps_per_visit)
      st = self.state
      host = [partitioning.to_host(x) for x in (st.done_B, st.num_tokens_B, st.reason_B,
                                               st.tokens_BT, st.logprobs_BT, count)]
      engine.stats.visits += 1
      engine.stats.row_steps += B * int(host[5])
      self._collect(*host[:5])
    return self.results
