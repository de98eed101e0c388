"""Will it fit? Compiles a run's programs for a TPU topology on this (CPU) machine.

  python -m restem_jax.aot --config=configs/NAME.py[:ARG] --topology=v5e:4x4 \\
      [--programs=train,eval,sample,eval_sample,greedy] [--config.KEY=VALUE ...]

With libtpu installed (`pip install -e .[tpu]`), JAX compiles for a topology's devices without
owning them (`jax.experimental.topologies`), so nothing is allocated: every argument is a
`jax.ShapeDtypeStruct` with its sharding (parameters from `jax.eval_shape`). The programs are the
run's own, jitted by the modules that run them, on the run's mesh (`config.mesh_shape`) and rules
(`partitioning.DEFAULT_RULES`, as the loop uses):

  train        `train_steps.make_train_fns`'s train step: `config.finetune` (batch, microbatches,
               optimizer), rows of inputs_length + targets_length tokens
  eval         its eval step (validation loss) on the same batch
  sample       the rollout engine (`rollout.RolloutEngine`, what `Sampler.generate` runs) as the
               Generate step calls it: N = restem.num_samples, top-k / temperature,
               sampling.batch_size rows
  eval_sample  the same for the pass@k evaluation (eval.num_samples, eval's strategy)
  greedy       the same, one greedy sample per problem (test accuracy, the trainer's selection)

The engine keeps, for a whole job, the parameters, their per-layer copy in the compute dtype and
its rows' state (KV cache, tokens); two programs run on them, so each way of sampling reports
two: NAME, the decode visit (up to `steps_per_visit` steps of every row; its arguments are all
of the above), and NAME_prefill, the prefill of newly admitted prompts into the cache (with the
rows' state that is not its argument counted as resident). Prompts are taken at their longest:
data.inputs_length tokens (at most max_len - max_new_tokens), with the task's stop strings, in
the engine's own layout for a job that fills its rows (`rollout._Job`). The model is the base
checkpoint's (its config.json; the run trains and samples with that) or else `config.model`.

For each program it prints per-device HBM (arguments, outputs, temporaries, total; from
`compiled.memory_analysis()`) against the chip's HBM, and the FLOPs and bytes of
`compiled.cost_analysis()`. XLA's cost analysis counts the body of each loop once (the scan over
layers, the microbatches, the decode loop), so those two figures are not the program's work.
The estimated time is therefore a roofline of the model's own work per device, from the chip's
peaks (`tpu_specs.py`): max(FLOPs / peak, HBM bytes / bandwidth), with FLOPs from PaLM's formula
(`train_steps.flops_per_token`; a forward pass is a third of it, and rematerialisation adds a
forward pass to training) and HBM bytes as the parameters and KV cache each pass or decode step
reads (the engine's decode: its rows each running max_new_tokens steps, with the prefill of
their prompts). It leaves out collectives between chips and every inefficiency of the real program, so
it is a lower bound on the time, and the MFU (the model's FLOPs / (time x peak)) an upper
bound.

The last line is one JSON object: {"topology", "accelerator", "config", "mesh", "hbm_bytes",
"usable_bytes", "programs": {NAME: {...}}, "fits": bool, "too_big": [NAMES]}. Exit status 0
whether or not it fits; 2 with one line for an unknown topology, a missing libtpu or a bad config.
A program fits when its total is at most the chip's HBM less `--headroom` (default 5%, for the
runtime's own buffers and fragmentation).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

if __name__ == "__main__":
  # A check compiles for a topology: JAX's own backend is the CPU, libtpu only compiles.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections

from restem_jax import model as model_lib
from restem_jax import partitioning
from restem_jax import sampling
from restem_jax import tpu_specs
from restem_jax import train_steps

PROGRAMS = ("train", "eval", "sample", "eval_sample", "greedy")


class AotError(Exception):
  """An expected failure of the check (unknown topology, no libtpu, a bad config): one line."""


# ---------------------------------------------------------------------------------------------
# Devices


def libtpu_available() -> bool:
  return (importlib.util.find_spec("libtpu") is not None
          or bool(os.environ.get("TPU_LIBRARY_PATH")))


def topology_devices(topology: tpu_specs.Topology) -> list[Any]:
  """Compile-only devices of `topology` (no TPU needed; libtpu must be installed).

  Raises:
    AotError: libtpu is missing or does not know the topology.
  """
  if not libtpu_available():
    raise AotError("libtpu is not installed: pip install -e '.[tpu]' (or 'libtpu==0.0.42.*')")
  # libtpu takes a machine-wide lock unless told that several processes may load it: a check
  # must not fail because another JAX process on this machine loaded libtpu first.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology.name,
                                        **topology.options)
  except Exception as e:  # libtpu reports a bad layout as a runtime error
    raise AotError(f"libtpu cannot build topology {topology.name}: "
                   f"{str(e).splitlines()[0]}") from e
  return list(desc.devices)


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


def _compile(name: str, shapes: str, lowered, args, chip: tpu_specs.Chip) -> ProgramReport:
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


def _report(name: str, shapes: str, compiled, chip: tpu_specs.Chip) -> ProgramReport:
  mem = compiled.memory_analysis()
  flops, nbytes = _cost(compiled)
  return ProgramReport(
      name=name, shapes=shapes, argument_bytes=int(mem.argument_size_in_bytes),
      output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes),
      temp_bytes=int(mem.temp_size_in_bytes),
      code_bytes=int(mem.generated_code_size_in_bytes), flops=flops, bytes_accessed=nbytes)


def _roofline(report: ProgramReport, chip: tpu_specs.Chip, flops: float, nbytes: float,
              model_flops: float) -> None:
  """Sets the estimated time (compute or HBM bound) and the MFU of a program that compiled."""
  _estimate(report, chip, max(flops / chip.peak_flops, nbytes / chip.hbm_bandwidth),
            model_flops)


def _estimate(report: ProgramReport, chip: tpu_specs.Chip, seconds: float,
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
    from restem_jax import checkpoints
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
  from restem_jax import rollout
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
  stop_tables = (arr((len(stops), max_q, cfg.vocab_size), jnp.int16),
                 arr((len(stops),), jnp.int32))
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
  from restem_jax import rollout
  problems = max(2 * rollout._PREFILL_BATCH, -(-2 * capacity // num_samples))  # pylint: disable=protected-access
  ids = [str(i) for i in range(problems)]
  prompts = [[0] * prompt_len for _ in ids]
  job = rollout._Job(engine, ids, prompts, num_samples, strategy, max_new_tokens, 0, 0,  # pylint: disable=protected-access
                     ("",) * num_stops, [], capacity, None)
  return job


def _compile_engine(name, engine, params, layers, num_samples, strategy, capacity, prompt_len,
                    T, stop_tables, chip, weight_bytes) -> Iterator[ProgramReport]:
  """The two reports (decode visit, prefill) of one way of sampling."""
  from restem_jax import rollout
  # pylint: disable=protected-access
  sampler, mesh = engine.sampler, engine.sampler.mesh
  cfg = sampler.cfg
  replicated = partitioning.replicated(mesh)
  rows = sampler._rows
  arr = lambda shape, dtype, sharding=replicated: jax.ShapeDtypeStruct(shape, dtype,
                                                                        sharding=sharding)
  num_stops = int(stop_tables[1].shape[0])
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


# ---------------------------------------------------------------------------------------------
# The check


@dataclasses.dataclass
class Result:
  topology: tpu_specs.Topology
  config_name: str
  mesh: dict[str, int]
  headroom: float
  programs: list[ProgramReport]

  @property
  def usable_bytes(self) -> int:
    return int(self.topology.chip.hbm_bytes * (1.0 - self.headroom))

  @property
  def too_big(self) -> list[str]:
    return [p.name for p in self.programs
            if p.error or p.total_bytes > self.usable_bytes]

  @property
  def fits(self) -> bool:
    return not self.too_big

  def hint(self, report: ProgramReport) -> str:
    """What would make a program that does not fit fit, where its hint applies: rematerialising
    shrinks the temporaries, not the arguments (parameters, optimizer state)."""
    if report.name not in self.too_big or report.argument_bytes > self.usable_bytes:
      return ""
    return report.hint

  def to_json(self) -> dict[str, Any]:
    return {"topology": self.topology.name, "accelerator": self.topology.accelerator,
            "config": self.config_name, "mesh": self.mesh,
            "hbm_bytes": self.topology.chip.hbm_bytes, "usable_bytes": self.usable_bytes,
            "peak_flops": self.topology.chip.peak_flops,
            "hbm_bandwidth": self.topology.chip.hbm_bandwidth,
            "programs": {p.name: {**p.to_json(), "hint": self.hint(p)} for p in self.programs},
            "fits": self.fits, "too_big": self.too_big}


def check(config: ml_collections.ConfigDict, topology: str, *,
          programs: Sequence[str] = PROGRAMS, headroom: float = 0.05,
          config_name: str = "", fail_fast: bool = False) -> Result:
  """Compiles `programs` of the run `config` for `topology` and measures them.

  Args:
    config: a run config (configs/*.py).
    topology: libtpu's name ("v5e:4x4") or gcloud's accelerator type ("v4-32").
    programs: a subset of PROGRAMS.
    headroom: fraction of HBM kept free for the runtime.
    config_name: for the report.
    fail_fast: stop after the first program that does not fit (the verdict is then known).

  Returns:
    A `Result` (`fits`, `too_big`, per-program figures).

  Raises:
    AotError: unknown topology or program, no libtpu, a mesh or batch that does not divide.
  """
  unknown = set(programs) - set(PROGRAMS)
  if unknown:
    raise AotError(f"unknown programs {sorted(unknown)}; known: {', '.join(PROGRAMS)}")
  try:
    topo = tpu_specs.parse(topology)
  except ValueError as e:
    raise AotError(str(e)) from e
  devices = topology_devices(topo)
  try:
    mesh = partitioning.make_mesh(tuple(config.mesh_shape), devices)
  except ValueError as e:
    raise AotError(f"mesh_shape={tuple(config.mesh_shape)} on {topo.name} "
                   f"({len(devices)} chips): {e}") from e
  cfg = model_config(config)
  rules = partitioning.DEFAULT_RULES
  result = Result(topo, config_name, dict(mesh.shape), headroom, [])
  train_part = [p for p in ("train", "eval") if p in programs]
  sample_part = [p for p in ("sample", "eval_sample", "greedy") if p in programs]
  reports = itertools.chain(
      compile_train(cfg, config, mesh, rules, topo.chip, train_part) if train_part else (),
      compile_sampler(cfg, config, mesh, rules, topo.chip, sample_part) if sample_part else ())
  for report in reports:
    result.programs.append(report)
    if fail_fast and not result.fits:
      break
  return result


# ---------------------------------------------------------------------------------------------
# Command line


def _gib(n: float) -> str:
  return f"{n / tpu_specs.GiB:.2f}"


def format_table(result: Result) -> str:
  """The human-readable report (everything but the JSON line)."""
  chip, topo = result.topology.chip, result.topology
  lines = [
      f"{result.config_name or 'config'} on {topo.name} ({topo.accelerator}, {topo.num_chips} "
      f"chips), mesh {result.mesh}",
      f"chip {chip.name}: {chip.peak_flops / 1e12:.0f} bf16 TFLOP/s, "
      f"{_gib(chip.hbm_bytes)} GiB HBM at {chip.hbm_bandwidth / 1e9:.0f} GB/s ({chip.source}); "
      f"a program fits in {_gib(result.usable_bytes)} GiB ({result.headroom:.0%} kept free)",
      "",
      f"{'program':<20} {'args':>7} {'outputs':>7} {'temps':>7} {'total':>7} {'of HBM':>7} "
      f"{'XLA TFLOP':>9} {'XLA GB':>8} {'est. time':>10} {'MFU':>6}  (per device; GiB)",
  ]
  for p in result.programs:
    mfu = f"{p.mfu:.1%}" if p.mfu is not None else "-"
    mark = "" if p.name not in result.too_big else "  <- does not fit"
    if p.error:
      mark += " (the compiler refused: totals are lower bounds)"
    lines.append(
        f"{p.name:<20} {_gib(p.argument_bytes):>7} {_gib(p.output_bytes - p.alias_bytes):>7} "
        f"{_gib(p.temp_bytes):>7} {_gib(p.total_bytes):>7} "
        f"{p.total_bytes / chip.hbm_bytes:>7.0%} {p.flops / 1e12:>9.2f} "
        f"{p.bytes_accessed / 1e9:>8.2f} {p.est_seconds:>9.3g}s {mfu:>6}{mark}")
  lines.append("")
  for p in result.programs:
    lines.append(f"  {p.name}: {p.shapes}" + (f"\n    {p.error}" if p.error else ""))
    if result.hint(p):
      lines.append(f"    to fit: {result.hint(p)}")
  lines.append("outputs exclude those written into donated arguments; XLA's TFLOP and GB count "
               "each loop body once; est. time and MFU: a roofline of the model's FLOPs and "
               "HBM reads, without collectives (see restem_jax/aot.py)")
  lines.append(f"fits: {result.fits}" + (f" (too big: {', '.join(result.too_big)})"
                                          if result.too_big else ""))
  return "\n".join(lines)


def _cli():
  from absl import app, flags
  from ml_collections import config_flags
  config_flag = config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                                lock_config=True)
  topology = flags.DEFINE_string("topology", None, "libtpu topology (v5e:4x4, v4:2x2x4) or "
                                 "gcloud accelerator type (v4-32, v5litepod-16)")
  programs = flags.DEFINE_list("programs", list(PROGRAMS), f"a subset of {','.join(PROGRAMS)}")
  headroom = flags.DEFINE_float("headroom", 0.05, "fraction of HBM kept free for the runtime")
  fail_fast = flags.DEFINE_bool("fail_fast", False, "stop at the first program that does not "
                                "fit (what the launcher needs)")
  flags.mark_flags_as_required(["config", "topology"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    name = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "")
    try:
      result = check(config_flag.value, topology.value, programs=programs.value,
                     headroom=headroom.value, config_name=name, fail_fast=fail_fast.value)
    except AotError as e:
      print(f"aot: {e}", file=sys.stderr)
      sys.exit(2)
    print(format_table(result))
    print(json.dumps(result.to_json()), flush=True)

  app.run(main)


if __name__ == "__main__":
  _cli()
