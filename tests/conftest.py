"""Test setup: 8 fake CPU devices, so sharding is exercised on this machine.

XLA reads the flag once, when JAX's backend starts: it must be set before anything imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow (used by seqio) must not take the accelerator or all host threads from JAX.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# glibc's defaults: the suite is mostly compiling small programs, which one allocator arena makes
# ~20% slower, and has few steps for restem_jax.host_memory to speed up (tests/test_host_memory.py
# runs it in fresh processes).
os.environ.setdefault("RESTEM_JAX_HOST_MALLOC", "0")


import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_ARGS = ["--config=configs/demo.py:smoke", "--config.progress_bar=False"]


def smoke_env():
  """A user's environment: one CPU device, unbuffered output."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["PYTHONUNBUFFERED"] = "1"
  return env


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """One run of `configs/demo.py:smoke`, shared by the loop and notebook tests.

  Returns (workdir, the finished process).
  """
  workdir = tmp_path_factory.mktemp("smoke")
  out = subprocess.run([sys.executable, "-m", "restem_jax.main", *SMOKE_ARGS,
                        f"--workdir={workdir}"], cwd=REPO, env=smoke_env(),
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  return workdir, out
