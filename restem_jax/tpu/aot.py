"""Will it fit? Compiles a run's programs for a TPU topology on this (CPU) machine.

  python -m restem_jax.aot --config=configs/NAME.py[:ARG] --topology=v5e:4x4 \\
      [--programs=train,eval,sample,eval_sample,greedy] [--config.KEY=VALUE ...]

With libtpu installed (`pip install -e .[tpu]`), JAX compiles for a topology's devices without
owning them (`jax.experimental.topologies`), so nothing is allocated: every argument is a
`jax.ShapeDtypeStruct` with its sharding (parameters from `jax.eval_shape`). The programs are the
run's own, jitted by the modules that run them, on the run's mesh (`config.mesh_shape`) and rules
(`partitioning.DEFAULT_RULES`, as the loop uses):

  train        `steps.make_train_fns`'s train step: `config.finetune` (batch, microbatches,
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
peaks (`specs.py`): max(FLOPs / peak, HBM bytes / bandwidth), with FLOPs from PaLM's formula
(`steps.flops_per_token`; a forward pass is a third of it, and rematerialisation adds a
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
import os
import sys
from collections.abc import Sequence
from typing import Any

if __name__ == "__main__":
  # A check compiles for a topology: JAX's own backend is the CPU, libtpu only compiles.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ml_collections  # noqa: E402

from restem_jax.model import partitioning  # noqa: E402
from restem_jax.tpu import specs as tpu_specs  # noqa: E402
from restem_jax.tpu.programs import (AotError, ProgramReport, compile_sampler,  # noqa: E402
                                     compile_train, model_config)

PROGRAMS = ("train", "eval", "sample", "eval_sample", "greedy")


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
               "HBM reads, without collectives (see restem_jax/tpu/aot.py)")
  lines.append(f"fits: {result.fits}" + (f" (too big: {', '.join(result.too_big)})"
                                          if result.too_big else ""))
  return "\n".join(lines)


def main():
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
  main()
