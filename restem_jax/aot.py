"""`python -m restem_jax.aot`: will a run fit a TPU topology? Compiles its programs for it.

The command lives in `restem_jax.tpu.aot`; this module keeps its path.
"""

import os

if __name__ == "__main__":
  # A check compiles for a topology: JAX's own backend is the CPU, libtpu only compiles.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from restem_jax.tpu import aot as _command  # noqa: E402  (after the environment above)

__doc__ = _command.__doc__  # the command's usage (`--help`)

if __name__ == "__main__":
  _command.main()
