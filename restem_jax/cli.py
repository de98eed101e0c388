"""What every command line shares: errors a person can read, a quiet console, Ctrl-C.

  def main(argv) -> int: ...                       # the CLI's own work
  sys.exit(cli.run_main(lambda: main(argv), argv))

`run_main` turns the expected failures into one or two lines on stderr and exit status 2:
`UserError` (raise it with a message that names the file, line or key and says what to do),
`file_io.FormatError` (FILE:LINE: ...), a missing file or directory, a permission refused, and
absl's flag errors. Ctrl-C exits 130 with one line (and, for resumable commands, the word that
the same command resumes). Anything else is a bug: its traceback is shown. `--debug` on the
command line or `RESTEM_DEBUG=1` in the environment shows every traceback.

`quiet_native_stderr` filters the C++ libraries' informational lines (SentencePiece, TensorFlow,
XLA) out of file descriptor 2, and `setup_logging` writes log lines through tqdm so they never
land inside a progress bar.

This module imports only the standard library, absl and tqdm at load time, so a CLI can use it
before JAX or TensorFlow start.
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

import tqdm

from restem_jax import file_io

DEBUG_ENV = "RESTEM_DEBUG"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
  """An expected failure of a command: bad input, a missing file, a refused workdir.

  The message is what the person reads: one or two lines naming the file (and line) or the
  config key, and what to do. A subclass of ValueError, so code that documents "raises
  ValueError for invalid input" may raise it without changing its contract.
  """


def define_debug_flag() -> None:
  """Defines absl's `--debug` once per process (several CLI modules may be imported together)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "debug" not in flags.FLAGS:
    flags.DEFINE_bool("debug", False, "Show tracebacks and the libraries' console output (also "
                      "RESTEM_DEBUG=1).")


def debug_requested(argv: Sequence[str] | None = None) -> bool:
  """True when tracebacks are wanted: `--debug` in argv, or RESTEM_DEBUG set to a true value."""
  argv = sys.argv if argv is None else argv
  flag = any(a in ("--debug", "--debug=true", "--debug=True", "--debug=1") for a in argv[1:])
  return flag or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def strip_debug(argv: Sequence[str]) -> list[str]:
  """argv without the `--debug` switch (for parsers that do not define it)."""
  return [a for a in argv if a.split("=")[0] not in ("--debug", "--nodebug")]


def describe(error: BaseException) -> str | None:
  """The one-line message of an expected failure, or None for anything else (a bug)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if isinstance(error, UserError):
    return str(error)
  if isinstance(error, file_io.FormatError):
    return str(error)
  if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                        PermissionError, FileExistsError)):
    if error.filename is not None and error.strerror:
      return f"{error.filename}: {error.strerror}"
    return str(error)
  if isinstance(error, flags.Error):
    return str(error)
  return None


_INTERRUPTED = threading.Event()


def _on_ctrl_c(signum, frame) -> None:
  """SIGINT: remembered, then KeyboardInterrupt as by default (`check_interrupted`)."""
  del signum, frame
  _INTERRUPTED.set()
  raise KeyboardInterrupt


def check_interrupted() -> None:
  """Raises KeyboardInterrupt if Ctrl-C came during `run_main` and the exception it raised was
  lost (raised inside a callback or finalizer that library code ran and swallowed); long
  commands call this at their checkpoints (`run_dir.stage`), so one Ctrl-C always stops them."""
  if _INTERRUPTED.is_set():
    raise KeyboardInterrupt


def run_main(fn: Callable[[], int | None], argv: Sequence[str] | None = None, *,
             resumable: bool = False, on_exit: Callable[[], None] | None = None) -> int:
  """Runs a CLI's work and returns its exit status, reporting expected failures in one line.

  Args:
    fn: the command's work; returns an exit status (None is 0).
    argv: the command line (for `--debug`); default sys.argv.
    resumable: Ctrl-C says that rerunning the same command resumes.
    on_exit: called last in every case (e.g. to stop the stderr filter).

  Returns:
    fn's status; 2 for an expected failure; 130 for Ctrl-C. With `--debug` or RESTEM_DEBUG,
    exceptions propagate with their tracebacks.
  """
  debug = debug_requested(argv)
  _INTERRUPTED.clear()
  own_handler = (threading.current_thread() is threading.main_thread()
                 and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
  if own_handler:  # not where SIGINT is ignored (a background job) or handled by the caller
    signal.signal(signal.SIGINT, _on_ctrl_c)
  try:
    status = fn()
    return 0 if status is None else int(status)
  except KeyboardInterrupt:
    if debug:
      raise
    _close_bars()
    print("interrupted" + ("; run the same command again to resume where it stopped"
                             if resumable else ""), file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED
  except SystemExit as e:  # absl and argparse exit with a status, or a message of their own
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr, flush=True)
    return 1
  except Exception as e:  # pylint: disable=broad-except: sorted into expected and bugs below
    message = describe(e)
    if message is None or debug:
      raise
    _close_bars()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE
  finally:
    if own_handler:
      signal.signal(signal.SIGINT, signal.default_int_handler)
    if on_exit is not None:
      on_exit()


def _close_bars() -> None:
  """Closes live progress bars (each ends its line) so that a last message stands alone."""
  for bar in list(getattr(tqdm.tqdm, "_instances", ())):
    try:
      bar.close()
    except Exception:  # pylint: disable=broad-except: a bar must not hide the message
      pass
  _flush()


def _flush() -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass


def where_in_file(error: BaseException, path: str) -> str:
  """"PATH:LINE" of the innermost frame of `error`'s traceback in file `path` (else PATH)."""
  if isinstance(error, SyntaxError) and error.filename and error.lineno:
    return f"{error.filename}:{error.lineno}"
  target = os.path.abspath(path)
  line = None
  for frame in traceback.extract_tb(error.__traceback__):
    if os.path.abspath(frame.filename) == target:
      line = frame.lineno
  return f"{path}:{line}" if line else path


