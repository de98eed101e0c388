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
  sample       the sampler's prefill + decode loop as the Generate step calls it: N =
               restem.num_samples, top-k / temperature, sampling.batch_size rows
  eval_sample  the same for the pass@k evaluation (eval.num_samples, eval's strategy)
  greedy       the same, one greedy sample per problem (test accuracy, the trainer's selection)

Prompts are taken at their longest: data.inputs_length tokens (at most max_len -
max_new_tokens), with the task's stop strings. The model is the base checkpoint's (its
config.json; the run trains and samples with that) or else `config.model`.

For each program it prints per-device HBM (arguments, outputs, temporaries, total; from
`compiled.memory_analysis()`) against the chip's HBM, and the FLOPs and bytes of
`compiled.cost_analysis()`. XLA's cost analysis counts the body of each loop once (the scan over
layers, the microbatches, the decode loop), so those two figures are not the program's work.
The estimated time is therefore a roofline of the model's own work per device, from the chip's
peaks (`tpu_specs.py`): max(FLOPs / peak, HBM bytes / bandwidth), with FLOPs from PaLM's formula
(`train_steps.flops_per_token`; a forward pass is a third of it, and rematerialisation adds a
forward pass to training) and HBM bytes as the parameters and KV cache each pass or decode step
reads. It leaves out collectives between chips and every inefficiency of the real program, so
it is a lower bound on the time, and the MFU (the model's FLOPs / (time x peak)) an upper
bound. The sampler's figures take every row to run to max_new_tokens.

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
from jax.sharding import NamedSharding, PartitionSpec

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

  @property
  def total_bytes(self) -> int:
    return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
            + self.code_bytes)

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
  if report.error:
    return
  report.est_seconds = max(flops / chip.peak_flops, nbytes / chip.hbm_bandwidth)
  report.model_flops = model_flops
  report.mfu = model_flops / (report.est_seconds * chip.peak_flops)


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
            f"{trainer.optimizer}")
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
  """A Sampler whose parameters are `ShapeDtypeStruct`s: only its jitted program is used."""

  def set_params(self, params) -> None:
    self.params = params


