"""The judge's agent inside a sandbox: runs a candidate program and reports what it did.

Runs as the sandbox's program (see `sandbox.py`); `code.py` also imports `encode_value` and
`decode_value` from here. Stdlib only, Python >= 3.8.

Trust boundary. The harness is our code; the candidate (the model's program) always runs in a
separate process forked from it, which first closes every file descriptor except pipes of its
own and stdin/stdout/stderr pointed at pipes or /dev/null. So the candidate cannot write on the
harness's report channel (its stdout), cannot read the test code (read from stdin only after the
fork), and cannot patch the harness (another process; no ptrace: seccomp under bwrap,
non-dumpable under unshare; no /proc).
Return values cross the boundary as plain values (`encode_value`), rebuilt with exact built-in
types (`decode_value`): an object whose `__eq__` always says True cannot cross. Expected outputs
of APPS tests never enter the sandbox: the judge compares them outside.

Protocol. Every message is a frame: a 4-byte big-endian length, then the payload.
stdin (from the judge, trusted, `marshal` payloads):
  1. the job {"mode": "stdio"|"call"|"humaneval", "program": str, ...}
  2. the tests: stdio {"inputs": [str]}, call {"inputs": [[arg, ...]]}, humaneval
     {"prompt": str, "test": str} (read only after the candidate is forked).
stdout (to the judge, `encode_value` payloads): {"accepted": True} once the job is read, then
{"test": i, "status": ..., ...} per test in order, then {"done": True}; or {"error": str} if the
program cannot be run at all.
"""

import builtins
import marshal
import math
import os
import select
# _signal, not signal: the latter builds IntEnums and imports enum, ~3 ms per sandbox.
import _signal as signal
import sys
import time

# ----------------------------------------------------------------------------- plain values
#
# A small binary format for plain values, parsed without `json` (whose import of `re` costs more
# than the rest of the harness's start-up) and without `marshal` or `pickle` (unsafe on data the
# candidate wrote). One tag byte, then:
#   N T F                 None, True, False
#   i<decimal>;  f<repr>;  int, float (repr round-trips, incl. inf and nan)
#   s<n>:<n bytes utf-8>   b<n>:<n bytes>   str, bytes
#   c<float><float>        complex (two encoded floats)
#   l t S Z <n>:<items>    list, tuple, set, frozenset of n encoded items
#   d<n>:<2n items>        dict (key, value, key, value, ...)

_MAX_DEPTH = 200
_SEQUENCES = {list: b"l", tuple: b"t", set: b"S", frozenset: b"Z"}
_SEQUENCE_TYPES = {b"l": list, b"t": tuple, b"S": set, b"Z": frozenset}


def _encode(x, out, depth):
  t = type(x)
  if x is None:
    out.append(b"N")
  elif t is bool:
    out.append(b"T" if x else b"F")
  elif t is int:
    out.append(b"i%d;" % x)  # ValueError past Python's 4300-digit limit: not sendable
  elif t is float:
    out.append(b"f" + repr(x).encode() + b";")
  elif t is str or t is bytes:
    data = x.encode("utf-8", "surrogatepass") if t is str else x
    out.append(b"%s%d:" % (b"s" if t is str else b"b", len(data)))
    out.append(data)
  elif t is complex:
    out.append(b"c")
    _encode(x.real, out, depth)
    _encode(x.imag, out, depth)
  elif depth > _MAX_DEPTH:
    raise ValueError("value nested too deeply")
  elif t in _SEQUENCES:
    out.append(b"%s%d:" % (_SEQUENCES[t], len(x)))
    for v in x:
      _encode(v, out, depth + 1)
  elif t is dict:
    out.append(b"d%d:" % len(x))
    for k, v in x.items():
      _encode(k, out, depth + 1)
      _encode(v, out, depth + 1)
  else:
    raise TypeError("cannot send a value of type %s" % t.__name__)


def encode_value(x):
  """Bytes for a plain value (exact built-in types only); raises TypeError/ValueError else."""
  out = []
  _encode(x, out, 0)
  return b"".join(out)


def _field(data, pos, end_byte):
  end = data.index(end_byte, pos, pos + 5000)  # ValueError if absent: malformed
  return data[pos:end], end + 1


