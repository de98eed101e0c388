"""Math reward: extract the final answer from a model's text and compare it with the gold answer.

The reward is the only supervision ReST^EM gets, so equivalence errs on the side of "not equal"
when in doubt, and no input (however malformed) raises: garbage gets reward 0.

Pipeline for one sample:
  1. `extract_answer`: the last of the configured answer markers in the text (`\\boxed{...}` with
     nested braces, "The answer is X", Minerva's "Final Answer: The final answer is X. I hope it
     is correct.", "**Answer:** X", GSM8K's "#### X" but not a markdown "#### Step 1" heading).
  2. `_math_forms.read_answer` reads the gold and the predicted answer into what they say (a
     number with its unit, a percent, an interval, a set, a list, a tuple, a matrix, an
     equation, a number in a base, a choice, words), and `_math_same.same` compares the two as
     an expert grader would, exactly or at fixed evaluation points, applying the form rules of
     the problem's question (`_math_question`: "Expand", "Factor", "simplest radical form",
     "common fraction", "in base 2", ...). This decides almost every answer, without sympy.
  3. Otherwise (an answer outside those readings): `normalize_answer`, Minerva-style clean-up
     (Lewkowycz et al. 2022) without its known over-reaches; equal normalized strings, else
     exact rational arithmetic for plain numbers, else math-verify's symbolic comparison (plus
     our veto on tiny-number cases it gets wrong), run in a child process with a hard time
     limit (see `_math_worker.py`). Where the question asks for a form, only step 2 can accept.
"""

from __future__ import annotations

import atexit
import dataclasses
import fractions
import functools
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from restem_jax.rewards import _math_clean as _clean
from restem_jax.rewards import _math_forms as _forms
from restem_jax.rewards import _math_same as _same
from restem_jax.rewards.base import Verdict

# ----------------------------------------------------------------------------- extraction

EXTRACTORS = ("boxed", "final_answer", "answer_is", "answer_label", "gsm8k")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b")
# Lookaheads, so that matches may overlap ("Final Answer: The final answer is X" holds two).
# Answers are capped in length, so a degenerate sample repeating a marker on one long line
# costs linear time, not quadratic.
_FINAL_ANSWER_RE = re.compile(r"(?=(?:[Tt]he final answer is:?|Final Answer:)[ \t]*([^\n]{0,500}))")
_ANSWER_IS_RE = re.compile(r"(?=[Tt]he answer is:?[ \t]*([^\n]{0,500}))")
_GSM8K_RE = re.compile(r"(?=####[ \t]*([^\n]{0,500}))")
# "**Answer:** 17", "Answer: 17", "**Final answer**: 17" (markdown emphasis around the label).
_ANSWER_LABEL_RE = re.compile(
    r"(?=(?<![A-Za-z])(?:\*\*|__)?(?:[Ff]inal [Aa]nswer|Answer|ANSWER)(?:\*\*|__)?[ \t]*:"
    r"[ \t]*(?:\*\*|__)?[ \t]*([^\n]{0,500}))")
# "### Final Answer" as a markdown heading, the answer on the next non-empty line.
_ANSWER_HEADING_RE = re.compile(
    r"(?=(?:^|\n)#{1,6}[ \t]*(?:\*\*)?(?:[Ff]inal [Aa]nswer|Answer)(?:\*\*)?[ \t]*:?[ \t]*\n\s*"
    r"([^\n]{0,500}))")
# A markdown heading ("#### Step 2: add") is not a GSM8K "#### 72" line.
_HEADING_RE = re.compile(r"[A-Za-z]{2,}[^\n]*\s\S")
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$")
_TEX_TOKEN_RE = re.compile(r"[^\s$]{1,500}")


def _brace_partners(text: str) -> dict[int, int]:
  """Index of each `{` -> index of its closing `}` (unclosed ones absent), in one pass."""
  partners, stack = {}, []
  i = 0
  while i < len(text):
    ch = text[i]
    if ch == "\\":
      i += 2
      continue
    if ch == "{":
      stack.append(i)
    elif ch == "}" and stack:
      partners[stack.pop()] = i
    i += 1
  return partners