def stop_strings(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The stop strings the run samples with (the config's, else its prompt set's)."""
  if config.sampling.stop_strings:
    return tuple(config.sampling.stop_strings)
  from restem_jax.data import fewshot, tasks
  return tuple(fewshot.load(config.data.prompt or tasks.KINDS[config.data.kind].prompt).stop)


def compile_sampler(cfg: model_lib.ModelConfig, config, mesh, rules, chip,
                    which=("sample", "eval_sample", "greedy")) -> Iterator[ProgramReport]:
  """The sampler's program (prefill + decode loop) for each way the run samples."""
  abstract, shardings = partitioning.abstract_and_shardings(
      lambda key: model_lib.Decoder(cfg).init(key, jnp.zeros((1, 1), jnp.int32)),
      mesh, rules, jax.random.key(0))
  import flax.linen as nn
  params = _sds(nn.unbox(abstract)["params"], shardings["params"])
  sampler = _AbstractSampler(params, cfg, mesh=mesh, rules=rules)
  param_bytes = _bytes_of(params)
  s, r, e = config.sampling, config.restem, config.eval
  ways = {
      "sample": (r.num_samples, sampling.make_strategy(r.temperature, r.top_k, r.top_p)),
      "eval_sample": (e.num_samples, sampling.make_strategy(e.temperature, e.top_k, e.top_p)),
      "greedy": (1, sampling.Greedy()),
  }
  stops = stop_strings(config)
  max_q = max((len(x.encode("utf-8")) for x in stops), default=1)
  replicated = partitioning.replicated(mesh)
  stop_tables = (jax.ShapeDtypeStruct((len(stops), max_q, cfg.vocab_size), jnp.int16,
                                      sharding=replicated),
                 jax.ShapeDtypeStruct((len(stops),), jnp.int32, sharding=replicated))
  T = int(s.max_new_tokens)
  limit = sampler.max_prompt_len(T)
  if limit < 1:
    raise AotError(f"sampling.max_new_tokens={T} leaves no room for a prompt in the model's "
                   f"max_len={cfg.max_len}")
  # pylint: disable-next=protected-access
  prompt_len = sampling._bucket(min(int(config.data.inputs_length), limit), limit)
  for name in which:
    num_samples, strategy = ways[name]
    args, shapes = _generate_args(sampler, params, num_samples, int(s.batch_size), prompt_len,
                                  stop_tables, replicated)
    with partitioning.activate(mesh, rules):
      lowered = sampler._generate.lower(  # pylint: disable=protected-access
          *args, strategy, shapes["n"], T, num_samples > 1)
    report = _compile(name, f"{shapes['P']} prompts x {prompt_len} tokens, {shapes['n']} "
                      f"samples each ({shapes['P'] * shapes['n']} rows), {T} new tokens, "
                      f"{type(strategy).__name__}", lowered, args, chip)
    if not report.error:
      _decode_time(report, cfg, mesh, shapes, prompt_len, T, chip, param_bytes)
    yield report


def _generate_args(sampler: sampling.Sampler, params, num_samples: int, batch_size: int,
                   prompt_len: int, stop_tables, replicated):
  """Abstract arguments of `Sampler._generate` for a full batch, laid out as `generate` does."""
  n = sampling._largest_divisor_at_most(num_samples, batch_size)  # pylint: disable=protected-access
  P = max(1, batch_size // n)
  P = math.lcm(P, sampler.row_shards // math.gcd(n, sampler.row_shards))
  B = P * n
  rows = NamedSharding(sampler.mesh, PartitionSpec(("data", "fsdp")))
  arr = lambda shape, dtype, sharding: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  args = (params, arr((0,), jnp.int32, replicated), arr((P, prompt_len), jnp.int32, replicated),
          arr((P,), jnp.int32, replicated), arr((B,), jnp.bool_, rows),
          arr((B,), jnp.uint32, rows), arr((B,), jnp.int32, rows),
          arr((), jnp.uint32, replicated), arr((), jnp.uint32, replicated), *stop_tables)
  return args, {"n": n, "P": P}


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

  def to_json(self) -> dict[str, Any]:
    return {"topology": self.topology.name, "accelerator": self.topology.accelerator,
            "config": self.config_name, "mesh": self.mesh,
            "hbm_bytes": self.topology.chip.hbm_bytes, "usable_bytes": self.usable_bytes,
            "peak_flops": self.topology.chip.peak_flops,
            "hbm_bandwidth": self.topology.chip.hbm_bandwidth,
            "programs": {p.name: p.to_json() for p in self.programs},
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


def _decode_time(report: ProgramReport, cfg: model_lib.ModelConfig, mesh, shapes: dict[str, int],
                 prompt_len: int, new_tokens: int, chip: tpu_specs.Chip, param_bytes: int) -> None:
  """The sampler's roofline: the prefill, then `new_tokens` decode steps (every row runs on).

  The prefill reads the parameters once and computes the prompts' forward FLOPs; a decode step
  reads this device's parameters and the whole KV cache (prompt slots once per prompt when
  shared, then a slot per row and step) and computes one token per row.
  """
  P, n = shapes["P"], shapes["n"]
  B, L, T = P * n, prompt_len, new_tokens
  devices = mesh.devices.size
  row_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  slots = P * L + B * T if n > 1 else B * (L + T)
  itemsize = jnp.dtype(cfg.dtype).itemsize
  kv_bytes = 2 * cfg.num_layers * slots * cfg.num_kv_heads * cfg.head_dim * itemsize / row_shards
  prefill_flops = P * L * train_steps.flops_per_token(cfg, L) / 3 / devices
  step_flops = B * train_steps.flops_per_token(cfg, L + T // 2) / 3 / devices
  seconds = max(prefill_flops / chip.peak_flops, param_bytes / chip.hbm_bandwidth)
  seconds += T * max(step_flops / chip.peak_flops,
                     (param_bytes + kv_bytes) / chip.hbm_bandwidth)
  report.est_seconds = seconds
  report.model_flops = prefill_flops + T * step_flops
  report.mfu = report.model_flops / (seconds * chip.peak_flops)


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
      f"{'program':<12} {'args':>7} {'outputs':>7} {'temps':>7} {'total':>7} {'of HBM':>7} "
      f"{'XLA TFLOP':>9} {'XLA GB':>8} {'est. time':>10} {'MFU':>6}  (per device; GiB)",
  ]
  for p in result.programs:
    mfu = f"{p.mfu:.1%}" if p.mfu is not None else "-"
    mark = "" if p.name not in result.too_big else "  <- does not fit"
    if p.error:
      mark += " (the compiler refused: totals are lower bounds)"
    lines.append(
        f"{p.name:<12} {_gib(p.argument_bytes):>7} {_gib(p.output_bytes - p.alias_bytes):>7} "
        f"{_gib(p.temp_bytes):>7} {_gib(p.total_bytes):>7} "
        f"{p.total_bytes / chip.hbm_bytes:>7.0%} {p.flops / 1e12:>9.2f} "
        f"{p.bytes_accessed / 1e9:>8.2f} {p.est_seconds:>9.3g}s {mfu:>6}{mark}")
  lines.append("")
  for p in result.programs:
    lines.append(f"  {p.name}: {p.shapes}" + (f"\n    {p.error}" if p.error else ""))
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
