"""The judge's agent inside a sandbox: runs a candidate program and reports what it did.

Runs as the program of a sandbox container (see `sandbox.py` and `_sandbox_init.py`): for each
sample, the container calls `main()` in a fresh process S with the job pipe as stdin and the
report pipe as stdout. S's children (the candidate side) start a fresh pid namespace: S is not
in it, so no candidate process can even name S. The frames and the candidate's processes are
`_harness_core.py`'s; values cross as `_values.py` writes them. Stdlib only, Python >= 3.8.

Trust boundary. The harness is our code; the candidate (the model's program) always runs in
processes forked from it *before* the per-sample key arrives, which close every file descriptor
except pipes of their own, and which run under an extra seccomp filter (no setpgid/setsid, no
signals to any process older than themselves). Nothing in the sandbox can reach into another
process (no ptrace, process_vm_*, pidfd_*, kcmp, process_madvise; no /proc; S is non-dumpable),
so the candidate cannot read the key, and every record S writes carries an HMAC under it: a
record the candidate could have written fails the judge's check. Return values cross from the
candidate to S as plain values (`encode_value`), rebuilt with exact built-in types
(`decode_value`): an object whose `__eq__` always says True cannot cross. Expected outputs of
APPS tests never enter the sandbox: the judge compares them outside. HumanEval's test code runs
in S, never in the candidate's process, and is read only after the candidate is forked.

Protocol. Every message is a frame: a 4-byte big-endian length, then the payload.
stdin (from the judge, trusted, `marshal` payloads):
  1. the job {"mode": "stdio"|"call"|"humaneval", "program": str, "timeout_s": float, ...};
  2. read only after the candidate side is forked: {"key": 32 random bytes, "inputs": [...]}
     (stdio: [str], call: [[arg, ...]]) or, humaneval, {"key", "prompt", "test"}.
stdout (to the judge): authenticated records, `encode_value(record)` followed by
`record_tag(key, n, encoded)` (32 bytes; n = 0, 1, ... counts the records), written in as few
writes as possible (each wakes the judge): one
{"test": i, "status": ..., ...} per test in order, then {"done": True}; or {"error": str} if the
program cannot be run at all.
"""

import builtins
import marshal
import os
import select
# _signal, not signal: the latter builds IntEnums and imports enum, ~3 ms per sandbox.
import _signal as signal
import sys
import time

if "encode_value" not in globals():  # imported as a module (in the sandbox: compiled before us)
  from restem_jax.rewards._values import decode_value, encode_value  # noqa: F401
