"""OS isolation for untrusted code: containers that run each sample in fresh namespaces.

A `Container` is one long-lived sandbox process tree that serves samples one at a time (see
`_sandbox_init.py`): each sample runs as a fresh process tree, pid 1 of its own pid, mount, ipc
and net namespaces, with its own size-limited /tmp, no capabilities, a seccomp filter, and
resource limits; when it ends (or is killed at its deadline) the kernel kills every process it
started before the container reports back. Starting the container (namespaces, interpreter,
imports) is paid once, not per sample.

Backends, best first (`detect_isolation` probes them once per process):
  bwrap    bubblewrap: new user, pid, net, ipc, uts and cgroup namespaces; the file system is
           read-only system directories, a tmpfs at /tmp (each sample mounts its own over it),
           a minimal read-only /dev and no /proc; no nested user namespaces.
  unshare  util-linux `unshare` with new user, pid, net, ipc and uts namespaces;
           `_sandbox_init.py` builds the same file system view with mount(2) and chroot(2).
  none     no isolation, only resource limits. Refused unless the caller passes
           allow_unsandboxed=True, and then logged loudly: untrusted code could read and delete
           your files, use the network and leave processes behind.

In all backends the program runs as `python -I -S -B -X utf8` (no site-packages, no
environment, no bytecode writes). When the judge runs as root it drops to uid/gid 65534
(nobody) before creating the sandbox: the kernel does not apply RLIMIT_NPROC to root, and a
fork bomb must hit that limit (counted per container's user namespace, so per sample).
`Container.kill()` SIGKILLs the container's first process (pid 1 of its namespaces) through a
pidfd and returns once it has exited, i.e. once the kernel has killed everything inside.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import marshal
import os
import select
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

BACKENDS = ("bwrap", "unshare", "none")
_NOBODY = 65534
# Processes of a container besides the sample's candidate processes: its server, the sample's S,
# and the next sample's S and candidate side (prepared while this one runs).
_OWN_PROCESSES = 4
_OOM_SCORE_ADJ = 1000  # the most: sandbox processes are the OOM killer's first choice
KILLED_AT_DEADLINE = 250  # a sample's exit code when the container killed it at its deadline
NOT_STARTED = 251  # ... when the process prepared for it had died: nothing of it ran
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
    max_processes: processes and threads of a sample's program (RLIMIT_NPROC, counted per
      container, which runs one sample at a time; the container's own few come on top).
    max_file_bytes: largest file a process may write (RLIMIT_FSIZE).
    max_open_files: open file descriptors per process (RLIMIT_NOFILE).
    cpu_s: CPU seconds per process (RLIMIT_CPU; the kernel sends SIGKILL at the limit).
    tmpfs_bytes: size of each sample's writable /tmp (bwrap and unshare only).
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
_BOOTSTRAP = ("import marshal,sys,zlib;"
              "exec(marshal.loads(zlib.decompress(bytes.fromhex(sys.argv.pop(1)))))")


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
      [python, "-I", "-S", "-B", "-c",
       "import marshal,sys,zlib;sys.stdout.write(zlib.compress(marshal.dumps("
       "compile(sys.stdin.read(),'<sandbox>','exec')),9).hex())"],
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


def _drop_privileges() -> bool:
  return os.geteuid() == 0


def _command(backend: str, source: str, limits: Limits, preimport: tuple[str, ...]) -> list[str]:
  """The argv of a container that serves `source` (which defines `main()`) under backend."""
  drop = _drop_privileges()
  python, prefix = sandbox_python(drop and backend != "none")
  ro_paths = _ro_paths(prefix)
  rlimits = dict(limits.rlimits())
  rlimits["RLIMIT_NPROC"] += _OWN_PROCESSES
  config = {"rlimits": rlimits, "unshare": backend == "unshare",
            "namespaced": backend != "none", "ro_paths": ro_paths,
            "tmpfs_bytes": limits.tmpfs_bytes, "preimport": list(preimport)}
  inner = [python, "-I", "-S", "-B", "-X", "utf8", "-c", _BOOTSTRAP,
           _compiled(python, source + "\n_sbx_serve(main, globals().get('prepare'))\n"), marshal.dumps(config).hex()]
  if backend == "bwrap":
    # The container keeps capabilities in its own user namespace (to give each sample fresh
    # namespaces and a fresh /tmp); every sample drops them all before running anything.
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--cap-add", "ALL",
            "--as-pid-1", "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    for path in ro_paths:
      if os.path.islink(path):
        argv += ["--symlink", os.readlink(path), path]
      else:
        argv += ["--ro-bind", path, path]
    # bwrap's /dev is a tmpfs: read-only too, so /tmp stays the only writable place.
    argv += ["--dev", "/dev", "--remount-ro", "/dev", "--size", str(1 << 20),
             "--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp", "--"]
    return argv + inner
  if backend == "unshare":
    return ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child",
            "--net", "--ipc", "--uts", "--"] + inner
  if backend == "none":
    return inner
  raise ValueError(f"unknown sandbox backend {backend!r}; known: {BACKENDS}")


class ContainerDied(RuntimeError):
  """The container exited or stopped answering (not the sample's fault: nothing of it ran)."""


class Container:
  """A long-lived sandbox that runs samples one at a time, each in fresh namespaces.

  See `_sandbox_init.py` for what happens inside. Not thread-safe: one user at a time (the
  judge's pool hands each container to one thread). `kill()` ends it and everything in it, and
  returns only once every process in it is gone.
  """

  def __init__(self, backend: str, source: str, limits: Limits,
               preimport: tuple[str, ...] = (), tag: str = "",
               start_timeout_s: float = 60.0):
    """Starts a container (blocks until it is ready).

    Args:
      backend: one of BACKENDS.
      source: Python source defining `main()` (and optionally `prepare()`), run per sample.
      limits: each sample's resource limits.
      preimport: modules the container imports once, so samples find them loaded.
      tag: an extra argument, so `ps` shows who owns the container.
      start_timeout_s: how long to wait for it to be ready.
    """
    self.isolation = backend
    self.samples = 0
    argv = _command(backend, source, limits, preimport) + ([tag] if tag else [])
    drop = _drop_privileges() and backend != "none"
    setpriv = shutil.which("setpriv") if drop else None
    if setpriv:
      # setpriv changes uid in the new process, so Popen can use vfork (Popen(user=...) must
      # fork, copying the page tables of a judge process that may hold gigabytes of JAX).
      argv = [setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--"] + argv
    # A sample may hold memory_bytes in each of its processes: if the machine runs out, the
    # kernel's OOM killer must take the sandbox's processes, not the judge (which may hold a
    # model). oom_score_adj is inherited by every process forked in the container.
    choom = shutil.which("choom")
    if choom:
      argv = [choom, "-n", str(_OOM_SCORE_ADJ), "--"] + argv
    # Without isolation there is no private /tmp: the program at least gets its own directory.
    self._workdir = tempfile.mkdtemp(prefix="restem-unsandboxed-") if backend == "none" \
        else None
    if self._workdir and drop:
      os.chown(self._workdir, _NOBODY, _NOBODY)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if self._workdir:
      env.update(HOME=self._workdir, TMPDIR=self._workdir)
    self._ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    self._ctl.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    self._stderr = tempfile.TemporaryFile()
    self._pidfd = None
    self.pid: int | None = None
    try:
      self._proc = subprocess.Popen(
          argv, stdin=theirs, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env,
          cwd=self._workdir or "/", close_fds=True, start_new_session=True,
          user=_NOBODY if drop and not setpriv else None,
          group=_NOBODY if drop and not setpriv else None,
          extra_groups=[] if drop and not setpriv else None)
    finally:
      theirs.close()
    try:
      message, pid = self._receive(time.monotonic() + start_timeout_s)
      if message != b"ready" or pid is None:
        raise ContainerDied(f"the sandbox did not start: {message!r} {self.stderr_tail()!r}")
      # The container's first process (pid 1 of its namespaces): once it has exited, the
      # kernel has killed and reaped every process in the container. (Without pidfds, Linux
      # < 5.3, kill() falls back to killing the launcher, whose death kills it.)
      try:
        self._pidfd = os.pidfd_open(pid)
      except (AttributeError, OSError):
        self._pidfd = None
      self.pid = pid
      if not choom:  # later than choom would: the first process prepared for a sample has 0
        try:
          with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(_OOM_SCORE_ADJ))
        except OSError:
          pass
    except BaseException:
      self.kill()
      raise

  def stderr_tail(self) -> str:
    """The last KB the container wrote to stderr (start-up errors)."""
    try:
      self._stderr.seek(0, os.SEEK_END)
      size = self._stderr.tell()
      self._stderr.seek(max(0, size - 1024))
      return self._stderr.read().decode("utf-8", "replace").strip()
    except (OSError, ValueError):
      return ""

  def _receive(self, deadline: float) -> tuple[bytes, int | None]:
    """(message, sender pid) of the container's next control message; ContainerDied at EOF or
    at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([self._ctl], [], [], remaining)[0]:
      raise ContainerDied("no answer from the sandbox in time")
    try:
      message, ancillary, _, _ = self._ctl.recvmsg(256, socket.CMSG_SPACE(12))
    except OSError as e:
      raise ContainerDied(f"the sandbox closed its control socket: {e}") from e
    if not message:
      raise ContainerDied(f"the sandbox exited: {self.stderr_tail()[-300:]}")
    pid = None
    for level, kind, data in ancillary:
      if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= 12:
        pid = struct.unpack("=iII", data[:12])[0]
    return message, pid

  def alive(self) -> bool:
    return self._proc.poll() is None

  def pids(self) -> set[int]:
    """Host pids of the container's own processes (its launcher and its server), not samples'."""
    return {p for p in (self._proc.pid, self.pid) if p is not None}

  def sample(self, kill_after_s: float, max_stdout_bytes: int) -> SampleRun:
    """Starts one sample; the container kills it (and all it started) after kill_after_s."""
    job_r, job_w = os.pipe()
    rep_r, rep_w = os.pipe()
    try:
      self._ctl.sendmsg([marshal.dumps({"kill_after_s": float(kill_after_s)})],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("2i", job_r, rep_w))])
    except OSError as e:
      for fd in (job_r, job_w, rep_r, rep_w):
        os.close(fd)
      raise ContainerDied(f"the sandbox is gone: {e}") from e
    os.close(job_r)
    os.close(rep_w)
    self.samples += 1
    return SampleRun(self, job_w, rep_r, max_stdout_bytes)

  def kill(self) -> None:
    """Kills the container and everything in it, and waits until all of it is gone."""
    if self._pidfd is not None:
      try:
        signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        select.select([self._pidfd], [], [], 10)
      except OSError:
        pass
      os.close(self._pidfd)
      self._pidfd = None
    if self._proc.poll() is None:
      try:
        os.killpg(self._proc.pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        self._proc.kill()
    self._proc.wait()
    if self._workdir:
      shutil.rmtree(self._workdir, ignore_errors=True)
      self._workdir = None
    self._ctl.close()
    self._stderr.close()


class SampleRun:
  """One sample in a container: feeds its job pipe, yields its report frames, reports its end.

  frames() stops at EOF of the report pipe, at the deadline (`timed_out`) or past the output
  cap (`overflowed`); finish() then waits for the container's word that every process of the
  sample is gone (`exit_code`).
  """

  def __init__(self, container: Container, job_w: int, rep_r: int, max_stdout_bytes: int):
    self.container = container
    self.timed_out = False
    self.overflowed = False
    self.exit_code: int | None = None
    self.max_stdout_bytes = max_stdout_bytes
    self._job_w, self._rep_r = job_w, rep_r
    os.set_blocking(job_w, False)
    os.set_blocking(rep_r, False)
    self._pending = b""
    self._close_after_send = False
    self._buffer = b""
    self._total = 0
    self._selector = selectors.DefaultSelector()
    self._selector.register(rep_r, selectors.EVENT_READ)

  def send(self, data: bytes, close: bool = False) -> None:
    """Queues data for the job pipe (written while `frames` waits); close: then EOF."""
    self._pending += data
    self._close_after_send = close
    if self._job_w is not None and self._pending:
      self._selector.register(self._job_w, selectors.EVENT_WRITE)

  def _close_job(self) -> None:
    if self._job_w is not None:
      if self._job_w in [k.fileobj for k in self._selector.get_map().values()]:
        self._selector.unregister(self._job_w)
      os.close(self._job_w)
      self._job_w = None

  def frames(self, deadline: float) -> Iterator[bytes]:
    """Yields report frames (4-byte big-endian length, payload) until EOF, deadline or cap."""
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
      if self._rep_r is None:
        return
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        self.timed_out = True
        return
      for key, _ in self._selector.select(remaining):
        if key.fileobj == self._job_w:
          self._write_job()
        else:
          self._read_report()
      if self._total > self.max_stdout_bytes:
        self.overflowed = True
        return

  def _write_job(self) -> None:
    try:
      written = os.write(self._job_w, self._pending[:1 << 16])
    except BlockingIOError:
      return
    except BrokenPipeError:  # the sample stopped reading: nothing more to send
      self._pending = b""
      self._close_job()
      return
    self._pending = self._pending[written:]
    if not self._pending:
      self._selector.unregister(self._job_w)
      if self._close_after_send:
        self._close_job()

  def _read_report(self) -> None:
    try:
      chunk = os.read(self._rep_r, 1 << 16)
    except BlockingIOError:
      return
    if not chunk:
      self._selector.unregister(self._rep_r)
      os.close(self._rep_r)
      self._rep_r = None
      return
    self._total += len(chunk)
    self._buffer += chunk

  def close(self) -> None:
    """Closes both pipes (a sample still writing gets EPIPE and ends); idempotent."""
    self._close_job()
    if self._rep_r is not None:
      self._selector.unregister(self._rep_r)
      os.close(self._rep_r)
      self._rep_r = None
    self._selector.close()

  def finish(self, deadline: float) -> bool:
    """Closes both pipes and waits for the container to say the sample's processes are all
    gone. False (and the container must be killed) if that does not happen by the deadline."""
    self.close()
    try:
      message, _ = self.container._receive(deadline)  # pylint: disable=protected-access
    except ContainerDied:
      self.timed_out = self.timed_out or time.monotonic() >= deadline
      return False
    parts = message.split()
    if len(parts) != 2 or parts[0] != b"exit" or not parts[1].isdigit():
      return False
    self.exit_code = int(parts[1])
    if self.exit_code == KILLED_AT_DEADLINE:
      self.timed_out = True
    return True


_PROBE_SOURCE = """
import os, socket
def main():
    def report(text):
        data = text.encode()
        os.write(1, len(data).to_bytes(4, "big") + data)
    os.read(0, 1)
    try:
        open("/escaped", "w")
        return report("root is writable")
    except OSError:
        pass
    with open("/tmp/probe", "w") as f:
        f.write("x")
    if _NAMESPACED and _sbx_platform.machine() in _SBX_SYSCALLS:
        number = _SBX_SYSCALLS[_sbx_platform.machine()][1]["pidfd_open"]
        if _SBX_LIBC.syscall(number, os.getpid(), 0) >= 0:
            return report("the seccomp filter is not active")
    try:
        socket.create_connection(("192.0.2.1", 9), timeout=0.5)
        report("network is reachable")
    except OSError:
        report("isolated")
_NAMESPACED = os.getpid() == 1 or "%s" != "none"
"""


def probe(backend: str) -> str | None:
  """Runs a tiny program under a backend; None if it is isolated as promised, else why not."""
  if backend != "none" and shutil.which(backend) is None:
    return f"{backend} is not installed"
  try:
    container = Container(backend, _PROBE_SOURCE % backend, Limits(), start_timeout_s=30)
  except (OSError, subprocess.CalledProcessError, SandboxUnavailableError, ContainerDied) as e:
    return f"{backend} failed to start: {e}"
  try:
    run = container.sample(30, 1 << 16)
    run.send(b"x", close=True)
    out = b"".join(run.frames(time.monotonic() + 30)).decode("utf-8", "replace")
    run.finish(time.monotonic() + 5)
  except ContainerDied as e:
    return f"{backend} failed: {e}"
  finally:
    container.kill()
  if out != "isolated":
    return f"{backend} probe said {out or 'nothing'!r} {container.stderr_tail()[-300:]!r}"
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
