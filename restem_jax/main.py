"""The ReST^EM command line.

  python -m restem_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

(also installed as the console script `restem`). Re-running the same command on the same DIR
resumes the run where it stopped. The resolved config is saved as DIR/config.json; an unknown
`--config.KEY` is an error (the config is locked). `--config.vocab=PATH` is short for
`--config.vocab.path=PATH` (a SentencePiece model or a Hugging Face tokenizer.json).
"""

from __future__ import annotations

import logging
import os
import sys

# Quiet TensorFlow (seqio's input pipeline) before anything imports it; it must not take the
# accelerator from JAX either.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local or gs://); resumed if "
                               "it holds a run.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs where JAX cannot detect the cluster (Cloud TPU, SLURM and others it can):
# every process gets the same coordinator and count, and its own id.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's JAX coordinator, for multi-process "
    "runs outside the clusters JAX detects; needs --num_processes and --process_id and implies "
    "--config.distributed=True.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (with "
                                      "--coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id, 0 .. num_processes - 1 "
                                   "(with --coordinator_address).")

# Short spellings of config overrides: `c.vocab` is a group (path, size), and its path is the
# one a user sets.
_ALIASES = {"--config.vocab": "--config.vocab.path"}


def expand_aliases(argv: list[str]) -> list[str]:
  """`argv` with each aliased flag (`--config.vocab=PATH`) spelled out in full."""
  out = []
  for arg in argv:
    name, eq, value = arg.partition("=")
    out.append(_ALIASES[name] + eq + value if name in _ALIASES else arg)
  return out


def distributed_options(coordinator_address: str | None, num_processes: int | None,
                        process_id: int | None) -> dict:
  """`jax.distributed.initialize` arguments from the command line ({} when none is given).

  Raises:
    app.UsageError: some but not all of the three are given, or they do not fit together.
  """
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  if all(v is None for v in given.values()):
    return {}
  missing = [f"--{k}" for k, v in given.items() if v is None]
  if missing:
    raise app.UsageError(f"a multi-process run needs --coordinator_address, --num_processes and "
                         f"--process_id together; missing {', '.join(missing)}")
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit():
    raise app.UsageError(f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise app.UsageError(f"need 0 <= --process_id < --num_processes, got {process_id} and "
                         f"{num_processes}")
  return given


def _setup_logging(workdir: str) -> None:
  from etils import epath
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  for handler in list(root.handlers):
    root.removeHandler(handler)
  console = logging.StreamHandler(sys.stderr)
  console.setFormatter(fmt)
  root.addHandler(console)
  if not workdir.startswith("gs://"):
    log_file = logging.FileHandler(os.path.join(workdir, "log.txt"))
    log_file.setFormatter(fmt)
    root.addHandler(log_file)
  for noisy in ("absl", "jax._src", "orbax", "tensorflow", "matplotlib", "PIL"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed = distributed_options(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  _setup_logging(_WORKDIR.value)
  from restem_jax import loop  # after flag parsing: keeps --help fast
  loop.run(_CONFIG.value, _WORKDIR.value, distributed_options=distributed)


def run() -> None:
  """Entry point of the `restem` console script."""
  sys.argv = expand_aliases(sys.argv)  # config_flags reads the overrides from sys.argv itself
  app.run(main)


if __name__ == "__main__":
  run()