def _boxed_spans(text: str) -> list[tuple[int, str]]:
  """(start, content) of every `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` in text."""
  spans = []
  partners = None  # computed once, on the first box: many unclosed boxes stay linear
  for match in _BOXED_RE.finditer(text):
    i = match.end()
    while i < len(text) and text[i] == " ":
      i += 1
    if i < len(text) and text[i] == "{":
      if partners is None:
        partners = _brace_partners(text)
      if i in partners:
        spans.append((i + 1, text[i + 1:partners[i]]))
    elif i > match.end():  # "\boxed 5": one token, as TeX reads it
      token = _TEX_TOKEN_RE.match(text, i)
      if token:
        spans.append((i, token.group(0)))
  return spans


def _line_spans(pattern: re.Pattern, text: str) -> list[tuple[int, str]]:
  """[(start, answer)] of the last match of a marker (whose answer runs to the end of its
  sentence) that holds an answer; only the last can be the final answer."""
  spans = []
  for match in reversed(list(pattern.finditer(text))):
    # The sentence ends at ". " (a decimal point is never followed by a space) or the line end.
    answer = re.split(r"\.\s", _HOPE_RE.sub("", match.group(1)), maxsplit=1)[0]
    answer = answer.strip().strip("*_").strip().removesuffix(".").strip()
    if not answer or pattern is _GSM8K_RE and _HEADING_RE.match(answer):
      continue
    spans.append((match.start(1), answer))
    break
  return spans


_EXTRACTOR_FNS = {
    "boxed": _boxed_spans,
    "final_answer": functools.partial(_line_spans, _FINAL_ANSWER_RE),
    "answer_is": functools.partial(_line_spans, _ANSWER_IS_RE),
    "answer_label": lambda text: (_line_spans(_ANSWER_LABEL_RE, text)
                                  + _line_spans(_ANSWER_HEADING_RE, text)),
    "gsm8k": functools.partial(_line_spans, _GSM8K_RE),
}


def extract_answer(text: str, extractors: Sequence[str] = EXTRACTORS) -> str | None:
  """The final answer in a model's text: the last occurrence of any configured marker.

  Args:
    text: the model's completion.
    extractors: which markers count, a subset of `EXTRACTORS` (configured per task).

  Returns:
    The raw answer text (not normalized), or None when no marker holds a non-empty answer.
  """
  if not isinstance(text, str):
    return None
  unknown = set(extractors) - set(_EXTRACTOR_FNS)
  if unknown:
    raise ValueError(f"unknown answer extractors {sorted(unknown)}; known: {EXTRACTORS}")
  spans = [span for name in extractors for span in _EXTRACTOR_FNS[name](text)
           if span[1].strip()]
  if not spans:
    return None
  last = max(spans, key=lambda span: span[0])
  if "boxed" in extractors:
    return _joined_boxes(text, last)
  return last[1].strip()


# What may stand between two boxes that together give the final answer ("$\boxed{2}$ and
# $x = \boxed{3}$"): punctuation, "and" / "or", a variable's "x =".
_BOX_GAP_RE = re.compile(r"[\s$,;.]*(?:(?:\\text\s*\{\s*)?(?:and|or)(?:\s*\})?)?[\s$,;]*"
                         r"(?:[a-zA-Z]\s*=\s*)?")
_BOX_TAIL_RE = re.compile(r"\\(?:boxed|fbox)\s*\{?$")


