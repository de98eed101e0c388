"""The embedded tasks: determinism, disjoint splits, knobs, reference solutions that are right."""

import ast
import json
import random
import re

import pytest

from restem_jax.data import arith, prog

SIZES = {"train": 300, "valid": 40, "test": 80}


def test_arith_is_deterministic_by_seed():
  a = arith.generate(SIZES, seed=3)
  assert a == arith.generate(SIZES, seed=3)
  assert a != arith.generate(SIZES, seed=4)


def test_arith_splits_are_disjoint_and_stable():
  problems = arith.generate(SIZES, seed=0)
  questions = {s: {p["question"] for p in ps} for s, ps in problems.items()}
  assert {s: len(q) for s, q in questions.items()} == SIZES  # no duplicates inside a split
  assert not questions["train"] & questions["test"]
  assert not questions["train"] & questions["valid"]
  assert not questions["valid"] & questions["test"]
  # A bigger train split leaves test and valid as they were.
  bigger = arith.generate({**SIZES, "train": 600}, seed=0)
  assert bigger["test"] == problems["test"] and bigger["valid"] == problems["valid"]


def _check_arith_solution(problem, config):
  """Re-derives the answer from the question alone and checks every step of the solution."""
  start = int(re.match(r"Start with (\d+)\.", problem["question"]).group(1))
  ops = re.findall(r"(add|subtract|multiply by|divide by) (\d+)", problem["question"].lower())
  value = start
  steps = problem["solution"].split(". ")
  assert len(ops) == len(steps) - 1
  assert config.min_steps <= len(ops) <= config.max_steps
  for (word, n), step in zip(ops, steps):
    n = int(n)
    symbol = {"add": "+", "subtract": "-", "multiply by": "*", "divide by": "/"}[word]
    new = {"+": value + n, "-": value - n, "*": value * n, "/": value // n}[symbol]
    if symbol == "/":
      assert value % n == 0
    assert step == f"{value} {symbol} {n} = {new}"
    assert 0 <= new <= config.max_value
    value = new
  assert problem["answer"] == str(value)
  assert problem["solution"].endswith(f"The final answer is {value}.")


@pytest.mark.parametrize("knobs", [
    {},
    {"min_steps": 3, "max_steps": 4, "ops": "+-*/", "start_digits": 3, "operand_digits": 2,
     "max_value": 9999},
])
def test_arith_solutions_are_correct(knobs):
  config = arith.ArithConfig.from_dict(knobs)
  for split in arith.generate(SIZES, seed=1, config=config).values():
    for problem in split:
      assert set(problem) == {"id", "question", "answer", "solution"}
      _check_arith_solution(problem, config)


def test_arith_knobs_change_difficulty():
  easy = arith.generate({"test": 200}, 0, arith.ArithConfig(min_steps=1, max_steps=1))["test"]
  hard = arith.generate({"test": 200}, 0, arith.ArithConfig(min_steps=4, max_steps=4))["test"]
  steps = lambda ps: {p["solution"].count("=") for p in ps}
  assert steps(easy) == {1} and steps(hard) == {4}


def test_arith_problem_lengths_fit_a_tiny_model():
  # Characters as a proxy for tokens (digits split): question ~20-40, solution ~30-80 tokens.
  for p in arith.generate({"test": 200}, seed=0)["test"]:
    assert len(p["question"]) <= 110 and len(p["solution"]) <= 130


def test_arith_rejects_bad_knobs():
  with pytest.raises(ValueError, match="unknown arith knobs"):
    arith.ArithConfig.from_dict({"steps": 3})
  with pytest.raises(ValueError, match="ops"):
    arith.generate({"test": 1}, config=arith.ArithConfig(ops=("^",)))
  with pytest.raises(ValueError, match="too few distinct"):
    arith.generate({"test": 500}, config=arith.ArithConfig(
        min_steps=1, max_steps=1, start_digits=1, max_value=9, ops=("+",)))


def test_prog_is_deterministic_and_disjoint():
  a = prog.generate(SIZES, seed=2)
  assert a == prog.generate(SIZES, seed=2)
  assert a != prog.generate(SIZES, seed=5)
  keys = {s: {p["key"] for p in ps} for s, ps in a.items()}
  assert {s: len(k) for s, k in keys.items()} == SIZES
  assert not keys["train"] & keys["test"] and not keys["valid"] & keys["test"]
  assert not keys["train"] & keys["valid"]


def test_prog_tests_agree_with_reference_and_discriminate():
  for problem in prog.generate({"test": 150}, seed=0)["test"]:
    he = prog.to_humaneval(problem)
    assert he["prompt"].startswith(f"def {prog.ENTRY_POINT}(")
    ast.parse(he["prompt"] + he["canonical_solution"] + "\n" + he["test"])
    # The docstring example is the first test.
    assert f">>> transform({problem['inputs'][0]!r})" in he["prompt"]
    assert len({repr(y) for y in problem["outputs"]}) >= 4
    apps = prog.to_apps(problem)
    io = json.loads(apps["input_output"])
    assert io["fn_name"] == prog.ENTRY_POINT
    assert io["inputs"] == [[x] for x in problem["inputs"]]
    assert io["outputs"] == problem["outputs"]
    assert json.loads(apps["solutions"])[0].startswith(apps["starter_code"])


def test_prog_knobs():
  one = prog.generate({"test": 50}, 0, prog.ProgConfig(min_stages=1, max_stages=1,
                                                        kinds=("list",)))["test"]
  assert all(p["arg"] == "xs" and p["canonical_solution"].count("\n") == 2 for p in one)
  strs = prog.generate({"test": 50}, 0, prog.ProgConfig(kinds=("str",)))["test"]
  assert all(p["arg"] == "s" for p in strs)
  with pytest.raises(ValueError, match="unknown prog knobs"):
    prog.ProgConfig.from_dict({"stages": 2})


def _wrong_bodies(body):
  """Plausible wrong programs, written here independently of the generator's own mutants: an
  integer one off, another letter, a stage line dropped, two stage lines swapped."""
  lines = body.splitlines(keepends=True)
  for i, line in enumerate(lines):
    for m in re.finditer(r"\d+", line):
      for v in (int(m.group()) - 1, int(m.group()) + 1):
        yield "".join(lines[:i] + [line[:m.start()] + str(v) + line[m.end():]] + lines[i + 1:])
    for m in re.finditer(r"'([a-eA-E])'", line):
      for c in "abcde":
        if c != m.group(1).lower():
          yield "".join(lines[:i] + [line[:m.start()] + repr(c) + line[m.end():]] + lines[i + 1:])
  for i in range(len(lines) - 1):  # the last line is the return
    yield "".join(lines[:i] + lines[i + 1:])
    if i + 2 < len(lines):
      yield "".join(lines[:i] + [lines[i + 1], lines[i]] + lines[i + 2:])


def _outputs(arg, body, inputs):
  namespace = {}
  exec(f"def transform({arg}):\n{body}", namespace)  # template code, not model output
  out = []
  for x in inputs:
    try:
      out.append(repr(namespace["transform"](x)))
    except Exception as e:  # noqa: BLE001
      out.append(type(e).__name__)
  return out


def test_prog_tests_reject_wrong_programs():
  """A wrong program that differs from the reference on some input of the generator's domain
  fails the problem's unit tests (almost always: the tests are chosen against mutants)."""
  config = prog.ProgConfig()
  rng = random.Random(7)
  rejected = differing = 0
  for problem in prog.generate({"test": 120}, seed=0)["test"]:
    arg, body = problem["arg"], problem["canonical_solution"]
    if arg == "xs":
      pool = [[rng.randint(0, config.max_elem) for _ in range(rng.randint(0, config.max_len))]
              for _ in range(400)]
    else:
      pool = ["".join(rng.choice("abcde") for _ in range(rng.randint(0, config.max_len)))
              for _ in range(400)]
    reference = _outputs(arg, body, pool)
    expected = [repr(y) for y in problem["outputs"]]
    assert _outputs(arg, body, problem["inputs"]) == expected
    for wrong in _wrong_bodies(body):
      if _outputs(arg, wrong, pool) != reference:
        differing += 1
        rejected += _outputs(arg, wrong, problem["inputs"]) != expected
  assert differing > 500
  assert rejected / differing >= 0.99, (rejected, differing)
