"""OS isolation for untrusted code: every run is a fresh process tree in its own namespaces.

Backends, best first (`detect_isolation` probes them once per process):
  bwrap    bubblewrap: new user, pid, net, ipc, uts and cgroup namespaces; the file system is
           read-only system directories, a size-limited tmpfs at /tmp (the only writable place),
           a minimal read-only /dev and no /proc; no capabilities, no nested user namespaces, a
           seccomp filter that denies ptrace and process_vm_readv/writev.
  unshare  util-linux `unshare` with new user, pid, net, ipc and uts namespaces;
           `_sandbox_init.py` builds the same file system view with mount(2) and chroot(2), drops
           every capability and makes the harness non-dumpable (no ptrace).
  none     no isolation, only resource limits and a process group. Refused unless the caller
           passes allow_unsandboxed=True, and then logged loudly: untrusted code could read and
           delete your files, use the network and leave processes behind.

In all backends the program runs as `python -I -S -B -X utf8` (no site-packages, no
environment, no bytecode writes) with resource limits set before it starts (`Limits`). When the
judge runs as root it drops to uid/gid 65534 (nobody) before creating the sandbox: the kernel
does not apply RLIMIT_NPROC to root, and a fork bomb must hit that limit. Killing the sandbox's
first process ends everything in it: bwrap (--die-with-parent) and unshare (--kill-child) then
kill the namespace's init, and the kernel kills every process in a pid namespace whose init dies.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import marshal
import os
import platform
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

BACKENDS = ("bwrap", "unshare", "none")
_NOBODY = 65534
_HERE = os.path.dirname(os.path.abspath(__file__))
# System directories the sandboxed interpreter needs, mounted read-only at the same paths.
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


class SandboxUnavailableError(RuntimeError):
  """No OS isolation works here and running without it was not allowed."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one sandboxed run (each process in it gets the rlimits).

  Attributes:
    memory_bytes: address space per process (RLIMIT_AS).
    max_processes: processes and threads in the sandbox (RLIMIT_NPROC, counted per sandbox).
    max_file_bytes: largest file a process may write (RLIMIT_FSIZE).
    max_open_files: open file descriptors per process (RLIMIT_NOFILE).
    cpu_s: CPU seconds per process (RLIMIT_CPU; the kernel sends SIGKILL at the limit).
    tmpfs_bytes: size of the writable /tmp (bwrap and unshare only).
  """
  memory_bytes: int = 1 << 30
  max_processes: int = 32
  max_file_bytes: int = 16 << 20
  max_open_files: int = 128
  cpu_s: int = 60
  tmpfs_bytes: int = 64 << 20

  def rlimits(self) -> dict[str, int]:
    return {"RLIMIT_AS": self.memory_bytes, "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_FSIZE": self.max_file_bytes, "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_CPU": self.cpu_s, "RLIMIT_CORE": 0}


# Runs the program's code object, given as hex of marshal data in argv[1].
_BOOTSTRAP = "import marshal,sys;exec(marshal.loads(bytes.fromhex(sys.argv.pop(1))))"


@functools.lru_cache(maxsize=None)
def _init_source() -> str:
  with open(os.path.join(_HERE, "_sandbox_init.py"), encoding="utf-8") as f:
    return f.read()


@functools.lru_cache(maxsize=64)
def _compiled(python: str, source: str) -> str:
  """Hex of the marshalled code of `_sandbox_init.py` + source, compiled by `python` itself.

  Compiling once instead of at every start saves a few ms per sample; marshal data of code is
  specific to the interpreter version, hence the sandbox's interpreter does it. Our own code
  only: nothing untrusted runs here.
  """
  result = subprocess.run(
      [python, "-I", "-S", "-B", "-c", "import marshal,sys;sys.stdout.write(marshal.dumps("
       "compile(sys.stdin.read(),'<sandbox>','exec')).hex())"],
      input=_init_source() + "\n" + source, capture_output=True, text=True, check=True)
  return result.stdout


def _world_accessible(path: str) -> bool:
  """Whether uid nobody can reach and read path (every parent directory searchable by others)."""
  path = os.path.realpath(path)
  try:
    if not os.stat(path).st_mode & stat.S_IROTH:
      return False
    parent = os.path.dirname(path)
    while True:
      if not os.stat(parent).st_mode & stat.S_IXOTH:
        return False
      if parent == "/":
        return True
      parent = os.path.dirname(parent)
  except OSError:
    return False


@functools.lru_cache(maxsize=None)
def sandbox_python(drop_privileges: bool) -> tuple[str, str]:
  """(interpreter, its installation prefix) to run inside sandboxes.

  The interpreter behind this venv if the sandbox user can read it, else the system python3
  (e.g. a pyenv build under /root is not readable by nobody). Only its standard library is used.
  """
  candidates = [getattr(sys, "_base_executable", sys.executable), sys.executable,
                shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"]
  for candidate in candidates:
    binary = os.path.realpath(candidate)
    prefix = os.path.dirname(os.path.dirname(binary))
    if not os.access(binary, os.X_OK):
      continue
    if drop_privileges and not (_world_accessible(binary) and _world_accessible(prefix)):
      continue
    return binary, prefix
  raise SandboxUnavailableError("no Python interpreter that the sandbox user can run")


def _ro_paths(prefix: str) -> list[str]:
  paths = [p for p in _SYSTEM_PATHS if os.path.lexists(p)]
  if not any(prefix == p or prefix.startswith(p + "/") for p in paths):
    paths.append(prefix)
  return paths


# Syscalls the seccomp filter denies (EPERM) under bwrap: the program's processes run as the same
# uid as the harness and must not read or write its memory. Numbers per architecture.
_DENIED_SYSCALLS = {
    "x86_64": (0xC000003E, {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311}),
    "aarch64": (0xC00000B7, {"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271}),
}


@functools.lru_cache(maxsize=None)
def seccomp_program() -> bytes | None:
  """A classic-BPF seccomp filter for bwrap's --seccomp, or None on other architectures.

  Kills a process that makes a system call of another ABI (e.g. 32-bit int 0x80 calls, whose
  numbers differ) and denies the x32 ABI on x86_64, so the denied calls cannot be reached by
  another number.
  """
  machine = platform.machine()
  if machine not in _DENIED_SYSCALLS:
    return None
  audit_arch, denied = _DENIED_SYSCALLS[machine]
  load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
  allow, eperm, kill = 0x7FFF0000, 0x00050000 | 1, 0x80000000
  program = [(load, 0, 0, 4), (jeq, 1, 0, audit_arch), (ret, 0, 0, kill), (load, 0, 0, 0)]
  if machine == "x86_64":
    program += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]
  for number in denied.values():
    program += [(jeq, 0, 1, number), (ret, 0, 0, eperm)]
  program.append((ret, 0, 0, allow))
  return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def _drop_privileges() -> bool:
  return os.geteuid() == 0


def _command(backend: str, source: str, args: list[str], limits: Limits,
             seccomp_fd: int | None = None) -> list[str]:
  """The argv that runs `source` (Python code) with args under the backend's isolation.

  seccomp_fd: bwrap only, a readable fd holding `seccomp_program()`; without one the harness
  makes itself non-dumpable instead.
  """
  drop = _drop_privileges()
  python, prefix = sandbox_python(drop and backend != "none")
  ro_paths = _ro_paths(prefix)
  config = {"rlimits": limits.rlimits(), "unshare": backend == "unshare",
            "undumpable": backend == "bwrap" and seccomp_fd is None,
            "ro_paths": ro_paths, "tmpfs_bytes": limits.tmpfs_bytes}
  inner = [python, "-I", "-S", "-B", "-X", "utf8", "-c", _BOOTSTRAP, _compiled(python, source),
           marshal.dumps(config).hex(), *args]
  if backend == "bwrap":
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--hostname", "sandbox", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    if seccomp_fd is not None:
      argv += ["--seccomp", str(seccomp_fd)]
    for path in ro_paths:
      if os.path.islink(path):
        argv += ["--symlink", os.readlink(path), path]
      else:
        argv += ["--ro-bind", path, path]
    # bwrap's /dev is a tmpfs: read-only too, so /tmp stays the only writable place.
    argv += ["--dev", "/dev", "--remount-ro", "/dev", "--size", str(limits.tmpfs_bytes),
             "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp", "--"]
    return argv + inner
  if backend == "unshare":
    return ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child",
            "--net", "--ipc", "--uts", "--"] + inner
  if backend == "none":
    return inner
  raise ValueError(f"unknown sandbox backend {backend!r}; known: {BACKENDS}")


class SandboxRun:
  """One running sandbox: feeds its stdin, yields its stdout frames, kills it on close.

  Use as a context manager; leaving the block kills the whole process tree.
  """

  def __init__(self, argv: list[str], isolation: str, max_stdout_bytes: int,
               pass_fds: tuple[int, ...] = ()):
    self.isolation = isolation
    self.timed_out = False
    self.overflowed = False
    self.max_stdout_bytes = max_stdout_bytes
    self._stdout_total = 0
    self._pending = b""
    self._buffer = b""
    self._stderr_tail = b""
    drop = _drop_privileges() and isolation != "none"
    setpriv = shutil.which("setpriv") if drop else None
    if setpriv:
      # setpriv changes uid in the new process, so Popen can use vfork (Popen(user=...) must
      # fork, copying the page tables of a judge process that may hold gigabytes of JAX).
      argv = [setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--"] + argv
    # Without isolation there is no private /tmp: the program at least gets its own directory.
    self._workdir = tempfile.mkdtemp(prefix="restem-unsandboxed-") if isolation == "none" \
        else None
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if self._workdir:
      env.update(HOME=self._workdir, TMPDIR=self._workdir)
    self._proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, cwd=self._workdir or "/", close_fds=True, pass_fds=pass_fds,
        start_new_session=True, user=_NOBODY if drop and not setpriv else None,
        group=_NOBODY if drop and not setpriv else None,
        extra_groups=[] if drop and not setpriv else None)
    self._selector = selectors.DefaultSelector()
    for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
      os.set_blocking(pipe.fileno(), False)
    self._selector.register(self._proc.stdout, selectors.EVENT_READ)
    self._selector.register(self._proc.stderr, selectors.EVENT_READ)
    self._stdin_open = True
    self._close_after_send = False

  def alive(self) -> bool:
    """Whether the sandbox's first process is still running."""
    return self._proc.poll() is None

  def __enter__(self) -> SandboxRun:
    return self

  def __exit__(self, *exc) -> None:
    self.kill()

  @property
  def stderr_tail(self) -> str:
    """The last few KB the sandbox wrote to stderr (setup errors, crashes)."""
    return self._stderr_tail.decode("utf-8", "replace")

  def send(self, data: bytes, close: bool = False) -> None:
    """Queues data for the sandbox's stdin (written while `frames` waits); close: then EOF."""
    self._pending += data
    if self._stdin_open and self._pending and self._proc.stdin not in self._registered():
      self._selector.register(self._proc.stdin, selectors.EVENT_WRITE)
    self._close_after_send = close
    if close and not self._pending:
      self._close_stdin()

  def _registered(self):
    return [key.fileobj for key in self._selector.get_map().values()]

  def _close_stdin(self) -> None:
    if self._stdin_open:
      if self._proc.stdin in self._registered():
        self._selector.unregister(self._proc.stdin)
      self._proc.stdin.close()
      self._stdin_open = False

  def frames(self, deadline: float) -> Iterator[bytes]:
    """Yields stdout frames (4-byte big-endian length, payload) until EOF, deadline or cap.

    Sets `timed_out` or `overflowed` when it stops for those reasons.
    """
    while True:
      while len(self._buffer) >= 4:
        length = int.from_bytes(self._buffer[:4], "big")
        if length > self.max_stdout_bytes:
          self.overflowed = True
          return
        if len(self._buffer) < 4 + length:
          break
        frame, self._buffer = self._buffer[4:4 + length], self._buffer[4 + length:]
        yield frame
      if self._proc.stdout not in self._registered():
        return
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        self.timed_out = True
        return
      for key, _ in self._selector.select(remaining):
        self._service(key.fileobj)
      if self._stdout_total > self.max_stdout_bytes:
        self.overflowed = True
        return

  def _service(self, pipe) -> None:
    if pipe is self._proc.stdin:
      try:
        written = os.write(pipe.fileno(), self._pending[:1 << 16])
      except BlockingIOError:
        return
      except BrokenPipeError:  # the sandbox died or stopped reading: nothing more to send
        self._pending = b""
        self._close_stdin()
        return
      self._pending = self._pending[written:]
      if not self._pending:
        self._selector.unregister(pipe)
        if self._close_after_send:
          self._close_stdin()
      return
    try:
      chunk = os.read(pipe.fileno(), 1 << 16)
    except BlockingIOError:
      return
    if not chunk:
      self._selector.unregister(pipe)
      return
    if pipe is self._proc.stdout:
      self._stdout_total += len(chunk)
      self._buffer += chunk
    else:
      self._stderr_tail = (self._stderr_tail + chunk)[-4096:]

  def kill(self) -> None:
    """Kills the sandbox's process tree and reaps it (idempotent)."""
    if self._proc.poll() is None:
      try:
        os.killpg(self._proc.pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        self._proc.kill()
    self._proc.wait()
    if self._workdir:
      shutil.rmtree(self._workdir, ignore_errors=True)
      self._workdir = None
    self._selector.close()
    for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
      try:
        pipe.close()
      except OSError:
        pass


def start(backend: str, source: str, args: list[str], limits: Limits,
          max_stdout_bytes: int = 64 << 20) -> SandboxRun:
  """Starts Python code in a sandbox.

  Args:
    backend: one of BACKENDS (`choose_backend` picks one).
    source: Python source (stdlib only, Python >= 3.8) to run after the isolation is set up.
    args: its sys.argv[1:].
    limits: the resource limits.
    max_stdout_bytes: `SandboxRun.frames` stops (sets `overflowed`) past this much stdout.

  Returns:
    The running sandbox; use it as a context manager so it is always killed.
  """
  program = seccomp_program() if backend == "bwrap" else None
  if program is None:
    return SandboxRun(_command(backend, source, args, limits), backend, max_stdout_bytes)
  read_fd, write_fd = os.pipe()
  try:
    os.write(write_fd, program)  # a few hundred bytes: fits in the pipe buffer
    os.close(write_fd)
    write_fd = None
    return SandboxRun(_command(backend, source, args, limits, seccomp_fd=read_fd), backend,
                      max_stdout_bytes, pass_fds=(read_fd,))
  finally:
    os.close(read_fd)
    if write_fd is not None:
      os.close(write_fd)


_PROBE_SOURCE = """
import os, socket
def report(text):
    data = text.encode()
    os.write(1, len(data).to_bytes(4, "big") + data)
try:
    open("/escaped", "w")
    report("root is writable")
except OSError:
    with open("/tmp/probe", "w") as f:
        f.write("x")
    try:
        socket.create_connection(("192.0.2.1", 9), timeout=0.5)
        report("network is reachable")
    except OSError:
        report("isolated")
"""


def probe(backend: str) -> str | None:
  """Runs a tiny program under a backend; None if it is isolated as promised, else why not."""
  if backend != "none" and shutil.which(backend) is None:
    return f"{backend} is not installed"
  try:
    with start(backend, _PROBE_SOURCE, [], Limits()) as run:
      run.send(b"", close=True)
      out = b"".join(run.frames(time.monotonic() + 30)).decode("utf-8", "replace")
      err = run.stderr_tail.strip()
  except (OSError, subprocess.CalledProcessError, SandboxUnavailableError) as e:
    return f"{backend} failed to start: {e}"
  if out != "isolated":
    return f"{backend} probe said {out or 'nothing'!r} {err[-300:]!r}"
  return None


@functools.lru_cache(maxsize=None)
def detect_isolation() -> str:
  """The best backend that works on this machine ("bwrap", "unshare" or "none"), cached."""
  for backend in ("bwrap", "unshare"):
    why_not = _cached_probe(backend)
    if why_not is None:
      return backend
    logging.info("sandbox backend %s unavailable: %s", backend, why_not)
  return "none"


def choose_backend(backend: str | None = None, allow_unsandboxed: bool = False) -> str:
  """Resolves the backend to use, refusing to run without isolation unless allowed.

  Args:
    backend: force one of BACKENDS (e.g. "unshare" to test the fallback); None: the best one.
    allow_unsandboxed: permit "none" (no isolation). Logged as an error-level warning.

  Returns:
    The backend name.

  Raises:
    SandboxUnavailableError: nothing isolates here (or the forced backend fails its probe) and
      allow_unsandboxed is False.
  """
  if backend is None:
    backend = detect_isolation()
  elif backend not in BACKENDS:
    raise ValueError(f"unknown sandbox backend {backend!r}; known: {BACKENDS}")
  elif backend != "none":
    why_not = _cached_probe(backend)
    if why_not is not None:
      raise SandboxUnavailableError(f"sandbox backend {backend} does not work here: {why_not}")
  if backend == "none":
    if not allow_unsandboxed:
      raise SandboxUnavailableError(
          "refusing to run model-written code without OS isolation (neither bubblewrap nor "
          "unshare with user namespaces was found working, or backend 'none' was asked for); "
          "install bubblewrap (apt-get install bubblewrap), or pass allow_unsandboxed=True "
          "only if you accept running it unisolated")
    logging.error(
        "RUNNING UNTRUSTED MODEL CODE WITHOUT OS ISOLATION (allow_unsandboxed=True): it can "
        "read and delete your files, use the network and leave processes running")
  return backend


@functools.lru_cache(maxsize=None)
def _cached_probe(backend: str) -> str | None:
  return probe(backend)