def _joined_boxes(text: str, last: tuple[int, str]) -> str:
  """The last answer; when it is a box that ends a run of boxes with only "and", "or" or
  punctuation between them (solutions boxed one by one), all of them as a list."""
  boxes = _boxed_spans(text)
  if not boxes or boxes[-1][0] != last[0]:
    return last[1].strip()
  answers = [boxes[-1][1].strip()]
  for (start, content), (next_start, _) in zip(boxes[-2::-1], boxes[:0:-1]):
    gap = _BOX_TAIL_RE.sub("", text[start + len(content) + 1:next_start])
    if (len(answers) >= 20 or len(gap) > 40 or not _BOX_GAP_RE.fullmatch(gap)
        or not content.strip()):
      break
    answers.append(content.strip())
  return ", ".join(reversed(answers))


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` in text (how MATH marks a solution's answer)."""
  spans = _boxed_spans(text) if isinstance(text, str) else []
  return spans[-1][1].strip() if spans else None


# ----------------------------------------------------------------------------- normalization

# Unit and filler words that follow a number in MATH / GSM8K answers (Minerva's list plus
# singulars); removed only as whole words and only when something else is left.
_UNIT_WORDS = (
    "square", "units", "unit", "ways", "integers", "dollars", "dollar", "cents", "cent", "mph",
    "inches", "inch", "feet", "foot", "ft", "hours", "hour", "minutes", "minute", "seconds", "km",
    "cm", "mm", "meters", "meter", "gm", "grams", "pounds", "points", "digits", "degrees",
    "degree", "students", "edges", "meals", "multiples", "days", "years", "sq", "cubic")
_UNIT_RE = re.compile(r"(?<![\\a-zA-Z])(?:" + "|".join(_UNIT_WORDS) + r")(?![a-zA-Z])")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{")
_SPACING_RE = re.compile(r"(?<!\\)\\[!,:; ]|\\q?quad(?![a-zA-Z])|~")  # not the "\\ " of a row break
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])")
_ASSIGN_RE = re.compile(r"^(?:\\[a-zA-Z]+|[a-zA-Z])(?:_\{?[a-zA-Z0-9]+\}?)?\s*=\s*(?P<rhs>[^=]+)$")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CHOICE_RE = re.compile(r"^\(([A-Ea-e])\)$")
# Runs of letters that are maths, not words: these do not make an answer a "text answer".
_MATH_WORDS = frozenset(
    "sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh log ln exp lg max min gcd lcm mod "
    "det lim inf sup deg sqrt frac pi infty".split())
_MAX_ANSWER_CHARS = 1000  # longer "answers" are compared as strings only


def normalize_answer(answer: str) -> str:
  """Minerva-style normalization of an extracted answer (a string; never raises).

  Args:
    answer: the raw answer, e.g. `$\\dfrac{1}{2}$.` or `x = 5\\text{ cm}`.

  Returns:
    The normalized answer, e.g. `\\frac{1}{2}` or `5`; the empty string for no answer.
  """
  if not isinstance(answer, str):
    return ""
  s = answer.strip().replace("\u2212", "-")  # Unicode minus sign
  s = _clean.unwrap(s, re.compile(r"\\(?:boxed|fbox)\s*\{"))
  s = s.replace("\\$", "").replace("$", "")
  s = re.sub(r"\\[()\[\]]", "", s)
  s = _LEFT_RIGHT_RE.sub("", s)
  s = _SPACING_RE.sub(" ", s)
  s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
  s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
  s = _clean.unwrap(s, _TEXT_CMD_RE)
  s = _DEGREE_RE.sub("", s)
  s = s.replace("\\%", "").replace("%", "")
  s = s.replace("{,}", ",")
  without_units = _UNIT_RE.sub("", s)
  if without_units.strip():
    s = without_units
  s = s.strip().rstrip(".").strip()
  assign = _ASSIGN_RE.match(s)
  if assign:
    s = assign.group("rhs").strip()
  # Spaces carry no meaning except between a command and a following letter (`\pi r`).
  s = re.sub(r"\s+", " ", s).strip()
  s = re.sub(r"(\\[a-zA-Z]+) (?=[a-zA-Z])", "\\1\x00", s).replace(" ", "").replace("\x00", " ")
  # TeX shorthand: \frac12 -> \frac{1}{2}, \sqrt2 -> \sqrt{2} (not \sqrt[3]{x}).
  s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\sqrt(\d+|[a-zA-Z])(?![a-zA-Z])", r"\\sqrt{\1}", s)
  if _THOUSANDS_RE.fullmatch(s):
    s = s.replace(",", "")
  choice = _CHOICE_RE.match(s)
  if choice:
    s = choice.group(1).upper()
  return s


def _is_text_answer(s: str) -> bool:
  """Whether a normalized answer is words (compared as text, never by sympy).

  sympy reads `Monday` as the product M*o*n*d*a*y, so two anagrams would compare equal.
  """
  for word in re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s):
    if word.lower() not in _MATH_WORDS:
      return True
  return False


_NUMBER_RE = re.compile(
    r"(?P<sign>[+-]?)(?:(?P<dec>\d+(?:\.\d*)?|\.\d+)"
    r"|(?P<num>\d+)/(?P<den>\d+)"
    r"|\\frac\{(?P<fnum>\d+)\}\{(?P<fden>\d+)\})")


def _as_number(s: str) -> tuple[fractions.Fraction, bool] | None:
  """(exact value, written with a decimal point) for a plain number, else None."""
  match = _NUMBER_RE.fullmatch(s)
  if not match or len(s) > 60:
    return None
  sign = -1 if match.group("sign") == "-" else 1
  if match.group("dec") is not None:
    return sign * fractions.Fraction(match.group("dec")), "." in match.group("dec")
  num, den = (match.group("num"), match.group("den")) if match.group("num") is not None \
      else (match.group("fnum"), match.group("fden"))
  if int(den) == 0:
    return None
  return sign * fractions.Fraction(int(num), int(den)), False


def answer_key(answer: str | None) -> str | None:
  """A canonical key for majority voting: equal keys mean equal answers.

  Plain numbers map to their exact value (`0.5`, `1/2` and `\\dfrac12` share a key); other
  answers to their normalized text (lower-cased for text answers). Different keys can still be
  equivalent (`2\\sqrt{2}` vs `\\sqrt{8}`): they then vote apart.

  Args:
    answer: an extracted answer, or None.

  Returns:
    The key, or None when there is no answer.
  """
  if answer is None:
    return None
  s = normalize_answer(answer)
  if not s:
    return None
  number = _as_number(s)
  if number is not None:
    return str(number[0])
  return s.lower() if _is_text_answer(s) else s


# ----------------------------------------------------------------------------- equivalence

# Two plain numbers, one written as a decimal, that differ by more than this (relative) are
# unequal; closer ones go to math-verify, whose rounding rule decides (with _math_worker's veto).
_DEFER_RTOL = 1e-5


def answers_equal(gold: str, pred: str, timeout_s: float = 5.0,
                  question: str | None = None) -> bool:
  """Whether a predicted answer equals the gold answer (both extracted, not normalized).

  Args:
    gold: the reference answer (e.g. a MATH solution's last `\\boxed{}` content).
    pred: the model's extracted answer.
    timeout_s: time limit for the symbolic comparison; over it counts as not equal.
    question: the problem's text, when known: it decides the form where it asks for one
      ("Expand", "Factor", "simplest radical form", "common fraction", "in base 2", "what
      percent", ...).

  Returns:
    True only when the answers are equivalent; False for garbage, timeouts and checker errors.
  """
  return _verdict(gold, pred, timeout_s, question)[0]


@functools.lru_cache(maxsize=1 << 16)
def _reading(text: str, question: _forms.Question) -> _forms.Answer | None:
  try:
    return _forms.read_answer(text, question)
  except RecursionError:  # absurd nesting: left to the string and sympy checks
    return None


def _verdict(gold: str, pred: str, timeout_s: float,
             question: str | None = None) -> tuple[bool, str]:
  """(equal, how it was decided)."""
  if not isinstance(gold, str) or not isinstance(pred, str):
    return False, "empty answer"
  q = _forms.read_question(question)
  ga, pa = _reading(gold, q), _reading(pred, q)
  if ga is not None and pa is not None:
    try:
      same = _same.same(ga, pa, q)
    except RecursionError:
      same = False
    if same is not None:
      return same, ga.kind if ga.kind == pa.kind else f"{ga.kind} vs {pa.kind}"
  g, p = normalize_answer(gold), normalize_answer(pred)
  if not g or not p:
    return False, "empty answer"
  if g == p:
    return True, "same text"
  if q.asks_form or (ga is not None and ga.kind == "based"):
    # The question asks for a form that only our reader can check.
    return False, "form not checkable"
  if _is_text_answer(g) or _is_text_answer(p):
    return g.lower() == p.lower(), "text"
  gn, pn = _as_number(g), _as_number(p)
  if gn is not None and pn is not None:
    (gv, g_dec), (pv, p_dec) = gn, pn
    if gv == pv:
      return True, "number"
    if not (g_dec or p_dec) or abs(gv - pv) > _DEFER_RTOL * max(abs(gv), abs(pv)):
      return False, "number"
  if len(g) > _MAX_ANSWER_CHARS or len(p) > _MAX_ANSWER_CHARS:
    return False, "too long for symbolic comparison"
  verdict = _symbolic_equal(g, p, timeout_s)
  if verdict is None:
    return False, "symbolic comparison timed out"
  return verdict, "symbolic"


@functools.lru_cache(maxsize=1 << 16)
def _symbolic_equal(gold: str, pred: str, timeout_s: float) -> bool | None:
  return _POOL.equal(gold, pred, timeout_s)


_STARTUP_TIMEOUT_S = 120.0


class _Worker:
  """One `_math_worker.py` child process speaking one JSON line per comparison."""

  _SOURCE = None  # the worker's source, read once

  def __init__(self):
    if _Worker._SOURCE is None:
      path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_math_worker.py")
      with open(path, encoding="utf-8") as f:
        _Worker._SOURCE = f.read()
    # -I: neither PYTHONPATH nor the working directory on sys.path (run from rewards/, our
    # math.py would shadow the standard library's math).
    self.proc = subprocess.Popen(
        [sys.executable, "-I", "-c", _Worker._SOURCE], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, start_new_session=True)
    self._buffer = b""
    self.ready = False  # the worker says "ready" once sympy and math-verify are imported

  def ask(self, gold: str, pred: str, timeout_s: float) -> bool | None:
    """The worker's verdict, or None if it did not answer in time (it is then killed)."""
    return self.request([gold, pred], timeout_s)

  def request(self, request, timeout_s: float) -> bool | None:
    """Sends one JSON request; its 0/1 answer as a bool, None on timeout or a dead worker."""
    if not self.ready:
      # Importing sympy takes about a second (more on a loaded machine); not part of the limit.
      self.ready = self._read_line(time.monotonic() + _STARTUP_TIMEOUT_S) == b"ready"
      if not self.ready:
        self.kill()
        return None
    try:
      self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
    except OSError:
      self.kill()
      return None
    line = self._read_line(time.monotonic() + timeout_s)
    if line not in (b"0", b"1"):
      self.kill()
      return None
    return line == b"1"

  def _read_line(self, deadline: float) -> bytes | None:
    fd = self.proc.stdout.fileno()
    while b"\n" not in self._buffer:
      remaining = deadline - time.monotonic()
      if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
        return None
      chunk = os.read(fd, 4096)
      if not chunk:
        return None
      self._buffer += chunk
    line, self._buffer = self._buffer.split(b"\n", 1)
    return line.strip()

  def kill(self) -> None:
    try:
      self.proc.kill()
    except OSError:
      pass
    self.proc.wait()
    for pipe in (self.proc.stdin, self.proc.stdout):
      pipe.close()


class _WorkerPool:
  """Thread-safe pool of symbolic workers: one per concurrent caller, reused while idle.

  After a fork the child starts an empty pool of its own (with a new lock, in case a thread held
  the old one at the fork): the pipes of the parent's workers must not be shared between
  processes.
  """

  def __init__(self, max_idle: int = 8):
    self._lock = threading.Lock()
    self._idle: list[_Worker] = []
    self._pid = os.getpid()
    self._max_idle = max_idle
    os.register_at_fork(after_in_child=self._forget_after_fork)

  def _forget_after_fork(self) -> None:
    self._lock = threading.Lock()
    self._idle, self._pid = [], os.getpid()

  def equal(self, gold: str, pred: str, timeout_s: float) -> bool | None:
    worker = self._take()
    verdict = worker.ask(gold, pred, timeout_s)
    if verdict is not None:
      self._give_back(worker)
    return verdict

  def _take(self) -> _Worker:
    with self._lock:
      if self._pid != os.getpid():
        self._idle, self._pid = [], os.getpid()
      if self._idle:
        return self._idle.pop()
    return _Worker()

  def _give_back(self, worker: _Worker) -> None:
    with self._lock:
      if self._pid == os.getpid() and len(self._idle) < self._max_idle:
        self._idle.append(worker)
        return
    worker.kill()

  def clear_worker_caches(self) -> None:
    """Asks each idle worker to forget its parsed answers."""
    with self._lock:
      idle = list(self._idle) if self._pid == os.getpid() else []
    for worker in idle:
      worker.request("clear", _STARTUP_TIMEOUT_S)

  def close(self) -> None:
    """Stops the idle workers (busy ones stop when their caller finishes)."""
    with self._lock:
      idle, self._idle = (self._idle, []) if self._pid == os.getpid() else ([], [])
    for worker in idle:
      worker.kill()


_POOL = _WorkerPool()
atexit.register(_POOL.close)


def clear_caches() -> None:
  """Forgets cached verdicts and the idle workers' parsed answers (benchmarks measure cold
  checks; the workers' parser stays warm, as in a long E-step)."""
  _symbolic_equal.cache_clear()
  _POOL.clear_worker_caches()


# ----------------------------------------------------------------------------- the reward


@dataclasses.dataclass(frozen=True)
class MathReward:
  """Reward 1 when the completion's final answer equals the problem's `answer` field.

  Attributes:
    extractors: answer markers that count, in `EXTRACTORS` (e.g. GSM8K adds "gsm8k").
    timeout_s: time limit per symbolic comparison.
  """
  extractors: tuple[str, ...] = ("boxed", "final_answer", "answer_is")
  timeout_s: float = 5.0

  def __call__(self, problem: Mapping, completion: str) -> Verdict:
    """Scores one completion.

    Args:
      problem: needs "answer", the gold final answer (a string); "question" (generic JSONL,
        GSM8K) or "problem" (MATH), when present, decides the answer's form where it asks for
        one.
      completion: the model's text.

    Returns:
      A Verdict with the extracted answer and its voting key.
    """
    try:
      gold = problem.get("answer")
      if not isinstance(gold, str) or not gold.strip():
        return Verdict(False, "problem has no gold answer")
      pred = extract_answer(completion, self.extractors)
      if pred is None:
        return Verdict(False, "no final answer found")
      question = problem.get("question") or problem.get("problem")
      equal, how = _verdict(gold, pred, self.timeout_s,
                            question if isinstance(question, str) else None)
      reason = f"correct ({how})" if equal else f"wrong answer ({how})"
      return Verdict(equal, reason, answer=pred, key=answer_key(pred))
    except Exception as e:  # a checker bug must cost one sample, not the run
      return Verdict(False, f"checker error: {type(e).__name__}: {e}"[:300])

  def score_batch(self, problems: Sequence[Mapping], completions: Sequence[str],
                  workers: int | None = None) -> list[Verdict]:
    """Scores many completions; symbolic checks run in parallel worker processes.

    Args:
      problems: one problem per completion.
      completions: the model's texts.
      workers: threads (each drives one symbolic worker process); default: CPU count.

    Returns:
      One Verdict per completion, in order.
    """
    from concurrent.futures import ThreadPoolExecutor
    if len(problems) != len(completions):
      raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
      return list(pool.map(self, problems, completions))
