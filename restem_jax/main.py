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
  _setup_logging(_WORKDIR.value)
  from restem_jax import loop  # after flag parsing: keeps --help fast
  loop.run(_CONFIG.value, _WORKDIR.value)


def run() -> None:
  """Entry point of the `restem` console script."""
  sys.argv = expand_aliases(sys.argv)  # config_flags reads the overrides from sys.argv itself
  app.run(main)


if __name__ == "__main__":
  run()
