"""The C allocator's settings for runs on the CPU: memory a step frees serves the next step.

XLA:CPU allocates a step's buffers (activations and gradients: about 4 GB for bench/training's
`small` train step) with the C allocator and frees them when the step ends. glibc serves blocks
that large with fresh mmaps and unmaps them on free, so every step faults all of its memory in
again and the kernel zeroes it: about 987,000 minor page faults and 1.9 s of system time per
6.7 s `small` step, 233,000 per 1.1 s `tiny` step (AMD EPYC, 2 cores; BENCHMARKS.md, "Training").
With mmap off for the allocator, no trimming and one arena for all threads, the memory freed by
one step is reused by the next: no faults after the first steps, `tiny` 1.09 -> 0.84 s and
`small` 6.7 -> 5.7 s per step, with results unchanged (the arithmetic is the same; only where
buffers live changes).

The price: memory the process frees stays with it (the `small` step alone kept its 4.6 GB peak,
as without the setting; `make demo`'s peak grew from 2.5 to 3.9 GB), and threads share one
allocator lock, which slows XLA's compiles (the `tiny` train step's 2.0 -> 2.4 to 2.5 s). In
`make demo` the training stages took ~25% less time and the evaluations, which compile the
sampler for each shape, ~20% more: 492 -> 448 s in all, the same summary.

So it applies only where the run is on the CPU: `configure()` (called when `restem_jax` is
imported, before JAX starts its CPU threads) sets it on Linux with glibc when JAX_PLATFORMS is
"cpu", or when the host shows no accelerator device (TPU `/dev/accel*` or `/dev/vfio`, NVIDIA
`/dev/nvidia*`, AMD `/dev/kfd`). RESTEM_JAX_HOST_MALLOC=0 leaves the
allocator alone and =1 sets it anyway. Threads that allocated before the import keep their own
arenas: import `restem_jax` before running JAX computations to get the whole effect.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

ENV = "RESTEM_JAX_HOST_MALLOC"

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_ACCELERATOR_DEVICES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")

_state = {"applied": False, "reason": "not configured"}


def _decide() -> tuple[bool, str]:
  """(whether to set the allocator, why), from the environment and the host's devices."""
  forced = os.environ.get(ENV, "").strip()
  if forced not in ("", "0", "1"):
    raise ValueError(f"{ENV} must be 0 or 1, got {forced!r}")
  if forced == "0":
    return False, f"{ENV}=0"
  if not sys.platform.startswith("linux"):
    return False, f"not Linux ({sys.platform})"
  if forced == "1":
    return True, f"{ENV}=1"
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms == "cpu":
    return True, "JAX_PLATFORMS=cpu"
  if platforms and "cpu" not in platforms.split(","):
    return False, f"JAX_PLATFORMS={platforms}"
  found = [path for pattern in _ACCELERATOR_DEVICES for path in glob.glob(pattern)]
  if found:
    return False, f"accelerator device {found[0]}"
  return True, "no accelerator device"


def configure() -> bool:
  """Sets glibc's allocator for CPU runs (see the module doc) once; True when it is set."""
  if _state["reason"] != "not configured":
    return _state["applied"]
  applied, reason = _decide()
  if applied:
    try:
      libc = ctypes.CDLL(None)
      mallopt = libc.mallopt
      libc.gnu_get_libc_version  # pylint: disable=pointless-statement: glibc, not musl
    except (OSError, AttributeError):
      applied, reason = False, "not glibc"
    else:
      mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
      # A trim threshold of -1 is SIZE_MAX inside glibc: the heap's top is never given back.
      ok = (mallopt(_M_ARENA_MAX, 1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
            and mallopt(_M_TRIM_THRESHOLD, -1) == 1)
      if not ok:
        applied, reason = False, "mallopt refused"
  _state.update(applied=applied, reason=reason)
  return applied


def status() -> str:
  """'kept (why)' or 'system (why)': for logs and benchmark records."""
  return f"{'kept' if _state['applied'] else 'system'} ({_state['reason']})"
