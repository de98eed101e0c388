"""Device mesh, the logical-axis rules, and shardings derived from abstract shapes.

The model names logical axes only (`embed`, `mlp`, `heads`, ...). `DEFAULT_RULES` is the one
table that maps them to the mesh axes (`data`, `fsdp`, `model`); a config may pass its own.
Shardings are never written by hand: `jax.eval_shape` gives the abstract parameters with their
logical names, the rules turn those into `NamedSharding`s, and `init_sharded` jits the
initialiser with those as `out_shardings`, so each device only ever materialises its own shard.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "model")

# Logical axis -> mesh axis (or axes, or None: replicated). Weights and activations have separate
# names, so e.g. the embedding's `embed` axis can be sharded for FSDP while activations keep
# their model dimension whole. Order matters only when two rules name the same logical axis.
Rules = Sequence[tuple[str, Any]]
DEFAULT_RULES: Rules = (
    # weights
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv_heads", None),
    ("kv", None),
    ("norm", None),
    ("layers", None),
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "model"),
    ("activation_heads", "model"),
    ("activation_kv", None),
    ("activation_vocab", "model"),
    # KV cache
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", None),
)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[Any] | None = None) -> Mesh:
  """A mesh with axes (data, fsdp, model).

  Args:
    shape: sizes of (data, fsdp, model); one entry may be -1 to take the remaining devices.
    devices: defaults to all devices of all processes.

  Returns:
    A `jax.sharding.Mesh` with automatic (GSPMD) axis types.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f"mesh shape must have 3 entries (data, fsdp, model), got {shape}")
  if shape.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {shape}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into mesh {shape}")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh {tuple(shape)} needs {int(np.prod(shape))} devices, "
                     f"but {len(devices)} are given")
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    # Topology-aware placement is for TPU slices; elsewhere any order is as good.
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """Context in which model code's logical constraints resolve against `mesh` with `rules`.

  It must be active while a jitted function that calls the model is traced.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
    yield


def logical_to_sharding(logical_specs, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """A pytree of logical PartitionSpecs -> a pytree of NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, tuple(rules))


def abstract_and_shardings(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules,
                           *args) -> tuple[Any, Any]:
  """Abstract output of `init_fn(*args)` (boxed with logical names) and its shardings.

  Nothing is allocated: this runs `jax.eval_shape`.
  """
  abstract = jax.eval_shape(init_fn, *args)
  specs = nn.get_partition_spec(abstract)
  return abstract, logical_to_sharding(specs, mesh, rules)


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules, *args):
  """Runs `init_fn(*args)` (returning Flax-boxed variables) straight into its shardings.

  Returns:
    (unboxed variables placed on the mesh, their shardings).
  """
  _, shardings = abstract_and_shardings(init_fn, mesh, rules, *args)
  # Not under `activate`: out_shardings place the parameters, and Flax's DenseGeneral would
  # constrain its kernels while they still have their flattened 2-D init shape.
  boxed = jax.jit(init_fn, out_shardings=shardings)(*args)
  return nn.unbox(boxed), shardings


def data_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Rows over (data, fsdp), everything else replicated."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def rows_follow_processes(mesh: Mesh, global_rows: int) -> bool:
  """Whether `data_sharding(mesh)` puts rows [p R / P, (p + 1) R / P) on process p's devices.

  Then each of the P processes can feed just its own contiguous share of an R-row batch. It is
  not so when a process's devices hold rows of another share, e.g. when a model axis spans
  processes and so several processes hold the same rows.
  """
  count = jax.process_count()
  if global_rows % count:
    return False
  per = global_rows // count
  placement = data_sharding(mesh, 1).devices_indices_map((global_rows,))
  for device, (rows,) in placement.items():
    start, stop, _ = rows.indices(global_rows)
    share = device.process_index * per
    if start < share or stop > share + per:
      return False
  return True


def to_host(x: Any) -> np.ndarray:
  """The whole value of an array as numpy, also when other processes hold parts of it.

  `np.asarray` reads only arrays whose shards this process holds (or fully replicated ones);
  a global array sharded across processes is gathered first, which is a collective: every
  process must call this for the same array.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def sync_hosts(name: str) -> None:
  """Waits until every host got here (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def maybe_initialize_distributed(enabled: bool, **kwargs) -> None:
  """Calls `jax.distributed.initialize` once on multi-host runs (Cloud TPU pods, multi-process).

  On a TPU VM the coordinator address and process ids come from the environment; tests pass
  them explicitly. A second call is a no-op.
  """
  if not enabled:
    return
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def shard_host(shard_index: int, process_count: int) -> int:
  """The host that works on shard `shard_index`: round-robin, shard k to host k % count.

  The one rule of the run's per-host work: the Generate step's sample shards
  (`sample_shards`) and their scoring (`host_shard`) follow it, so on hosts that sample on
  their own devices each host scores the shards it wrote.
  """
  return shard_index % process_count


def host_shard(items: Sequence[Any], process_index: int | None = None,
               process_count: int | None = None) -> list[Any]:
  """This host's items: item k when `shard_host(k, count)` is this host (near-equal shares)."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  return [item for k, item in enumerate(items) if shard_host(k, count) == index]