def _decode(data, pos, depth):
  tag = data[pos:pos + 1]
  pos += 1
  if tag == b"N":
    return None, pos
  if tag == b"T":
    return True, pos
  if tag == b"F":
    return False, pos
  if tag == b"i":
    text, pos = _field(data, pos, b";")
    if not text.lstrip(b"-").isdigit():
      raise ValueError("malformed int")
    return int(text), pos
  if tag == b"f":
    text, pos = _field(data, pos, b";")
    return float(text.decode("ascii")), pos
  if tag == b"c":
    real, pos = _decode(data, pos, depth)
    imag, pos = _decode(data, pos, depth)
    if type(real) is not float or type(imag) is not float:
      raise ValueError("malformed complex")
    return complex(real, imag), pos
  if tag in (b"s", b"b", b"l", b"t", b"S", b"Z", b"d"):
    text, pos = _field(data, pos, b":")
    if not text.isdigit():
      raise ValueError("malformed length")
    n = int(text)
    if tag in (b"s", b"b"):
      if pos + n > len(data):
        raise ValueError("truncated value")
      raw = data[pos:pos + n]
      return (raw.decode("utf-8", "surrogatepass") if tag == b"s" else bytes(raw)), pos + n
    if depth > _MAX_DEPTH:
      raise ValueError("value nested too deeply")
    count = 2 * n if tag == b"d" else n
    if count > len(data) - pos:  # every item takes at least one byte
      raise ValueError("truncated value")
    items = []
    for _ in range(count):
      item, pos = _decode(data, pos, depth + 1)
      items.append(item)
    try:
      if tag == b"d":
        return dict(zip(items[0::2], items[1::2])), pos
      return _SEQUENCE_TYPES[tag](items), pos
    except TypeError as e:  # an unhashable key or set element
      raise ValueError("malformed value: %s" % e)
  raise ValueError("malformed value")


def decode_value(data):
  """The plain value in bytes from `encode_value`, built from exact built-in types only.

  Raises:
    ValueError: for anything that is not exactly one well-formed value.
  """
  if type(data) is not bytes:
    raise ValueError("not bytes")
  try:
    value, pos = _decode(data, 0, 0)
  except (IndexError, UnicodeDecodeError, OverflowError, RecursionError) as e:
    raise ValueError("malformed value: %s" % type(e).__name__)
  if pos != len(data):
    raise ValueError("trailing bytes after the value")
  return value


# ----------------------------------------------------------------------------- framing


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


def _write_frame(fd, data):
  _write_all(fd, len(data).to_bytes(4, "big") + data)


def _write_all(fd, data):
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]


def _emit(record):
  """Reports a record (a dict of plain values) to the judge: one frame on stdout."""
  _write_frame(1, encode_value(record))


# ----------------------------------------------------------------------------- child processes


def _devnull():
  return os.open("/dev/null", os.O_RDWR)


def _become_candidate(stdin_fd, stdout_fd, stderr_fd, keep, cpu_s):
  """In a freshly forked child: own process group, only the given fds, a CPU limit."""
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
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return status, False
    if time.monotonic() >= deadline:
      return None, True
    time.sleep(delay)
    delay = min(delay * 2, 0.01)


def _kill_group(pid):
  try:
    os.killpg(pid, signal.SIGKILL)
  except OSError:
    pass


def _describe(status):
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig in (signal.SIGKILL, signal.SIGXCPU):
      return "killed (CPU time limit or memory)"
    return "killed by signal %d" % sig
  return "exit status %d" % os.WEXITSTATUS(status)


# ----------------------------------------------------------------------------- stdin/stdout mode


