"""The harness's plumbing, inside a sandbox: authenticated frames, and the candidate's processes.

Part of the sandbox's program (`code._harness_source` compiles `_values.py`, this file and
`_harness.py` as one module; see `_harness.py` for the trust boundary and the protocol). Frames
are a 4-byte big-endian length and a payload; every record for the judge is followed by
`record_tag`, its HMAC under the sample's key. The candidate runs in processes forked by
`_become_candidate` (their own pipes only, the candidate seccomp filter, CPU limit), which are
waited for under a deadline and killed as a group. `code.py` imports `record_tag` and
`TAG_BYTES` from here. Stdlib only, Python >= 3.8.
"""

import hashlib
import hmac
import math
import os
import select
# _signal, not signal: the latter builds IntEnums and imports enum, ~3 ms per sandbox.
import _signal as signal
import time

if "encode_value" not in globals():  # imported as a module (in the sandbox: compiled before us)
  from restem_jax.rewards._values import encode_value  # noqa: F401


# ----------------------------------------------------------------------------- framing

TAG_BYTES = 32


def record_tag(key, index, encoded):
  """The HMAC-SHA256 that authenticates record number `index` (encoded) under the sample key."""
  return hmac.new(key, index.to_bytes(8, "big") + encoded, hashlib.sha256).digest()


def _read_exact(fd, n, deadline=None):
  chunks, size = [], 0
  while size < n:
    if deadline is not None:
      remaining = deadline - time.monotonic()
      if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
        raise TimeoutError()
    chunk = os.read(fd, min(n - size, 1 << 20))
    if not chunk:
      raise EOFError()
    chunks.append(chunk)
    size += len(chunk)
  return b"".join(chunks)


def _read_frame(fd, deadline=None, max_bytes=1 << 30):
  length = int.from_bytes(_read_exact(fd, 4, deadline), "big")
  if length > max_bytes:
    raise ValueError("message too large")
  return _read_exact(fd, length, deadline)


def _write_frame(fd, data, deadline=None):
  _write_all(fd, len(data).to_bytes(4, "big") + data, deadline)


def _write_all(fd, data, deadline=None):
  view = memoryview(data)
  while view:
    if deadline is not None:
      remaining = deadline - time.monotonic()
      if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
        raise TimeoutError()
    view = view[os.write(fd, view[:1 << 16]):]


class _Reporter:
  """Writes authenticated records to the judge (fd 1). emit(record, flush=False) keeps it for
  the next write (each write wakes the judge); main flushes at the end."""

  def __init__(self):
    self.key = None
    self.count = 0
    self.pending = []
    self.size = 0

  def emit(self, record, flush=True):
    encoded = encode_value(record)
    if self.key is None:  # nothing may be reported before the key: the judge rejects it
      raise RuntimeError("no key")
    tag = record_tag(self.key, self.count, encoded)
    self.count += 1
    self.pending.append(len(encoded + tag).to_bytes(4, "big") + encoded + tag)
    self.size += len(encoded) + 36
    if flush or self.size > 1 << 16:
      self.flush()

  def flush(self):
    if self.pending:
      data, self.pending, self.size = b"".join(self.pending), [], 0
      _write_all(1, data)


_REPORT = _Reporter()


# ----------------------------------------------------------------------------- child processes


def _devnull():
  return os.open("/dev/null", os.O_RDWR)


# Whether S's children start in a fresh pid namespace, of which the first (the candidate server
# or the stdio runner) is the init (set by main; inherited by forks).
_NAMESPACED = [False]


def _become_candidate(stdin_fd, stdout_fd, stderr_fd, keep, cpu_s):
  """In a freshly forked child: own process group, only the given fds, a CPU limit, and the
  candidate's seccomp rules (no signals to older processes, no leaving its process group)."""
  os.setpgid(0, 0)
  for target, fd in ((0, stdin_fd), (1, stdout_fd), (2, stderr_fd)):
    os.dup2(fd, target)
  keep = sorted(set(keep))
  low = 3
  for fd in keep + [1 << 16]:
    if fd > low:
      os.closerange(low, fd)
    low = fd + 1
  import resource
  cpu = max(1, int(math.ceil(cpu_s)))
  resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
  signal.signal(signal.SIGPIPE, signal.SIG_DFL)
  signal.signal(signal.SIGINT, signal.default_int_handler)
  if _NAMESPACED[0]:
    _sbx_candidate_seccomp()  # noqa: F821  (defined by _sandbox_init, compiled before us)


def _exit_code(exc):
  """Exit status for SystemExit(code) as the interpreter would use it."""
  code = exc.code
  if code is None:
    return 0
  return code if type(code) is int else 1


def _wait(pid, deadline):
  """(status, timed_out): waits for pid until deadline, polling without signals."""
  delay = 0.0005
  while True:
    try:
      done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # already reaped by _kill_candidates: status unknown
      return None, False
    if done:
      return status, False
    if time.monotonic() >= deadline:
      return None, True
    time.sleep(delay)
    delay = min(delay * 2, 0.01)


def _kill_candidates(pid):
  """Kills the candidate process group pid and, in a sandbox, every candidate process: S kills
  the init of the candidates' pid namespace (the kernel then kills the rest), the stdio runner
  (that init) kills everything else in it with kill(-1). Then reaps what it can in 1 s: a
  candidate that stops itself or ignores signals cannot make the harness wait."""
  targets = [-pid]
  if _NAMESPACED[0]:
    targets.append(-1 if os.getpid() == 1 else pid)
  for target in targets:
    try:
      os.kill(target, signal.SIGKILL)
    except OSError:
      pass
  deadline = time.monotonic() + 1.0
  while time.monotonic() < deadline:
    try:
      done, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
      return
    if not done:
      time.sleep(0.001)


def _end_candidates(pid):
  """After the last test: in a sandbox nothing to do (when S exits, the container kills every
  other process of the sample); else kill them now."""
  if not _NAMESPACED[0]:
    _kill_candidates(pid)


def _describe(status):
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig in (signal.SIGKILL, signal.SIGXCPU):
      return "killed (CPU time limit or memory)"
    return "killed by signal %d" % sig
  return "exit status %d" % os.WEXITSTATUS(status)