if "_read_frame" not in globals():  # imported as a module (in the sandbox: compiled before us)
  from restem_jax.rewards._harness_core import (_NAMESPACED, _REPORT, _become_candidate,
                                                _describe, _devnull, _end_candidates, _exit_code,
                                                _kill_candidates, _read_frame, _wait,
                                                _write_frame)


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
        os.close(fd)  # the runner serves every test of a sample: no fd may outlive its test
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
        # The program exited (maybe right after the poll: what it wrote is still in the
        # pipes) and a background child of it may hold them open: read what is there now.
        status = reaped
        for fd in list(readers):
          os.set_blocking(fd, False)
          for _ in range(max_output // (1 << 16) + 2):  # bounded: the writer may live on
            try:
              chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
              break
            if not chunk:
              readers.remove(fd)
              os.close(fd)
              break
            if fd == out_r:
              out.append(chunk)
              out_size += len(chunk)
            else:
              err = (err + chunk)[-2000:]
        if out_size > max_output:
          verdict = "output_limit"
        break
  for fd in readers + writers:
    os.close(fd)
  if status is None and verdict is None:  # output closed: give the program until the deadline
    status, timed_out = _wait(pid, deadline)
    if timed_out:
      verdict = "timeout"
  _kill_candidates(pid)  # also any background processes it started
  if status is None:
    status, _ = _wait(pid, time.monotonic() + 1)
  detail = err.decode("utf-8", "replace")[-500:]
  if verdict is not None:
    return verdict, "", detail
  stdout_text = b"".join(out).decode("utf-8", "replace")
  if status is None or os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
    return "error", stdout_text, (_describe(status or 9) + ": " + detail).strip()
  return "ok", stdout_text, ""


class _CandidateSide:
  """The first process of the candidates' pid namespace, forked by `prepare()` before S has
  any sample data (so before the key): it waits for its role, then becomes the candidate
  server (call and HumanEval modes) or the stdio test runner."""

  def __init__(self):
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    self.pid = os.fork()
    if self.pid == 0:
      try:
        null = _devnull()
        for target in (0, 1, 2):
          os.dup2(null, target)
        _ignore_handled_signals()
        low = 3
        for fd in sorted((req_r, rep_w)) + [1 << 16]:
          if fd > low:
            os.closerange(low, fd)
          low = fd + 1
        role = marshal.loads(_read_frame(req_r))  # from S: trusted
        if role["kind"] == "server":
          _become_candidate(0, 1, 2, (req_r, rep_w), role["cpu_s"])
          _CandidateServer.serve(role["program"], role["fn_name"], req_r, rep_w)
        else:
          _StdioRunner.serve(role, req_r, rep_w)
      finally:
        os._exit(0)
    os.close(req_r)
    os.close(rep_w)
    self.req_w, self.rep_r = req_w, rep_r

  def start(self, role):
    _write_frame(self.req_w, marshal.dumps(role))


def _ignore_handled_signals():
  """The candidate side (the init of the candidates' pid namespace) ignores every signal it
  would handle (Python's SIGINT): the kernel already drops signals with the default action
  that processes of its own namespace send to an init, but a handled one reaches it, also
  through paths no seccomp rule sees (fcntl F_SETOWN/F_SETSIG on a pipe)."""
  for sig in range(1, signal.NSIG):
    try:
      if callable(signal.getsignal(sig)):
        signal.signal(sig, signal.SIG_IGN)
    except (OSError, ValueError):
      pass


_PREPARED = [None]


def prepare():
  """Called by the container in S before the sample arrives: forks the candidate side.
  Returns its pid (the container kills it when the sample ends)."""
  _NAMESPACED[0] = bool(globals().get("_SBX_STATE", {}).get("namespaced"))
  _PREPARED[0] = _CandidateSide()
  return [_PREPARED[0].pid]


def _candidate_side():
  side, _PREPARED[0] = _PREPARED[0], None
  if side is None:
    raise RuntimeError("no candidate side was prepared")  # the container always calls prepare
  return side


class _StdioRunner:
  """The candidate side in stdin/stdout mode: runs one test per request, each in a fresh child
  (see `_run_stdio_test`). It is the candidates' parent (and their reaper), so S never forks
  after holding the key. S enforces the time of each request itself."""

  def __init__(self, side, program, test_timeout_s, max_output):
    compile(program, "<solution>", "exec")  # SyntaxError: reported by main
    side.start({"kind": "runner", "program": program, "test_timeout_s": test_timeout_s,
                "max_output": max_output})
    self.pid, self.req_w, self.rep_r = side.pid, side.req_w, side.rep_r
    self.max_reply = max_output + 65536

  @staticmethod
  def serve(role, req_r, rep_w):
    """Runner side: one test per request until EOF."""
    _sbx_set_subreaper()  # noqa: F821
    code = compile(role["program"], "<solution>", "exec")
    while True:
      stdin_text = decode_value(_read_frame(req_r))
      result = _run_stdio_test(code, stdin_text, role["test_timeout_s"], role["max_output"])
      _write_frame(rep_w, encode_value(list(result)))

  def run(self, stdin_text, deadline):
    """(status, output, detail) of one test, or a failure if the runner does not answer."""
    try:
      _write_frame(self.req_w, encode_value(stdin_text), deadline)
      reply = decode_value(_read_frame(self.rep_r, deadline, self.max_reply))
    except TimeoutError:
      return None
    except (EOFError, OSError, ValueError, RecursionError):
      return "error", "", "the test runner died"
    if (type(reply) is not list or len(reply) != 3
        or not all(type(x) is str for x in reply)):
      return "error", "", "bad reply from the test runner"
    return tuple(reply)


def _stdio_mode(job, deadline):
  runner = _StdioRunner(_candidate_side(), job["program"], job["test_timeout_s"],
                        job["max_output_bytes"])
  tests = _read_secret(deadline)
  dead = None
  for i, stdin_text in enumerate(tests["inputs"]):
    if dead is None:
      # The runner's own limit is test_timeout_s; S allows a little more for the fork.
      result = runner.run(stdin_text, min(deadline, time.monotonic() + job["test_timeout_s"]
                                          + 0.25))
      if result is None:
        dead = "timeout"
        result = ("timeout", "", "")
      elif result[2] == "the test runner died":
        dead = "error"
    else:
      result = (dead, "", "not run: an earlier test ended the runner")
    status, stdout_text, detail = result
    _REPORT.emit({"test": i, "status": status, "output": stdout_text, "detail": detail})
  _end_candidates(runner.pid)


# ----------------------------------------------------------------------------- function calls


class _CandidateServer:
  """The candidate side in call and HumanEval modes: loads the program and answers function
  calls over pipes."""

  def __init__(self, side, program, fn_name, cpu_s, max_reply):
    self.max_reply = max_reply
    side.start({"kind": "server", "program": program, "fn_name": fn_name, "cpu_s": cpu_s})
    self.pid, self.req_w, self.rep_r = side.pid, side.req_w, side.rep_r
    self.dead = False

  @staticmethod
  def serve(program, fn_name, req_r, rep_w):
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
      self.kill()
      return "timed out while loading"
    except (EOFError, ValueError, OSError, RecursionError):
      self.kill()
      return "crashed while loading"
    if reply.get("ready") is True:
      return None
    self.kill()
    return "failed to load: %s" % str(reply.get("load_error"))[:500]

  def call(self, args, deadline):
    """(status, value or detail) for fn(*args): "ok" with the decoded plain value, or failure."""
    if self.dead:
      return "not_run", "the program died in an earlier call"
    try:
      _write_frame(self.req_w, encode_value(list(args)), deadline)
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
    if not self.dead:
      self.dead = True
      _kill_candidates(self.pid)


def _exception_text(e):
  try:
    return ("%s: %s" % (type(e).__name__, e))[:500]
  except BaseException:
    return type(e).__name__


def _read_secret(deadline):
  """The second job frame (key and tests); read only once no candidate-side process can be
  forked from S any more. Sets the reporter's key."""
  tests = marshal.loads(_read_frame(0, deadline))
  key = tests.pop("key")
  if type(key) is not bytes or len(key) < 16:
    raise ValueError("no key")
  _REPORT.key = key
  return tests


def _call_mode(job, deadline):
  server = _CandidateServer(_candidate_side(), job["program"], job["fn_name"],
                            job["timeout_s"], job["max_output_bytes"])
  tests = _read_secret(deadline)
  why_not = server.wait_ready(min(deadline, time.monotonic() + job["test_timeout_s"]))
  for i, args in enumerate(tests["inputs"]):
    if why_not is not None:
      _REPORT.emit({"test": i, "status": "error", "detail": why_not})
      continue
    if type(args) is not list:
      args = [args]
    status, result = server.call(args, min(deadline, time.monotonic() + job["test_timeout_s"]))
    if status == "ok":
      _REPORT.emit({"test": i, "status": "ok", "value": result})
    else:
      _REPORT.emit({"test": i, "status": status, "detail": result})
  _end_candidates(server.pid)


# ----------------------------------------------------------------------------- HumanEval


class CandidateError(Exception):
  """The candidate function raised, crashed or timed out (re-raised in the test code)."""


def _humaneval_mode(job, deadline):
  # Modules the (trusted) prompt imports, loaded once here rather than in both processes.
  for name in job.get("preimport", ()):
    try:
      __import__(name)
    except Exception:
      pass
  server = _CandidateServer(_candidate_side(), job["program"], job["entry_point"],
                            job["timeout_s"], job["max_output_bytes"])
  # Only now, with the candidate forked, read the key and the tests: its memory never held them.
  tests = _read_secret(deadline)
  why_not = server.wait_ready(deadline)
  if why_not is not None:
    _REPORT.emit({"test": 0, "status": "error", "detail": why_not})
    return
  calls = [0]

  def candidate(*args, **kwargs):
    if kwargs:
      raise CandidateError("keyword arguments are not supported")
    status, result = server.call(args, deadline)
    if status != "ok":
      name, _, message = str(result).partition(": ")
      exc_type = getattr(builtins, name, None)
      # Tests that expect e.g. a ValueError still see one; never an exception that Python's
      # control flow reads as "done" (a StopIteration inside the test's map() or zip() would
      # end its loop early, as if every later assert had passed).
      if (isinstance(exc_type, type) and issubclass(exc_type, Exception)
          and not issubclass(exc_type, (StopIteration, StopAsyncIteration))):
        raise exc_type(message)
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
    _REPORT.emit({"test": 0, "status": "failed", "detail": _exception_text(e)}, flush=False)
    return
  finally:
    _end_candidates(server.pid)
  if calls[0] == 0:
    _REPORT.emit({"test": 0, "status": "failed", "detail": "the test never called the candidate"})
    return
  if time.monotonic() > deadline:
    _REPORT.emit({"test": 0, "status": "failed", "detail": "timed out"})
    return
  _REPORT.emit({"test": 0, "status": "passed", "calls": calls[0]}, flush=False)


# ----------------------------------------------------------------------------- main


def main():
  """One sample: fd 0 is the job pipe, fd 1 the report pipe (see the protocol above)."""
  _NAMESPACED[0] = bool(globals().get("_SBX_STATE", {}).get("namespaced"))
  signal.signal(signal.SIGPIPE, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  job = marshal.loads(_read_frame(0))
  deadline = time.monotonic() + job["timeout_s"]
  try:
    if job["mode"] == "humaneval":
      _humaneval_mode(job, deadline)
    elif job["mode"] == "call":
      _call_mode(job, deadline)
    else:
      _stdio_mode(job, deadline)
  except SyntaxError as e:
    _emit_error("syntax error: %s" % e, deadline)
  except Exception as e:
    _emit_error(_exception_text(e), deadline)
  else:
    _REPORT.emit({"done": True})
  _REPORT.flush()


def _emit_error(text, deadline):
  if _REPORT.key is None:  # the error came before the key: read it to authenticate the report
    try:
      _read_secret(deadline)
    except Exception:
      return
  _REPORT.emit({"error": text})