def _run_stdio_test(code, stdin_text, timeout_s, max_output):
  """Runs the program once on one input. Returns (status, stdout text, detail)."""
  in_r, in_w = os.pipe()
  out_r, out_w = os.pipe()
  err_r, err_w = os.pipe()
  pid = os.fork()
  if pid == 0:
    status = 1
    try:
      _become_candidate(in_r, out_w, err_w, (), timeout_s)
      exec(code, {"__name__": "__main__", "__builtins__": builtins})
      status = 0
    except SystemExit as e:
      status = _exit_code(e)
    except BaseException as e:
      try:
        os.write(2, ("%s: %s" % (type(e).__name__, e))[-2000:].encode("utf-8", "replace"))
      except BaseException:
        pass
    finally:
      try:
        sys.stdout.flush()
      except BaseException:
        pass
      os._exit(status)
  for fd in (in_r, out_w, err_w):
    os.close(fd)
  pending = stdin_text.encode("utf-8")
  deadline = time.monotonic() + timeout_s
  out, err = [], b""
  out_size = 0
  readers = [out_r, err_r]
  writers = [in_w]
  os.set_blocking(in_w, False)
  verdict, status = None, None
  while readers:
    if not pending and writers:
      os.close(in_w)
      writers = []
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      verdict = "timeout"
      break
    ready_r, ready_w, _ = select.select(readers, writers, [], min(remaining, 0.05))
    if ready_w:
      try:
        pending = pending[os.write(in_w, pending[:1 << 16]):]
      except BrokenPipeError:
        pending = b""  # the program stopped reading its input: that is its business
      except BlockingIOError:
        pass
    for fd in ready_r:
      chunk = os.read(fd, 1 << 16)
      if not chunk:
        readers.remove(fd)
      elif fd == out_r:
        out.append(chunk)
        out_size += len(chunk)
      else:
        err = (err + chunk)[-2000:]
    if out_size > max_output:
      verdict = "output_limit"
      break
    if not ready_r:
      done, reaped = os.waitpid(pid, os.WNOHANG)
      if done:
        # The program exited but a background child of it still holds the pipes open.
        status = reaped
        break
  for fd in readers + writers:
    os.close(fd)
  if status is None and verdict is None:  # output closed: give the program until the deadline
    status, timed_out = _wait(pid, deadline)
    if timed_out:
      verdict = "timeout"
  _kill_group(pid)  # also any background processes it started
  if status is None:
    status, _ = _wait(pid, time.monotonic() + 5)
  detail = err.decode("utf-8", "replace")[-500:]
  if verdict is not None:
    return verdict, "", detail
  stdout_text = b"".join(out).decode("utf-8", "replace")
  if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
    return "error", stdout_text, (_describe(status) + ": " + detail).strip()
  return "ok", stdout_text, ""


def _stdio_mode(job, tests):
  code = compile(job["program"], "<solution>", "exec")
  for i, stdin_text in enumerate(tests["inputs"]):
    status, stdout_text, detail = _run_stdio_test(code, stdin_text, job["test_timeout_s"],
                                                  job["max_output_bytes"])
    _emit({"test": i, "status": status, "output": stdout_text, "detail": detail})


# ----------------------------------------------------------------------------- function calls


class _CandidateServer:
  """A forked candidate process that loads the program and answers function calls over pipes."""

  def __init__(self, program, fn_name, cpu_s, max_reply):
    self.max_reply = max_reply
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    self.pid = os.fork()
    if self.pid == 0:
      try:
        null = _devnull()
        _become_candidate(null, null, null, (req_r, rep_w), cpu_s)
        self._serve(program, fn_name, req_r, rep_w)
      finally:
        os._exit(0)
    os.close(req_r)
    os.close(rep_w)
    self.req_w, self.rep_r = req_w, rep_r
    self.dead = False

  @staticmethod
  def _serve(program, fn_name, req_r, rep_w):
    """Child side (runs the untrusted code): load, then one call per request."""
    try:
      namespace = {"__name__": "__candidate__", "__builtins__": builtins}
      exec(compile(program, "<solution>", "exec"), namespace)
      fn = namespace.get(fn_name)
      if not callable(fn) and isinstance(namespace.get("Solution"), type):
        fn = getattr(namespace["Solution"](), fn_name, None)  # LeetCode-style APPS problems
      if not callable(fn):
        raise NameError("the program defines no function %r" % fn_name)
      reply = {"ready": True}
    except BaseException as e:
      fn, reply = None, {"load_error": _exception_text(e)}
    _write_frame(rep_w, encode_value(reply))
    while fn is not None:
      args = decode_value(_read_frame(req_r))
      try:
        reply = encode_value({"value": fn(*args)})
      except BaseException as e:
        reply = encode_value({"exception": _exception_text(e)})
      _write_frame(rep_w, reply)

  def _reply(self, deadline):
    reply = decode_value(_read_frame(self.rep_r, deadline, self.max_reply))
    if type(reply) is not dict:
      raise ValueError("malformed reply")
    return reply

  def wait_ready(self, deadline):
    """None if the program loaded, else why not."""
    try:
      reply = self._reply(deadline)
    except TimeoutError:
      return "timed out while loading"
    except (EOFError, ValueError, OSError, RecursionError):
      return "crashed while loading"
    if reply.get("ready") is True:
      return None
    return "failed to load: %s" % str(reply.get("load_error"))[:500]

  def call(self, args, deadline):
    """(status, value or detail) for fn(*args): "ok" with the decoded plain value, or failure."""
    if self.dead:
      return "not_run", "the program died in an earlier call"
    try:
      _write_frame(self.req_w, encode_value(list(args)))
      reply = self._reply(deadline)
    except TimeoutError:
      self.kill()
      return "timeout", "timed out"
    except (EOFError, OSError):
      self.kill()
      return "error", "the program exited or crashed"
    except (ValueError, RecursionError) as e:
      self.kill()
      return "error", "bad reply: %s" % e
    if "value" in reply:
      return "ok", reply["value"]
    return "error", str(reply.get("exception"))[:500]

  def kill(self):
    self.dead = True
    _kill_group(self.pid)
    os.waitpid(self.pid, 0)