# ----------------------------------------------------------------------------- console

# Informational lines of the C++ libraries under us: SentencePiece's model loading (once per
# load, dozens a run), absl/TensorFlow/XLA INFO and WARNING lines (oneDNN, "Could not find cuda
# drivers", factory registrations). Errors and fatal lines (E..., F...) are kept.
NOISE = re.compile(
    r"^(?:normalizer\.cc\(\d+\) LOG\(INFO\)"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] [\w./-]+:\d+\] "
    r"|E\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] Unable to register cu\w+ factory"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|This TensorFlow binary is optimized to use available CPU instructions)")


class StderrFilter:
  """Replaces file descriptor 2 by a pipe and copies it to the real stderr, minus `NOISE`.

  Works for output of C++ code and of child processes, which Python's sys.stderr never sees.
  Lines dropped go to `sink` when one is set (e.g. the run's log file). Progress-bar redraws
  (text after a carriage return) pass through at once; other partial lines after 0.2 s.
  """

  def __init__(self, noise: re.Pattern = NOISE):
    self._noise = noise
    self.sink: Callable[[str], None] | None = None
    _flush()
    self._saved = os.dup(2)
    self._out = os.fdopen(os.dup(self._saved), "wb", buffering=0)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    self._read_fd = read_fd
    self._thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
    self._thread.start()

  def _pump(self) -> None:
    pending = b""
    while True:
      ready, _, _ = select.select([self._read_fd], [], [], 0.2 if pending else None)
      if not ready:
        self._write(pending)
        pending = b""
        continue
      chunk = os.read(self._read_fd, 1 << 16)
      if not chunk:
        break
      pending += chunk
      *lines, pending = pending.split(b"\n")
      for line in lines:
        self._line(line + b"\n")
      if b"\r" in pending:  # a progress bar's redraw: never a library's log line
        self._write(pending)
        pending = b""
    self._write(pending)
    os.close(self._read_fd)

  def _line(self, line: bytes) -> None:
    text = line.decode("utf-8", "replace")
    if self._noise.search(text.lstrip("\r")):
      if self.sink is not None:
        try:
          self.sink(text.rstrip("\n"))
        except Exception:  # pylint: disable=broad-except: a log file must not stop the console
          pass
      return
    self._write(line)

  def _write(self, data: bytes) -> None:
    try:
      if data:
        self._out.write(data)
    except OSError:
      pass

  def close(self) -> None:
    """Restores file descriptor 2 and drains what is left (waits at most 2 s for children)."""
    _flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    self._thread.join(timeout=2)


