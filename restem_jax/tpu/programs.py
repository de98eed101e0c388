"""A run's programs compiled for a device set, and what each needs per device.

`compile_train` (the train and eval steps) and `compile_sampler` (the rollout engine's decode
visit and prefill for each way of sampling) jit the run's own functions on a mesh of the given
devices with abstract arguments (`jax.ShapeDtypeStruct`s with their shardings), compile them and
return one `ProgramReport` each: HBM per device from `compiled.memory_analysis()` and a roofline
time estimate from the chip's peaks. `aot.py` runs them for a TPU topology and prints the verdict.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from restem_jax import model as model_lib
from restem_jax.model import partitioning
from restem_jax import sampling
from restem_jax.sampling import calculator
from restem_jax.tpu import specs
from restem_jax.training import steps as train_steps


class AotError(Exception):
  """An expected failure of the check (unknown topology, no libtpu, a bad config): one line."""


# ---------------------------------------------------------------------------------------------
# What one compiled program needs


@dataclasses.dataclass
class ProgramReport:
  """One program's compiled figures, per device."""

  name: str
  shapes: str  # what was compiled, in words
  argument_bytes: int
  output_bytes: int
  alias_bytes: int  # outputs written into donated arguments (counted once)
  temp_bytes: int
  code_bytes: int
  flops: float  # XLA's cost analysis, per device (loop bodies counted once)
  bytes_accessed: float
  est_seconds: float = 0.0  # roofline of the model's work (see the module docstring)
  model_flops: float | None = None  # the model's FLOPs per device, for the MFU
  mfu: float | None = None
  error: str = ""  # the compiler's refusal (e.g. out of HBM); the sizes are then lower bounds
  # Buffers that stay on the chip while the program runs without being its arguments (the
  # rollout engine's rows' state beside its prefill).
  resident_bytes: int = 0
  hint: str = ""  # what to change if the program does not fit (shown only then)

  @property
  def total_bytes(self) -> int:
    return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
            + self.code_bytes + self.resident_bytes)

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["total_bytes"] = self.total_bytes
    return d


def _cost(compiled) -> tuple[float, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, list):  # older JAX: one dict per module
    cost = cost[0] if cost else {}
  cost = cost or {}
  return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes_of(x) -> int:
  """Per-device bytes of a pytree of sharded ShapeDtypeStructs (the largest shard)."""
  return sum(math.prod(a.sharding.shard_shape(a.shape)) * jnp.dtype(a.dtype).itemsize
             for a in jax.tree.leaves(x) if hasattr(a, "sharding"))


def _compile(name: str, shapes: str, lowered, args, chip: specs.Chip) -> ProgramReport:
  """Compiles `lowered`; a program the TPU compiler refuses for want of HBM is reported too.

  XLA:TPU stops with RESOURCE_EXHAUSTED when a program's buffers exceed the chip's HBM; its
  message gives the temporaries' size, which is then reported with the arguments' size (so the
  total is a lower bound) and the message.
  """
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    message = str(e)
    if "RESOURCE_EXHAUSTED" not in message:
      raise
    first = message.strip().splitlines()[0]
    temps = 0
    match = re.search(r"HLO temporaries \(([\d.]+)([KMGT])\)", message)
    if match:
      temps = int(float(match.group(1)) * _UNITS[match.group(2)])
    logging.info("%s: the compiler refused after %.0f s: %s", name,
                 time.perf_counter() - start, first)
    return ProgramReport(name=name, shapes=shapes, argument_bytes=_bytes_of(args),
                         output_bytes=0, alias_bytes=0, temp_bytes=temps, code_bytes=0,
                         flops=0.0, bytes_accessed=0.0, error=first)
  logging.info("%s: compiled in %.0f s", name, time.perf_counter() - start)
  return _report(name, shapes, compiled, chip)


def _report(name: str, shapes: str, compiled, chip: specs.Chip) -> ProgramReport:
  mem = compiled.memory_analysis()
  flops, nbytes = _cost(compiled)
  return ProgramReport(
      name=name, shapes=shapes, argument_bytes=int(mem.argument_size_in_bytes),
      output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes),
      temp_bytes=int(mem.temp_size_in_bytes),
      code_bytes=int(mem.generated_code_size_in_bytes), flops=flops, bytes_accessed=nbytes)