def _exception_text(e):
  try:
    return ("%s: %s" % (type(e).__name__, e))[:500]
  except BaseException:
    return type(e).__name__


def _call_mode(job, tests):
  inputs = tests["inputs"]
  server = _CandidateServer(job["program"], job["fn_name"], job["test_timeout_s"] * len(inputs),
                            job["max_output_bytes"])
  why_not = server.wait_ready(time.monotonic() + job["test_timeout_s"])
  for i, args in enumerate(inputs):
    if why_not is not None:
      _emit({"test": i, "status": "error", "detail": why_not})
      continue
    if type(args) is not list:
      args = [args]
    status, result = server.call(args, time.monotonic() + job["test_timeout_s"])
    if status == "ok":
      _emit({"test": i, "status": "ok", "value": result})
    else:
      _emit({"test": i, "status": status, "detail": result})
  if not server.dead:
    server.kill()


# ----------------------------------------------------------------------------- HumanEval


class CandidateError(Exception):
  """The candidate function raised, crashed or timed out (re-raised in the test code)."""


def _humaneval_mode(job):
  deadline = time.monotonic() + job["timeout_s"]
  # Modules the (trusted) prompt imports, loaded once here rather than in both processes.
  for name in job.get("preimport", ()):
    try:
      __import__(name)
    except Exception:
      pass
  server = _CandidateServer(job["program"], job["entry_point"], job["timeout_s"],
                            job["max_output_bytes"])
  # Only now, with the candidate forked, read the tests: its memory never held them.
  tests = marshal.loads(_read_frame(0, deadline))
  why_not = server.wait_ready(deadline)
  if why_not is not None:
    _emit({"test": 0, "status": "error", "detail": why_not})
    return
  calls = [0]

  def candidate(*args, **kwargs):
    if kwargs:
      raise CandidateError("keyword arguments are not supported")
    status, result = server.call(args, deadline)
    if status != "ok":
      name, _, message = str(result).partition(": ")
      exc_type = getattr(builtins, name, None)
      if isinstance(exc_type, type) and issubclass(exc_type, Exception):
        raise exc_type(message)  # tests that expect e.g. a ValueError still see one
      raise CandidateError(result)
    calls[0] += 1
    return result

  namespace = {"__name__": "__tester__", "__builtins__": builtins}
  try:
    try:
      # The prompt may define helpers the test uses (e.g. HumanEval/32's poly).
      exec(compile(tests["prompt"], "<prompt>", "exec"), namespace)
    except SyntaxError:
      pass
    # Tests may call the function by name too (HumanEval/33 does): that name is the candidate.
    namespace[job["entry_point"]] = candidate
    exec(compile(tests["test"], "<test>", "exec"), namespace)
    namespace["check"](candidate)
  except BaseException as e:
    _emit({"test": 0, "status": "failed", "detail": _exception_text(e)})
    return
  finally:
    if not server.dead:
      server.kill()
  if calls[0] == 0:
    _emit({"test": 0, "status": "failed", "detail": "the test never called the candidate"})
    return
  _emit({"test": 0, "status": "passed", "calls": calls[0]})


# ----------------------------------------------------------------------------- main


def main():
  signal.signal(signal.SIGPIPE, signal.SIG_IGN)
  try:
    job = marshal.loads(_read_frame(0))
    _emit({"accepted": True})  # before any candidate code runs (see code.py `_records`)
    if job["mode"] == "humaneval":
      _humaneval_mode(job)
    else:
      tests = marshal.loads(_read_frame(0))
      (_stdio_mode if job["mode"] == "stdio" else _call_mode)(job, tests)
  except SyntaxError as e:
    _emit({"error": "syntax error: %s" % e})
    return
  except Exception as e:
    _emit({"error": _exception_text(e)})
    return
  _emit({"done": True})


if __name__ == "__main__":
  main()
