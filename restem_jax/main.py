"""The ReST^EM command line.

  python -m restem_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

(also installed as the console script `restem`). Re-running the same command on the same DIR
resumes the run where it stopped. The resolved config is saved as DIR/config.json; an unknown
`--config.KEY` is an error (the config is locked). `--config.vocab=PATH` is short for
`--config.vocab.path=PATH` (a SentencePiece model or a Hugging Face tokenizer.json).

Expected failures (a bad flag or config key, a broken config file, a missing or malformed data
file, an empty split, a workdir that cannot be written or holds something else, a missing
checkpoint) print one or two lines and exit with status 2; Ctrl-C exits 130 (the same command
resumes). `--debug` (or RESTEM_DEBUG=1) shows tracebacks and the libraries' console output.
A finished run, run again, prints its results and exits 0.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import traceback

# Quiet TensorFlow (seqio's input pipeline) before anything imports it; it must not take the
# accelerator from JAX either.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from restem_jax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local or gs://); resumed if "
                               "it holds a run.")
flags.mark_flags_as_required(["config", "workdir"])
cli.define_debug_flag()
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


def _unwrap(error: BaseException) -> str:
  """The innermost message of an exception that wraps exceptions (ml_collections does)."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  if text.startswith(("'", '"')):  # a KeyError's repr of its message
    try:
      text = ast.literal_eval(text.split("\n")[0]) + "\n" + "\n".join(text.split("\n")[1:])
    except (ValueError, SyntaxError):
      pass
  return text.strip()


def _short(text: str) -> str:
  """ml_collections' messages on one line: no dump of the other fields, the suggestion kept."""
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  first = text.split(" Other fields present")[0].split("\n")[0].strip()
  if suggestion:
    first += f" (did you mean {suggestion.group(1)!r}?)"
  return first if len(first) <= 300 else first[:297] + "..."


def flag_error_message(error: BaseException, argv: list[str]) -> str:
  """One line for an error raised while parsing the command line and loading the config.

  Unknown `--config.KEY`: the flag and the closest key. An error in the config file: the file
  and line. Anything else: the flags library's message.
  """
  config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  config_file = config_arg.split(":", 1)[0] if config_arg else None
  if config_file and not os.path.isfile(config_file):
    return (f"--config: {config_file} " + ("is a directory" if os.path.isdir(config_file)
                                            else "does not exist") +
            "; give a config file such as configs/demo.py")
  if isinstance(error, (AttributeError, KeyError)):
    text = _unwrap(error)
    first = text.split("\n")[0].strip("'\"")
    overrides = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
    flag = next((o for o in overrides if first in o[len("--config."):].split(".")), None)
    if flag is not None:
      suggestion = re.search(r'Did you mean "([^"]+)"', text)
      hint = ""
      if suggestion:
        parts = flag[len("--config."):].split(".")
        parts[parts.index(first)] = suggestion.group(1)
        hint = f" (did you mean --config.{'.'.join(parts)}?)"
      return f"{flag}: no such config key{hint}"
  if config_file and (isinstance(error, SyntaxError) or any(
      os.path.abspath(f.filename) == os.path.abspath(config_file)
      for f in traceback.extract_tb(error.__traceback__))):
    where = cli.where_in_file(error, config_file)
    detail = error.msg if isinstance(error, SyntaxError) else _short(_unwrap(error))
    return f"{where}: {type(error).__name__}: {detail}"
  if isinstance(error, flags.Error):
    text = str(error)
    if config_file and "Traceback" in text:  # config_flags: the config file's get_config raised
      lines = [line for line in text.strip().splitlines() if line.strip()]
      frames = re.findall(r'File "([^"]+)", line (\d+)', text)
      lineno = next((n for f, n in reversed(frames)
                     if os.path.abspath(f) == os.path.abspath(config_file)), None)
      return f"{config_file}" + (f":{lineno}" if lineno else "") + f": {lines[-1].strip()}"
    return text
  return f"--config={config_arg}: {type(error).__name__}: {_short(_unwrap(error))}"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every failure as one line (UserError) naming the flag or file."""
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value.keys()  # config_flags keeps a config file's load failure for the first use
    return rest
  except Exception as e:  # pylint: disable=broad-except: parsing runs the user's config file
    raise cli.UserError(flag_error_message(e, argv)) from e


def main(argv) -> None:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])} (config overrides are "
                        f"--config.KEY=VALUE)")
  try:
    distributed = distributed_options(_COORDINATOR.value, _NUM_PROCESSES.value,
                                      _PROCESS_ID.value)
  except app.UsageError as e:
    raise cli.UserError(str(e)) from e
  workdir, config = _WORKDIR.value, _CONFIG.value
  from restem_jax.loop import preflight, run_dir  # pylint: disable=g-import-not-at-top
  cli.check_writable_dir(workdir, "--workdir")
  run_dir.check_owned(workdir)
  if run_dir.is_finished(workdir, json.loads(config.to_json_best_effort())):
    print(run_dir.finished_message(workdir), flush=True)
    return
  preflight.check_inputs(config)  # seconds, before TensorFlow and the loop load
  cli.setup_logging(None if "://" in workdir else os.path.join(workdir, run_dir.LOG_FILE),
                    stderr_filter=_STDERR_FILTER)
  from restem_jax import loop  # after flag parsing: keeps --help fast
  loop.run(config, workdir, distributed_options=distributed)


_STDERR_FILTER: cli.StderrFilter | None = None


def run() -> None:
  """Entry point of the `restem` console script (exit status 0, 2 bad input, 130 Ctrl-C)."""
  global _STDERR_FILTER
  sys.argv = expand_aliases(sys.argv)  # config_flags reads the overrides from sys.argv itself
  _STDERR_FILTER = cli.quiet_native_stderr(sys.argv)
  status = cli.run_main(lambda: app.run(main, argv=sys.argv, flags_parser=_parse_flags),
                        sys.argv, resumable=True,
                        on_exit=_STDERR_FILTER.close if _STDERR_FILTER else None)
  sys.exit(status)


if __name__ == "__main__":
  run()
