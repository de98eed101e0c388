"""host_memory: on the CPU, memory a step frees serves the next one instead of being faulted in again."""

import os
import subprocess
import sys
import textwrap

import pytest

from restem_jax import host_memory

# Allocates, touches and frees a 256 MB block four times in a fresh process (after importing
# restem_jax) and prints the minor page faults of the last three rounds.
_PROBE = textwrap.dedent("""
    import ctypes, resource
    import restem_jax
    from restem_jax import host_memory
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 256 << 20
    faults = 0
    for i in range(4):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      block = libc.malloc(size)
      ctypes.memset(block, 1, size)
      libc.free(block)
      if i:
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(host_memory.status())
    print(faults)
""")


def _probe(setting: str) -> tuple[str, int]:
  env = dict(os.environ, **{host_memory.ENV: setting})
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout.split("\n")
  return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_is_not_faulted_in_again():
  kept_status, kept_faults = _probe("1")
  system_status, system_faults = _probe("0")
  assert kept_status.startswith("kept"), kept_status
  assert system_status == f"system ({host_memory.ENV}=0)"
  pages = 3 * (256 << 20) // 4096
  # glibc unmaps a freed 256 MB block, so the next one is faulted in page by page (or by huge
  # pages where the kernel gives them: at least 1/512 of the pages); kept, the heap is reused.
  assert system_faults >= pages // 512, system_faults
  assert kept_faults < max(system_faults // 10, 1), (kept_faults, system_faults)


@pytest.mark.parametrize("env, devices, expected", [
    ({host_memory.ENV: "0", "JAX_PLATFORMS": "cpu"}, [], (False, f"{host_memory.ENV}=0")),
    ({host_memory.ENV: "1"}, ["/dev/accel0"], (True, f"{host_memory.ENV}=1")),
    ({"JAX_PLATFORMS": "cpu"}, ["/dev/accel0"], (True, "JAX_PLATFORMS=cpu")),
    ({"JAX_PLATFORMS": "tpu"}, [], (False, "JAX_PLATFORMS=tpu")),
    ({"JAX_PLATFORMS": "cuda,cpu"}, ["/dev/nvidia0"], (False, "accelerator device /dev/nvidia0")),
    ({}, ["/dev/vfio/0"], (False, "accelerator device /dev/vfio/0")),
    ({}, [], (True, "no accelerator device")),
])
def test_decision(monkeypatch, env, devices, expected):
  monkeypatch.setattr(sys, "platform", "linux")
  for name in (host_memory.ENV, "JAX_PLATFORMS"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setattr(host_memory.glob, "glob",
                      lambda pattern: [d for d in devices if d.startswith(pattern.split("*")[0]
                                                                         .split("[")[0])])
  assert host_memory._decide() == expected  # pylint: disable=protected-access


def test_bad_setting_is_one_line(monkeypatch):
  monkeypatch.setenv(host_memory.ENV, "yes")
  with pytest.raises(ValueError, match=f"^{host_memory.ENV} must be 0 or 1, got 'yes'$"):
    host_memory._decide()  # pylint: disable=protected-access


def test_not_linux_leaves_the_allocator(monkeypatch):
  monkeypatch.setattr(sys, "platform", "darwin")
  monkeypatch.delenv(host_memory.ENV, raising=False)
  assert host_memory._decide() == (False, "not Linux (darwin)")  # pylint: disable=protected-access
