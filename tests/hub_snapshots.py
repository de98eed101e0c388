"""Tiny local snapshots of Hugging Face hub data sets, in each hub repository's file layout and
column names (parquet written with pyarrow), with right and wrong completions for scoring.

    paths = hub_snapshots.write_all(tmp_path)   # {name: snapshot root}

Layouts (as published on the hub): openai/gsm8k main/ and socratic/ config dirs;
EleutherAI/hendrycks_math one dir per subject; HuggingFaceH4/MATH-500 test.jsonl;
codeparrot/apps train.jsonl / test.jsonl; openai/openai_humaneval openai_humaneval/;
google-research-datasets/mbpp full/ and sanitized/, each with train, test, validation, prompt.
"""

from __future__ import annotations

import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

SHARD = "-00000-of-00001.parquet"


def _parquet(path: pathlib.Path, rows: list[dict], schema: pa.Schema) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _jsonl(path: pathlib.Path, rows: list[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _hub_files(root: pathlib.Path) -> None:
  """What a snapshot download also holds besides the data."""
  root.mkdir(parents=True, exist_ok=True)
  (root / "README.md").write_text("---\nlicense: mit\n---\n# dataset card\n")
  (root / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")


def _s(*names):
  return pa.schema([(n, pa.string()) for n in names])


# ----------------------------------------------------------------------------- math

GSM8K = {
    "train": [("Tom has 3 apples and buys 4 more. How many apples does he have?",
               "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"),
              ("A box holds 6 pens. How many pens are in 2 boxes?",
               "2 * 6 = <<2*6=12>>12 pens.\n#### 12")],
    "test": [("Sam reads 5 pages a day for 3 days. How many pages?",
              "5 * 3 = <<5*3=15>>15\n#### 15"),
             ("Ann had 10 coins and lost 4. How many are left?", "10 - 4 = <<10-4=6>>6\n#### 6"),
             ("What is 1,000 + 450?", "1000 + 450 = 1450\n#### 1,450")],
}


def write_gsm8k(root: pathlib.Path) -> pathlib.Path:
  _hub_files(root)
  for config in ("main", "socratic"):
    for split, rows in GSM8K.items():
      answer = (lambda a: a) if config == "main" else (lambda a: "How? " + a)
      _parquet(root / config / f"{split}{SHARD}",
               [{"question": q, "answer": answer(a)} for q, a in rows], _s("question", "answer"))
  return root


HENDRYCKS = {
    "algebra": {"train": [("Solve $x + 1 = 3$.", "Level 1", "$x = \\boxed{2}$.")],
                "test": [("What is $2^3$?", "Level 1", "$2^3 = \\boxed{8}$."),
                         ("Simplify $\\frac{6}{4}$.", "Level 2",
                          "It is $\\boxed{\\frac{3}{2}}$.")]},
    "prealgebra": {"train": [("What is $5 \\cdot 5$?", "Level 1", "$\\boxed{25}$")],
                   "test": [("What is $7 - 9$?", "Level 1", "$7 - 9 = \\boxed{-2}$.")]},
}


def write_hendrycks_math(root: pathlib.Path) -> pathlib.Path:
  _hub_files(root)
  for subject, splits in HENDRYCKS.items():
    kind = subject.replace("_", " ").title()
    for split, rows in splits.items():
      _parquet(root / subject / f"{split}{SHARD}",
               [{"problem": p, "level": lv, "type": kind, "solution": s} for p, lv, s in rows],
               _s("problem", "level", "type", "solution"))
  return root


MATH500 = [
    {"problem": "Compute $\\sqrt{16}$.", "solution": "It is $\\boxed{4}$.", "answer": "4",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Find $x$ if $2x = 1$.", "solution": "$x = \\boxed{\\frac{1}{2}}$",
     "answer": "\\frac{1}{2}", "subject": "Algebra", "level": 2,
     "unique_id": "test/algebra/24.json"},
]


def write_math500(root: pathlib.Path) -> pathlib.Path:
  _hub_files(root)
  _jsonl(root / "test.jsonl", MATH500)
  return root


# ----------------------------------------------------------------------------- code

APPS = {
    "train": [{"problem_id": 0, "question": "Print the sum of two integers on one line.",
               "solutions": json.dumps(["a, b = map(int, input().split())\nprint(a + b)\n"]),
               "input_output": json.dumps({"inputs": ["1 2\n", "5 5\n"],
                                           "outputs": ["3\n", "10\n"]}),
               "difficulty": "introductory", "url": "https://example.com/0", "starter_code": ""}],
    "test": [{"problem_id": 4000, "question": "Print the product of two integers.",
              "solutions": json.dumps(["a, b = map(int, input().split())\nprint(a * b)\n"]),
              "input_output": json.dumps({"inputs": ["2 3\n", "4 0\n"],
                                          "outputs": ["6\n", "0\n"]}),
              "difficulty": "introductory", "url": "https://example.com/4000",
              "starter_code": ""},
             {"problem_id": 4001, "question": "Return the largest element of xs.",
              "solutions": json.dumps(["def largest(xs):\n    return max(xs)\n"]),
              "input_output": json.dumps({"fn_name": "largest", "inputs": [[[1, 5, 2]], [[-1]]],
                                          "outputs": [[5], [-1]]}),
              "difficulty": "interview", "url": "https://example.com/4001",
              "starter_code": "def largest(xs):\n"}],
}


def write_apps(root: pathlib.Path) -> pathlib.Path:
  _hub_files(root)
  for split, rows in APPS.items():
    _jsonl(root / f"{split}.jsonl", rows)
  return root


HUMANEVAL = [
    {"task_id": "HumanEval/0",
     "prompt": "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n"
               "    \"\"\"Sum of xs.\n    >>> total([1, 2])\n    3\n    \"\"\"\n",
     "canonical_solution": "    return sum(xs)\n",
     "test": "\n\ndef check(candidate):\n    assert candidate([]) == 0\n"
             "    assert candidate([1, 2, 3]) == 6\n",
     "entry_point": "total"},
    {"task_id": "HumanEval/1",
     "prompt": "def twice(s: str) -> str:\n    \"\"\"s repeated twice.\"\"\"\n",
     "canonical_solution": "    return s + s\n",
     "test": "\n\ndef check(candidate):\n    assert candidate('ab') == 'abab'\n"
             "    assert candidate('') == ''\n",
     "entry_point": "twice"},
]


def write_humaneval(root: pathlib.Path) -> pathlib.Path:
  _hub_files(root)
  _parquet(root / "openai_humaneval" / f"test{SHARD}", HUMANEVAL,
           _s("task_id", "prompt", "canonical_solution", "test", "entry_point"))
  return root


# MBPP "full" rows: (task_id, text, code, test_list, test_setup_code). The code uses a tab
# indent and an import and a helper, as many MBPP reference programs do.
MBPP_FULL = {
    "prompt": [(1, "Write a function to add two numbers.",
                "def add(a, b):\n    return a + b", ["assert add(1, 2) == 3"], "")],
    "train": [(601, "Write a function to find the shared elements of two lists.",
               "def similar_elements(a, b):\n\treturn tuple(sorted(set(a) & set(b)))",
               ["assert set(similar_elements((3, 4, 5), (5, 7, 4))) == set((4, 5))",
                "assert similar_elements((1, 2), (3,)) == ()"], "")],
    "test": [(11, "Write a python function to find the\nsquare root of a perfect square.",
              "import math\ndef root(n):\n    return _isqrt(n)\n\ndef _isqrt(n):\n"
              "    return int(math.isqrt(n))",
              ["assert root(16) == 4", "assert root(1) == 1", "assert root(OFFSET) == 3"],
              "OFFSET = 9"),
             (12, "Write a function to reverse a string.", "def rev(s): \r\n    return s[::-1] ",
              ["assert rev('abc') == 'cba'", "assert rev('') == ''"], "")],
    "validation": [(511, "Write a function to square a number.", "def sq(x):\n  return x * x",
                    ["assert sq(3) == 9", "assert sq(-2) == 4"], "")],
}
MBPP_SANITIZED = {
    "prompt": [(1, "Write a function to add two numbers.", "def add(a, b):\n    return a + b",
                ["assert add(1, 2) == 3"], [])],
    "train": [(601, "Write a function to find the shared elements of two lists.",
               "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))",
               ["assert set(similar_elements((3, 4, 5), (5, 7, 4))) == set((4, 5))"], [])],
    "test": [(17, "Write a function to find the area of a circle of radius r.",
              "import math\ndef circle_area(r):\n    return math.pi * r * r",
              ["assert math.isclose(circle_area(1), 3.141592653589793, rel_tol=0.001)",
               "assert math.isclose(circle_area(2), 12.566370614359172, rel_tol=0.001)"],
              ["import math"]),
             (12, "Write a function to reverse a string.", "def rev(s):\n    return s[::-1]",
              ["assert rev('abc') == 'cba'"], [])],
    "validation": [(511, "Write a function to square a number.", "def sq(x):\n  return x * x",
                    ["assert sq(3) == 9"], [])],
}

# Right and wrong whole programs for the MBPP test splits, by task id.
MBPP_WRONG = {11: "def root(n):\n    return n // 4\n", 12: "def rev(s):\n    return s\n",
              17: "def circle_area(r):\n    return 3 * r * r\n"}


def write_mbpp(root: pathlib.Path) -> pathlib.Path:
  _hub_files(root)
  full_schema = pa.schema([("task_id", pa.int32()), ("text", pa.string()),
                           ("code", pa.string()), ("test_list", pa.list_(pa.string())),
                           ("test_setup_code", pa.string()),
                           ("challenge_test_list", pa.list_(pa.string()))])
  for split, rows in MBPP_FULL.items():
    _parquet(root / "full" / f"{split}{SHARD}",
             [{"task_id": t, "text": x, "code": c, "test_list": tl, "test_setup_code": su,
               "challenge_test_list": []} for t, x, c, tl, su in rows], full_schema)
  sanitized_schema = pa.schema([("source_file", pa.string()), ("task_id", pa.int32()),
                                ("prompt", pa.string()), ("code", pa.string()),
                                ("test_imports", pa.list_(pa.string())),
                                ("test_list", pa.list_(pa.string()))])
  for split, rows in MBPP_SANITIZED.items():
    _parquet(root / "sanitized" / f"{split}{SHARD}",
             [{"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": t,
               "prompt": x, "code": c, "test_imports": ti, "test_list": tl}
              for t, x, c, tl, ti in rows], sanitized_schema)
  return root


WRITERS = {"gsm8k": write_gsm8k, "hendrycks_math": write_hendrycks_math,
           "math500": write_math500, "apps": write_apps, "humaneval": write_humaneval,
           "mbpp": write_mbpp}


def write_all(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """Every snapshot under root/<name>; returns {name: snapshot root}."""
  return {name: write(root / name) for name, write in WRITERS.items()}