def _roofline(report: ProgramReport, chip: specs.Chip, flops: float, nbytes: float,
              model_flops: float) -> None:
  """Sets the estimated time (compute or HBM bound) and the MFU of a program that compiled."""
  _estimate(report, chip, max(flops / chip.peak_flops, nbytes / chip.hbm_bandwidth),
            model_flops)


def _estimate(report: ProgramReport, chip: specs.Chip, seconds: float,
              model_flops: float) -> None:
  """Sets a compiled program's estimated time and the MFU of `model_flops` (per device) in it."""
  if report.error:
    return
  report.est_seconds = seconds
  report.model_flops = model_flops
  report.mfu = model_flops / (seconds * chip.peak_flops)


def _sds(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


# ---------------------------------------------------------------------------------------------
# The programs


def model_config(config: ml_collections.ConfigDict) -> model_lib.ModelConfig:
  """The model the run trains and samples: the base checkpoint's, else `config.model`."""
  if config.base_checkpoint:
    from restem_jax.model import checkpoints
    try:
      return checkpoints.load_config(config.base_checkpoint)
    except (OSError, ValueError) as e:
      raise AotError(f"--config.base_checkpoint={config.base_checkpoint}: {e}") from e
  return model_lib.ModelConfig.from_dict(config.model.to_dict())


def train_batch(config: ml_collections.ConfigDict, trainer: ml_collections.ConfigDict,
                mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The abstract global batch of the trainer: rows over the data axes."""
  length = int(config.data.inputs_length + config.data.targets_length)
  shape = (int(trainer.batch_size), length)
  sharding = partitioning.data_sharding(mesh, 2)
  batch = {"decoder_input_tokens": jnp.int32, "decoder_target_tokens": jnp.int32,
           "decoder_loss_weights": jnp.float32}
  if config.data.pack:
    batch.update(decoder_segment_ids=jnp.int32, decoder_positions=jnp.int32)
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, dtype in batch.items()}


def compile_train(cfg: model_lib.ModelConfig, config, mesh, rules, chip, which=("train", "eval")
                  ) -> Iterator[ProgramReport]:
  """The trainer's train and eval steps, as `make_train_fns` jits them (one report each)."""
  trainer = config.finetune
  try:
    fns = train_steps.make_train_fns(cfg, trainer, mesh, rules)
  except ValueError as e:
    raise AotError(f"finetune: {e}") from e
  batch = train_batch(config, trainer, mesh)
  rows, length = next(iter(batch.values())).shape
  replicated = partitioning.replicated(mesh)
  state = _sds(fns.abstract_state, fns.state_shardings)
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
  shapes = (f"{rows} rows x {length} tokens, {trainer.num_microbatches} microbatch(es), "
            f"{trainer.optimizer}, {'remat' if cfg.remat else 'no remat'}")
  hint = "" if cfg.remat else (
      "rematerialise the blocks (the run trains with the base checkpoint's config: import it "
      "with `convert hf-to-orbax --remat`, or set \"remat\": true in its model_config.json; "
      "without a checkpoint, --config.model.remat=True)")
  # The model's work per device: training is 3 forward passes' FLOPs (+1 with remat); each
  # microbatch reads the parameters in every pass and adds to the float32 gradient sums.
  train_flops = train_steps.flops_per_token(cfg, length) * rows * length / mesh.devices.size
  param_bytes = _bytes_of(state.params)
  grad_bytes = _bytes_of(jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding), state.params))
  passes = 4 if cfg.remat else 3
  microbatches = int(trainer.num_microbatches)
  with partitioning.activate(mesh, rules):
    if "train" in which:
      lowered = fns._train_step.lower(state, batch, rng)  # pylint: disable=protected-access
      report = _compile("train", shapes, lowered, (state, batch), chip)
      report.hint = hint
      _roofline(report, chip, train_flops * passes / 3,
                microbatches * (passes * param_bytes + 2 * grad_bytes) + _bytes_of(state),
                train_flops)
      yield report
    if "eval" in which:
      lowered = fns._eval_step.lower(state.params, batch)  # pylint: disable=protected-access
      report = _compile("eval", f"{rows} rows x {length} tokens", lowered,
                        (state.params, batch), chip)
      _roofline(report, chip, train_flops / 3, param_bytes, train_flops / 3)
      yield report


class _AbstractSampler(sampling.Sampler):
  """A Sampler whose parameters are `ShapeDtypeStruct`s: only its engine's programs are used."""

  def __init__(self, *args, stop_tables, **kwargs):
    self._abstract_stops = stop_tables
    super().__init__(*args, **kwargs)

  def set_params(self, params) -> None:
    self.params = params

  def _stop_table(self, stop_strings):
    return self._abstract_stops


