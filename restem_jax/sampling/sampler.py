"""Sampling: each prompt is prefilled once, then its N samples decode together in a jitted loop.

The Generate step of ReST^EM draws N samples for every training problem. `Sampler.generate` does
it in batches of P prompts x n samples (B = P * n rows):

  prefill   the P prompts (right-padded to a length bucket) in one forward pass; each prompt's
            keys and values are kept once and read by all n of its rows (decode_step.py), so a
            few-shot prompt is neither computed nor read N times;
  decode    one token per row per step inside `lax.while_loop`, which exits as soon as every row
            has finished (EOS, a stop string, or `max_new_tokens`). The cache is a loop-carried
            buffer that each step writes in place with one scatter.

Determinism: row r of a batch samples its t-th token with the key
  fold_in(fold_in(fold_in(fold_in(key(seed), iteration), hash(problem id)), sample index), t),
and every op in the loop is row-wise, so a sample depends only on (params, prompt, seed,
iteration, problem id, sample index): not on the batch it landed in, its neighbours' prompt
lengths, or the number of devices. (With the model axis sharded, reductions may be split across
devices, which can change the last bits of the logits.)

Stop strings are matched on device, exactly, by a byte-level automaton (`stop_strings.py`): a
row stops at the token that completes a stop string, however the tokenizer split it, and no
compute is spent after it; the host then cuts the text before the stop string. With
`calculator_on`, the same step also runs the calculator (`calculator.py`): after `A op B =` a
row writes the exact value's digits, and the token after them is drawn (and its log-probability
taken) with the digits masked out.

What a sample holds: `tokens` are the generated ids up to and including the token that ended the
sample (the EOS, or the token that completed a stop string); `logprob` is the sum of the model's
log-probabilities of those tokens under the unmodified softmax (temperature 1, no top-k/top-p
truncation: the likelihood the trainer would assign); `text` is the decoded tokens without EOS and
cut before the first stop string; `finish_reason` is "eos", "stop" or "length".
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from restem_jax import model as model_lib
from restem_jax.model import decode_step
from restem_jax.model import partitioning
from restem_jax.sampling import calculator
from restem_jax.sampling.stop_strings import StopTable, cut_at_stop, piece_bytes
from restem_jax.sampling.strategies import (FINISH_REASONS, NOISE_LIMIT, Strategy, choose_token,
                                            gumbel)

Array = jax.Array

# ---------------------------------------------------------------------------------------------
# The jitted prefill + decode loop.


@flax.struct.dataclass
class _LoopState:
  step: Array  # scalar: index (0-based) of the next token to emit
  token_B: Array  # last emitted token: the next step's input
  cache: decode_step.Cache
  tokens_BT: Array
  logprobs_BT: Array
  num_tokens_B: Array
  done_B: Array
  reason_B: Array
  stop_state_BS: Array


def row_keys(seed: Array, iteration: Array, problem_hash_B: Array, sample_index_B: Array):
  base = jax.random.fold_in(jax.random.key(seed), iteration)
  return jax.vmap(lambda h, i: jax.random.fold_in(jax.random.fold_in(base, h), i))(
      problem_hash_B, sample_index_B)


def prefill(cfg: model_lib.ModelConfig, params, layers: list, prompts_PL: Array,
             lengths_P: Array, prefix_C: Array):
  """Runs the prompts but their last tokens; returns the keys/values for the decode loop.

  Each prompt's last token is the decode loop's first input, so the prefill computes no logits.
  With a shared prefix (C > 0 tokens that every prompt of the batch starts with, e.g. the
  few-shot examples), prompts_PL holds only what follows it: the prefix is computed once for
  the batch and the rest of each prompt attends to it through the model's cache.

  Returns:
    ({"k", "v"}: [layers, P, C + L, K, H] (slots from C + lengths_P - 1 on are not read),
    tokens in the cache C + lengths_P - 1, each prompt's last token [P]).
  """
  C = prefix_C.shape[0]
  last_P = jnp.take_along_axis(prompts_PL, (lengths_P - 1)[:, None], axis=1)[:, 0]
  last_layer = layers[-1]
  if not C:
    return (model_lib.prompt_kv(cfg, params, prompts_PL, last_layer=last_layer), lengths_P - 1,
            last_P)
  P, L = prompts_PL.shape
  prefix_kv = model_lib.prompt_kv(cfg, params, prefix_C[None], last_layer=last_layer)
  cache = {name: jnp.repeat(x, P, axis=1) for name, x in prefix_kv.items()}
  positions_PL = jnp.broadcast_to(C + jnp.arange(L, dtype=jnp.int32), (P, L))
  rest_kv = model_lib.prompt_kv(cfg, params, prompts_PL, positions_PL, cache,
                                last_layer=last_layer)
  kv = {name: jnp.concatenate([cache[name], rest_kv[name]], axis=2) for name in cache}
  return kv, C + lengths_P - 1, last_P


def _generate(params, prefix_C, prompts_PL, lengths_P, live_B, problem_hash_B, sample_index_B,
              seed, iteration, stop_next_SQV, stop_len_S, calc_V, strategy: Strategy,
              samples_per_prompt: int, max_new_tokens: int, share_prompt: bool, *,
              cfg: model_lib.ModelConfig, eos_id: int | None, pad_id: int):
  """Samples `samples_per_prompt` continuations of each of P prompts (rows p*n .. p*n+n-1).

  Each prompt is prefix_C (C >= 0 tokens, the same for all) followed by its row of prompts_PL.

  Returns:
    (tokens [B, T] (pad after the end), their log-probs [B, T] (0 after the end), number of
    tokens [B], finish reason codes [B]).
  """
  n, T = samples_per_prompt, max_new_tokens
  layers = decode_step.split_layers(cfg, params)
  prompt_kv, cached_P, last_token_P = prefill(cfg, params, layers, prompts_PL, lengths_P,
                                               prefix_C)

  def rows(x, axis):  # prompt p's values for its n sample rows
    return jnp.repeat(x, n, axis=axis)

  # A shared prompt's keys/values stay one copy for its n rows (decode_step.py); each row has
  # slots of its own for its inputs (the prompt's last token, then its own tokens), written in
  # place.
  B = prompts_PL.shape[0] * n
  cache = decode_step.init_cache(cfg, prompt_kv, cached_P, n, T, share_prompt)
  cached_B = rows(cached_P, 0)
  keys_B = row_keys(seed, iteration, problem_hash_B, sample_index_B)
  num_stops = stop_len_S.shape[0] + calculator.columns(calc_V)  # automaton state columns
  # Step t of row b draws with fold_in(keys_B[b], t). The hash runs as a rolled loop on CPU,
  # a dozen small ops a call, so the keys (and, when they fit in NOISE_LIMIT, the Gumbel
  # variates themselves) are drawn for all steps here, in one vectorised call each.
  step_keys_TB = jax.vmap(lambda t: jax.vmap(jax.random.fold_in, (0, None))(keys_B, t))(
      jnp.arange(T, dtype=jnp.uint32))
  draws = strategy.draws(cfg.vocab_size)
  gumbel_TBX = None
  if T * B * draws <= NOISE_LIMIT:
    gumbel_TBX = nn.with_logical_constraint(jax.vmap(gumbel, (0, None))(step_keys_TB, draws),
                                            (None, "activation_batch", None))

  def emit(state: _LoopState, logits_BV: Array) -> _LoopState:
    t = state.step
    logits_BV = nn.with_logical_constraint(logits_BV, ("activation_batch", "activation_vocab"))
    gumbel_BX = (gumbel(step_keys_TB[t], draws) if gumbel_TBX is None else gumbel_TBX[t])
    live_B = ~state.done_B
    token_B, logprob_B, stop_state_BS, ended_B, reason_B = choose_token(
        strategy, logits_BV, gumbel_BX, live_B, state.reason_B, state.stop_state_BS, eos_id,
        stop_next_SQV, stop_len_S, calc_V)
    return state.replace(
        step=t + 1,
        token_B=token_B,
        tokens_BT=jax.lax.dynamic_update_slice_in_dim(
            state.tokens_BT, jnp.where(live_B, token_B, pad_id)[:, None], t, axis=1),
        logprobs_BT=jax.lax.dynamic_update_slice_in_dim(
            state.logprobs_BT, jnp.where(live_B, logprob_B, 0.0)[:, None], t, axis=1),
        num_tokens_B=state.num_tokens_B + live_B.astype(jnp.int32),
        done_B=state.done_B | ended_B,
        reason_B=reason_B.astype(jnp.int32),
        stop_state_BS=stop_state_BS)

  def step(state: _LoopState) -> _LoopState:
    # Step t's input is the prompt's last token (t = 0), then generated token t - 1: it sits
    # right after the cached part of the prompt and the t inputs before it.
    logits_BV, cache = decode_step.decode_step(cfg, params, layers, state.token_B,
                                               cached_B + state.step, state.step, state.cache)
    return emit(state.replace(cache=cache), logits_BV)

  def running(state: _LoopState) -> Array:
    return (state.step < T) & ~jnp.all(state.done_B)

  state = _LoopState(
      step=jnp.zeros((), jnp.int32),
      token_B=rows(last_token_P, 0),
      cache=cache,
      tokens_BT=jnp.full((B, T), pad_id, jnp.int32),
      logprobs_BT=jnp.zeros((B, T), jnp.float32),
      num_tokens_B=jnp.zeros((B,), jnp.int32),
      done_B=~live_B,  # padding rows count as finished, so they never hold up the early exit
      reason_B=jnp.zeros((B,), jnp.int32),
      stop_state_BS=jnp.zeros((B, num_stops), jnp.int32))
  state = jax.lax.while_loop(running, step, state)
  return state.tokens_BT, state.logprobs_BT, state.num_tokens_B, state.reason_B


# ---------------------------------------------------------------------------------------------
# Host side: batching, keys, placement, results.


@dataclasses.dataclass
class Sample:
  """One sampled continuation (see the module docstring for what each field holds)."""

  tokens: list[int]
  logprob: float
  finish_reason: str
  text: str | None = None


def problem_hash(problem_id: Any) -> int:
  """A stable 32-bit hash of a problem id (Python's hash() changes between processes)."""
  return int.from_bytes(hashlib.sha256(str(problem_id).encode("utf-8")).digest()[:4], "little")


def _bucket(length: int, cap: int) -> int:
  """Pads prompt lengths to a few buckets, eight per octave (.., 256, 288, 320, .., 480, 512, ..).

  Each bucket compiles once; every padded slot is attention work in every decode step, so the
  buckets are fine (at most 1/8 of the length is padding).
  """
  step = max(16, 1 << max(0, (length - 1).bit_length() - 4))
  return min(-(-length // step) * step, cap)


def _largest_divisor_at_most(n: int, limit: int) -> int:
  return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


class Sampler:
  """Samples continuations of token prompts from a decoder's parameters on a device mesh.

  One Sampler compiles one program per (prompt bucket, strategy, sample counts) and reuses it.
  """

  def __init__(self, params, cfg: model_lib.ModelConfig, *,
               mesh: jax.sharding.Mesh | None = None,
               rules: partitioning.Rules = partitioning.DEFAULT_RULES, vocab=None,
               eos_id: int | None = 1, pad_id: int = 0, batching: str = "continuous",
               calculator_on: bool = False):
    """Places `params` on `mesh` as `rules` say.

    Args:
      params: the decoder's "params" collection.
      cfg: its architecture.
      mesh: defaults to all of this process's devices, data parallel. On several hosts, either
        give each host a mesh of its own devices and its own prompts (sampling then needs no
        communication between hosts), or one mesh spanning the hosts (e.g. when the model
        axis does) and the same prompts on every host.
      rules: logical-axis rules.
      vocab: a seqio vocabulary, needed for `text` and stop strings.
      eos_id: ends a sample (None: never).
      pad_id: written after a sample's end and into prompt padding.
      batching: "continuous" (`generate` runs `rollout.RolloutEngine`: a finished row takes the
        next sample at once) or "static" (batches of P prompts x n samples run to their longest
        row). The samples are the same token for token. A mesh spanning processes samples
        statically (the engine is tested on one process's devices only).
      calculator_on: the number a sample writes right after `A op B =` is the exact value
        (`calculator.py`; needs a vocab that writes each digit as a piece of its own).
    """
    self.cfg = cfg
    self.mesh = mesh or partitioning.make_mesh((-1, 1, 1), jax.local_devices())
    self.rules = tuple(rules)
    self.vocab = vocab
    self.eos_id = eos_id
    self.pad_id = pad_id
    if batching not in ("continuous", "static"):
      raise ValueError(f"batching must be 'continuous' or 'static', got {batching!r}")
    self.batching = batching
    self._engine = None
    abstract, shardings = partitioning.abstract_and_shardings(
        lambda key: model_lib.Decoder(cfg).init(key, jnp.zeros((1, 1), jnp.int32)),
        self.mesh, self.rules, jax.random.key(0))
    self._param_shapes = jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)),
                                      nn.unbox(abstract)["params"])
    self._param_shardings = shardings["params"]
    self.set_params(params)
    self.row_shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    self._stop_tables: dict[tuple[str, ...], tuple[Array, Array, Array]] = {}
    if calculator_on and vocab is None:
      raise ValueError("the calculator needs a vocabulary: pass vocab= to the Sampler")
    self.calculator_on = calculator_on
    self._calc_table = (calculator.table(vocab, cfg.vocab_size) if calculator_on
                        else calculator.empty())
    # Rows over (data, fsdp); prompts (P of them, maybe fewer than the devices) replicated.
    rows = NamedSharding(self.mesh, PartitionSpec(("data", "fsdp")))
    rows2 = NamedSharding(self.mesh, PartitionSpec(("data", "fsdp"), None))
    self._rows = rows
    self._replicated = partitioning.replicated(self.mesh)
    # One jitted function per Sampler: the rules are read at trace time, and a jit cache shared
    # between samplers with different rules would reuse the wrong trace.
    self._generate = jax.jit(
        functools.partial(_generate, cfg=cfg, eos_id=eos_id, pad_id=pad_id),
        static_argnums=(12, 13, 14, 15),  # strategy, n, max_new_tokens, share_prompt
        in_shardings=(self._param_shardings, self._replicated, self._replicated,
                      self._replicated, rows, rows, rows, self._replicated, self._replicated,
                      self._replicated, self._replicated, self._replicated),
        out_shardings=(rows2, rows2, rows, rows))

  def set_params(self, params) -> None:
    """Swaps in parameters of the same shapes (e.g. from the trainer); no recompilation."""
    # Boxed (LogicallyPartitioned) leaves, as `Decoder.init` returns them, are unboxed once here:
    # applying the model to boxed parameters inside the loop makes every step slower.
    params = nn.unbox(params)
    got = jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)), params)
    if got != self._param_shapes:
      raise ValueError(f"the parameters' shapes do not match the model config {self.cfg}")
    self.params = jax.device_put(params, self._param_shardings)

  def _stop_table(self, stop_strings: Sequence[str]) -> tuple[Array, Array, Array]:
    """The stop strings' transition table and lengths, and the calculator's table (empty when
    it is off), on the devices (built once each)."""
    key = tuple(stop_strings)
    if key not in self._stop_tables:
      if not key:
        table = StopTable.empty(self.cfg.vocab_size)
      elif self.vocab is None:
        raise ValueError("stop strings need a vocabulary: pass vocab= to the Sampler")
      else:
        table = StopTable.build(key, piece_bytes(self.vocab))
      self._stop_tables[key] = (jax.device_put(table.next_state_SQV, self._replicated),
                                jax.device_put(table.lengths_S, self._replicated),
                                jax.device_put(self._calc_table, self._replicated))
    return self._stop_tables[key]

  def max_prompt_len(self, max_new_tokens: int) -> int:
    return self.cfg.max_len - max_new_tokens

  def check_prompts(self, ids: Sequence[Any], prompts: Sequence[Sequence[int]],
                    max_new_tokens: int) -> None:
    """Raises ValueError naming the first problem whose prompt is empty or too long."""
    limit = self.max_prompt_len(max_new_tokens)
    if limit < 1:
      raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                       f"model's max_len={self.cfg.max_len}")
    for pid, prompt in zip(ids, prompts, strict=True):
      if len(prompt) == 0:
        raise ValueError(f"problem {pid!r}: the prompt is empty")
      if len(prompt) > limit:
        raise ValueError(
            f"problem {pid!r}: the prompt has {len(prompt)} tokens, longer than the maximum "
            f"prompt length {limit} (model max_len {self.cfg.max_len} - max_new_tokens "
            f"{max_new_tokens}); nothing is truncated silently")

  def check_request(self, ids: Sequence[Any], prompts: Sequence[Sequence[int]], *,
                    num_samples: int, batch_size: int, max_new_tokens: int, first_sample: int
                    ) -> tuple[list[Any], list[list[int]]]:
    """A `generate` call's arguments checked (ValueError names the bad one); returns the ids
    and prompts as lists. The static path and the rollout engine both run it."""
    ids, prompts = list(ids), [list(map(int, p)) for p in prompts]
    if len(set(map(str, ids))) != len(ids):
      raise ValueError("problem ids must be unique: they seed each problem's samples")
    if num_samples < 1 or batch_size < 1 or max_new_tokens < 1:
      raise ValueError(f"num_samples={num_samples}, batch_size={batch_size} and "
                       f"max_new_tokens={max_new_tokens} must all be >= 1")
    if first_sample < 0:
      raise ValueError(f"first_sample={first_sample} must be >= 0")
    self.check_prompts(ids, prompts, max_new_tokens)
    return ids, prompts

  def generate(self, ids: Sequence[Any], prompts: Sequence[Sequence[int]], *, num_samples: int,
               strategy: Strategy, max_new_tokens: int, seed: int = 0, iteration: int = 0,
               stop_strings: Sequence[str] = (), batch_size: int = 64,
               shared_prefix: Sequence[int] = (),
               on_batch: Callable[[int, int], None] | None = None,
               first_sample: int = 0) -> list[list[Sample]]:
    """Samples `num_samples` continuations of every prompt.

    Args:
      ids: problem ids (any str()-able values; they seed the samples, so must be unique).
      prompts: token ids of each prompt (no EOS at the end).
      num_samples: N samples per problem.
      strategy: Greedy(), Temperature(t), TopK(k, t) or TopP(p, t); see `make_strategy`.
      max_new_tokens: the most tokens a sample may have.
      seed: run seed.
      iteration: ReST^EM iteration (so each iteration draws fresh samples).
      stop_strings: a sample ends at the first of these in its text (needs a vocab).
      batch_size: rows decoded together (P prompts x n samples, n = the largest divisor of N
        that fits).
      shared_prefix: tokens that many prompts start with (the few-shot examples): a batch of
        such prompts computes them once instead of once per prompt. Prompts that do not start
        with them are unaffected. A run setting: it changes the arithmetic (not the meaning),
        so a sample's last bits depend on it, but not on the batch layout.
      on_batch: called after each batch with (problems finished, tokens generated in it).
      first_sample: the index of the first sample: the call draws sample indices
        [first_sample, first_sample + num_samples) of every problem, the same samples a call
        from index 0 draws at those indices (a sample depends on its index, not on the call).

    Returns:
      For each prompt in order, its N samples in sample-index order.
    """
    local = all(d.process_index == jax.process_index() for d in self.mesh.devices.flat)
    if self.batching == "continuous" and local:
      from restem_jax.sampling import rollout  # pylint: disable=g-import-not-at-top  (it imports this)
      if self._engine is None:
        self._engine = rollout.RolloutEngine(self)
      return self._engine.generate(
          ids, prompts, num_samples=num_samples, strategy=strategy,
          max_new_tokens=max_new_tokens, seed=seed, iteration=iteration,
          stop_strings=stop_strings, batch_size=batch_size, shared_prefix=shared_prefix,
          on_batch=on_batch, first_sample=first_sample)
    ids, prompts = self.check_request(ids, prompts, num_samples=num_samples,
                                      batch_size=batch_size, max_new_tokens=max_new_tokens,
                                      first_sample=first_sample)
    stop = self._stop_table(stop_strings)
    n = _largest_divisor_at_most(num_samples, batch_size)
    # Rows are split over the (data, fsdp) devices, so B = num_prompts * n must be a multiple
    # of their number; padding prompts fill the gap.
    num_prompts = max(1, batch_size // n)
    units_count = len(prompts) * (num_samples // n)
    if units_count < num_prompts:  # a small job gets a smaller batch (a power of two: few shapes)
      num_prompts = 1 << (units_count - 1).bit_length()
    num_prompts = math.lcm(num_prompts, self.row_shards // math.gcd(n, self.row_shards))
    prefix = [int(t) for t in shared_prefix]
    has_prefix = [bool(prefix) and len(p) > len(prefix) and p[:len(prefix)] == prefix
                  for p in prompts]
    # A unit is n samples of one problem. Units of similar length share a batch (less padding),
    # and units with the shared prefix only batch with each other; the layout does not change
    # any sample.
    units = [(i, start) for i in range(len(prompts))
             for start in range(first_sample, first_sample + num_samples, n)]
    units.sort(key=lambda u: (has_prefix[u[0]], len(prompts[u[0]])))
    batches = []
    for group in (False, True):
      members = [u for u in units if has_prefix[u[0]] == group]
      batches += [(members[k:k + num_prompts], prefix if group else [])
                  for k in range(0, len(members), num_prompts)]
    results: list[list[Sample | None]] = [[None] * num_samples for _ in prompts]
    units_left = [num_samples // n] * len(prompts)
    pending = None
    for batch, batch_prefix in batches:
      outputs = self._dispatch(batch, ids, prompts, batch_prefix, num_prompts, n, strategy,
                               max_new_tokens, seed, iteration, stop,
                               share_prompt=num_samples > 1)
      # Dispatch batch k before reading batch k-1, so the host's decoding of results overlaps
      # with the device's work.
      if pending is not None:
        self._collect(*pending, results, units_left, stop_strings, on_batch)
      pending = (batch, n, first_sample, outputs)
    if pending is not None:
      self._collect(*pending, results, units_left, stop_strings, on_batch)
    return results

  def _dispatch(self, batch, ids, prompts, prefix, num_prompts, n, strategy, max_new_tokens,
                seed, iteration, stop, share_prompt):
    C = len(prefix)
    prompts = {i: prompts[i][C:] for i, _ in batch}  # what follows the shared prefix
    L = _bucket(max(len(prompts[i]) for i, _ in batch), self.max_prompt_len(max_new_tokens) - C)
    B = num_prompts * n
    prompts_PL = np.full((num_prompts, L), self.pad_id, np.int32)
    lengths_P = np.ones((num_prompts,), np.int32)  # padding prompts: 1 pad token, rows finished
    live_B = np.zeros((B,), bool)
    hash_B = np.zeros((B,), np.uint32)
    sample_B = np.zeros((B,), np.int32)
    for p, (i, start) in enumerate(batch):
      prompts_PL[p, :len(prompts[i])] = prompts[i]
      lengths_P[p] = len(prompts[i])
      live_B[p * n:(p + 1) * n] = True
      hash_B[p * n:(p + 1) * n] = problem_hash(ids[i])
      sample_B[p * n:(p + 1) * n] = np.arange(start, start + n)
    # Placed here, not by jit: on a mesh spanning processes jit takes no numpy input with a
    # sharded layout (every process passes the same values).
    live_B, hash_B, sample_B = jax.device_put((live_B, hash_B, sample_B), self._rows)
    with partitioning.activate(self.mesh, self.rules):
      return self._generate(self.params, np.asarray(prefix, np.int32), prompts_PL, lengths_P,
                            live_B, hash_B, sample_B, np.uint32(seed), np.uint32(iteration),
                            *stop, strategy, n, max_new_tokens, share_prompt)

  def _collect(self, batch, n, first, outputs, results, units_left, stop_strings, on_batch):
    tokens_BT, logprobs_BT, num_B, reason_B = (partitioning.to_host(x) for x in outputs)
    finished, generated = 0, 0
    for p, (i, start) in enumerate(batch):
      for j in range(n):
        r = p * n + j
        sample = Sample(tokens=tokens_BT[r, :num_B[r]].tolist(), logprob=0.0,
                        finish_reason=FINISH_REASONS[reason_B[r]])
        generated += len(sample.tokens)
        if self.vocab is not None:
          self._finish_text(sample, stop_strings)
        # Summed on the host in float64, over exactly the tokens kept.
        sample.logprob = float(np.sum(logprobs_BT[r, :len(sample.tokens)], dtype=np.float64))
        results[i][start - first + j] = sample
      units_left[i] -= 1
      finished += units_left[i] == 0
    if on_batch is not None:
      on_batch(finished, generated)

  def _finish_text(self, sample: Sample, stop_strings: Sequence[str]) -> None:
    body = sample.tokens[:-1] if sample.finish_reason == "eos" else sample.tokens
    text, stopped = cut_at_stop(self.vocab.decode(body), stop_strings)
    if stopped and sample.finish_reason != "stop":
      # Defensive: the device matcher reads every byte the text has, so it flags each stop the
      # text holds; should decoding ever differ, cut the tokens to agree with the text.
      cut = next(t for t in range(1, len(body) + 1)
                 if cut_at_stop(self.vocab.decode(body[:t]), stop_strings)[1])
      sample.tokens = body[:cut]
      sample.finish_reason = "stop"
    sample.text = text