def quiet_native_stderr(argv: Sequence[str] | None = None) -> StderrFilter | None:
  """Starts the stderr filter unless tracebacks and everything else are wanted (`--debug`).

  The terminal's size is kept for progress bars (COLUMNS / LINES), which otherwise see a pipe.
  """
  if debug_requested(argv):
    return None
  try:
    size = os.get_terminal_size(2)
    os.environ.setdefault("COLUMNS", str(size.columns))
    os.environ.setdefault("LINES", str(size.lines))
  except OSError:
    pass
  try:
    return StderrFilter()
  except OSError:
    return None


class TqdmHandler(logging.StreamHandler):
  """A logging handler that writes through `tqdm.write`, which lifts live progress bars off the
  line, writes the log line, and draws the bars again below it."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      tqdm.tqdm.write(self.format(record), file=self.stream)
    except Exception:  # pylint: disable=broad-except: logging's own convention
      self.handleError(record)


QUIET_LOGGERS = ("absl", "jax._src", "orbax", "tensorflow", "matplotlib", "PIL", "h5py",
                 "urllib3", "fsspec", "etils")


def setup_logging(log_file: str | None = None, level: int = logging.INFO,
                  stderr_filter: StderrFilter | None = None) -> None:
  """Root logging: "HH:MM:SS LEVEL message" on stderr through tqdm, and to `log_file`.

  The libraries' chatter (absl, JAX internals, Orbax, TensorFlow, ...) is shown from WARNING
  up. Lines the stderr filter drops go to the log file, marked "native:".
  """
  fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
  root = logging.getLogger()
  root.setLevel(level)
  for handler in list(root.handlers):
    root.removeHandler(handler)
  console = TqdmHandler(sys.stderr)
  console.setFormatter(fmt)
  root.addHandler(console)
  if log_file is not None:
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    if stderr_filter is not None:
      native = logging.getLogger("restem.native")
      native.propagate = False
      native.handlers = [file_handler]
      native.setLevel(logging.INFO)
      stderr_filter.sink = lambda line: native.info("native: %s", line)
  for noisy in QUIET_LOGGERS:
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)
  except ImportError:
    pass


# ----------------------------------------------------------------------------- common checks

# checkpoints.CONFIG_FILE and COMPLETE_FILE, spelled here so that a CLI checks a checkpoint
# before JAX and Orbax load (tests/test_cli_errors.py checks they agree).
CHECKPOINT_CONFIG_FILE = "model_config.json"
CHECKPOINT_COMPLETE_FILE = "COMPLETE"


def check_checkpoint(path: str, what: str) -> None:
  """Raises UserError unless `path` is a complete model checkpoint directory.

  Args:
    path: the directory (local or gs://).
    what: how the person gave it, e.g. "--checkpoint" or "--config.base_checkpoint".
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  directory = epath.Path(path)
  if not directory.exists():
    raise UserError(f"{what}: {path} does not exist; give a model checkpoint directory (a run's "
                    f"train/NAME/best_model, or one written by python -m restem_jax.convert)")
  if not directory.is_dir():
    raise UserError(f"{what}: {path} is a file; give a model checkpoint directory")
  if not (directory / CHECKPOINT_CONFIG_FILE).exists():
    raise UserError(f"{what}: {path} is not a model checkpoint (no {CHECKPOINT_CONFIG_FILE}); "
                    f"a Hugging Face model needs python -m restem_jax.convert hf-to-orbax first")
  if not (directory / CHECKPOINT_COMPLETE_FILE).exists():
    raise UserError(f"{what}: {path} is an incomplete checkpoint (no "
                    f"{CHECKPOINT_COMPLETE_FILE} marker: its save was interrupted)")


def check_writable_dir(path: str, what: str) -> None:
  """Creates `path` if needed and raises UserError unless a file can be written in it."""
  if "://" in path:
    return  # object stores: their errors come with the first write
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{what}: {path} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{os.getpid()}")
    with open(probe, "w", encoding="utf-8"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"{what}: cannot write to {path} ({e.strerror or e}); choose a directory "
                    f"you can write to") from e