def stop_strings(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The stop strings the run samples with (the config's, else its prompt set's)."""
  if config.sampling.stop_strings:
    return tuple(config.sampling.stop_strings)
  from restem_jax.data import fewshot, tasks
  return tuple(fewshot.load(config.data.prompt or tasks.KINDS[config.data.kind].prompt).stop)


def _abstract(fn, *args, **kwargs):
  """The outputs of jitted `fn` as ShapeDtypeStructs with the shardings it compiles to."""
  compiled = fn.lower(*args, **kwargs).compile()
  return jax.tree.map(lambda o, s: jax.ShapeDtypeStruct(o.shape, o.dtype, sharding=s),
                      compiled.out_info, compiled.output_shardings), compiled


def compile_sampler(cfg: model_lib.ModelConfig, config, mesh, rules, chip,
                    which=("sample", "eval_sample", "greedy")) -> Iterator[ProgramReport]:
  """The rollout engine's programs (what `Sampler.generate` runs) for each way the run samples.

  The engine holds, for the whole job, the parameters, their per-layer copy in the compute
  dtype (`decode_step.split_layers`) and its rows' state (the KV cache: a pool of shared
  prompts and each row's own slots). Two programs run on that: the decode visit (up to
  `steps_per_visit` steps of every row) and the prefill of newly admitted prompts into the
  cache. Each way gives two reports: NAME (the decode visit; its arguments are all of the
  above) and NAME_prefill (the prefill, plus the rows' state that is not its argument).
  """
  import flax.linen as nn
  from restem_jax.sampling import rollout
  abstract, shardings = partitioning.abstract_and_shardings(
      lambda key: model_lib.Decoder(cfg).init(key, jnp.zeros((1, 1), jnp.int32)),
      mesh, rules, jax.random.key(0))
  params = _sds(nn.unbox(abstract)["params"], shardings["params"])
  s, r, e = config.sampling, config.restem, config.eval
  ways = {
      "sample": (r.num_samples, sampling.make_strategy(r.temperature, r.top_k, r.top_p)),
      "eval_sample": (e.num_samples, sampling.make_strategy(e.temperature, e.top_k, e.top_p)),
      "greedy": (1, sampling.Greedy()),
  }
  stops = stop_strings(config)
  max_q = max((len(x.encode("utf-8")) for x in stops), default=1)
  replicated = partitioning.replicated(mesh)
  arr = lambda shape, dtype, sharding=replicated: jax.ShapeDtypeStruct(shape, dtype,
                                                                        sharding=sharding)
  calc_on = config.sampling.get("calculator", -1) > 0
  stop_tables = (arr((len(stops), max_q, cfg.vocab_size), jnp.int16),
                 arr((len(stops),), jnp.int32),
                 arr((cfg.vocab_size + 10 if calc_on else 0,), jnp.int32))
  sampler = _AbstractSampler(params, cfg, mesh=mesh, rules=rules, stop_tables=stop_tables)
  engine = rollout.RolloutEngine(sampler)
  T = int(s.max_new_tokens)
  limit = sampler.max_prompt_len(T)
  if limit < 1:
    raise AotError(f"sampling.max_new_tokens={T} leaves no room for a prompt in the model's "
                   f"max_len={cfg.max_len}")
  prompt_len = min(int(config.data.inputs_length), limit)
  with partitioning.activate(mesh, rules):
    layers, _ = _abstract(engine._split, params)  # pylint: disable=protected-access
  param_bytes, layer_bytes = _bytes_of(params), _bytes_of(layers)
  for name in which:
    num_samples, strategy = ways[name]
    with partitioning.activate(mesh, rules):
      yield from _compile_engine(name, engine, params, layers, num_samples, strategy,
                                 int(s.batch_size), prompt_len, T, stop_tables, chip,
                                 param_bytes + layer_bytes)


def _engine_layout(engine, num_samples: int, strategy, capacity: int, prompt_len: int,
                   max_new_tokens: int, num_stops: int):
  """The engine's layout for a full job of prompts of `prompt_len` tokens (its own `_Job`)."""
  from restem_jax.sampling import rollout
  problems = max(2 * rollout._PREFILL_BATCH, -(-2 * capacity // num_samples))  # pylint: disable=protected-access
  ids = [str(i) for i in range(problems)]
  prompts = [[0] * prompt_len for _ in ids]
  job = rollout._Job(engine, ids, prompts, num_samples, strategy, max_new_tokens, 0, 0,  # pylint: disable=protected-access
                     ("",) * num_stops, [], capacity, None)
  return job


def _compile_engine(name, engine, params, layers, num_samples, strategy, capacity, prompt_len,
                    T, stop_tables, chip, weight_bytes) -> Iterator[ProgramReport]:
  """The two reports (decode visit, prefill) of one way of sampling."""
  from restem_jax.sampling import rollout
  # pylint: disable=protected-access
  sampler, mesh = engine.sampler, engine.sampler.mesh
  cfg = sampler.cfg
  replicated = partitioning.replicated(mesh)
  rows = sampler._rows
  arr = lambda shape, dtype, sharding=replicated: jax.ShapeDtypeStruct(shape, dtype,
                                                                        sharding=sharding)
  num_stops = int(stop_tables[1].shape[0]) + calculator.columns(stop_tables[2])
  job = _engine_layout(engine, num_samples, strategy, capacity, prompt_len, T, num_stops)
  B, M, pool, kv_len, shared = job.B, job.M, job.pool, job.kv_len, job.shared
  own_len = T if shared else kv_len + T
  state, _ = _abstract(engine._init, B, T, own_len, max(pool, 1), kv_len, num_stops,
                       shared=shared)
  state_bytes, cache_bytes = _bytes_of(state), _bytes_of(state.cache)
  layout = (f"{B} rows" + (f" ({pool} prompts of {kv_len} slots shared, {M} rows a prompt at "
                           f"most)" if shared else f", each its own {kv_len} prompt slots")
            + f", {num_samples} sample(s) a problem, {T} new tokens, {type(strategy).__name__}")
  # The decode visit: admission, then up to steps_per_visit steps of every row.
  S = engine.steps_per_visit
  args = (params, layers, state, arr((max(pool, 1), M), jnp.int32), arr((B,), jnp.int32, rows),
          arr((B,), jnp.int32, rows), arr((B,), jnp.bool_, rows), arr((B,), jnp.int32, rows),
          arr((B,), jnp.int32, rows), arr((B,), jnp.uint32, rows), arr((B,), jnp.int32, rows),
          arr((), jnp.uint32), arr((), jnp.uint32), *stop_tables, arr((), jnp.int32))
  lowered = engine._run.lower(*args, strategy, S)
  decode = _compile(name, f"decode visit: {layout}, {S} steps a visit", lowered, args, chip)
  # The model's work for B rows x T tokens (every row running to T), with the prefill of the
  # prompts they need; a step reads this chip's weights and its whole cache.
  prompts = -(-B // M) if shared else B
  prefill_flops = prompts * prompt_len * train_steps.flops_per_token(cfg, prompt_len) / 3
  step_flops = B * train_steps.flops_per_token(cfg, prompt_len + T // 2) / 3
  devices = mesh.devices.size
  seconds = (max(prefill_flops / devices / chip.peak_flops, weight_bytes / chip.hbm_bandwidth)
             + T * max(step_flops / devices / chip.peak_flops,
                       (weight_bytes + cache_bytes) / chip.hbm_bandwidth))
  _estimate(decode, chip, seconds, (prefill_flops + T * step_flops) / devices)
  yield decode
  # The prefill of newly admitted prompts (as many at once as the engine ever prefills) into
  # the pool or the rows; the rows' other state stays resident beside it.
  targets = pool if shared else B
  count = rollout._PREFILL_BATCH if min(targets, len(job.prompts)) >= rollout._PREFILL_BATCH \
      else 1
  L = rollout._bucket(prompt_len, engine.sampler.max_prompt_len(T))
  fill = engine._fill_pool if shared else engine._fill_rows
  args = (params, layers, state.cache, arr((0,), jnp.int32), arr((count, L), jnp.int32),
          arr((count,), jnp.int32), arr((count,), jnp.int32))
  report = _compile(f"{name}_prefill", f"prefill of {count} prompt(s) x {L} tokens into the "
                    f"cache; {layout}", fill.lower(*args), args, chip)
  report.resident_bytes = state_bytes - cache_bytes
  flops = count * L * train_steps.flops_per_token(cfg, L) / 3 / devices
  _roofline(report, chip, flops, weight_bytes, flops)
  yield report
