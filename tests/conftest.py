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
