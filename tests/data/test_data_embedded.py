"""The embedded tasks: determinism, disjoint splits, knobs, reference solutions that are right."""

import ast
import json
import random
import re

import pytest

from restem_jax.data import arith, prog, truth
from restem_jax.rewards import sandbox

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


# ----------------------------------------------------------------------------- ground truth


def test_arith_steps_right_tells_compensating_slips_from_right_work():
  for problem in arith.generate({"test": 100}, seed=4, config=arith.ArithConfig(
      ops=("+", "-", "*", "/"), max_steps=4))["test"]:
    assert arith.steps_right(problem["question"], problem["solution"])
  q = "Start with 23. Add 7, then subtract 1. What is the result?"
  assert arith.reference_steps(q) == [(23, "+", 7, 30), (30, "-", 1, 29)]
  assert arith.steps_right(q, "23 + 7 = 30. 30 - 1 = 29. The final answer is 29.")
  # The reward would take these (right final answer); the ground truth does not.
  assert not arith.steps_right(q, "23 + 7 = 31. 31 - 1 = 29. The final answer is 29.")
  assert not arith.steps_right(q, "23 + 7 = 30. The final answer is 29.")  # a step skipped
  assert not arith.steps_right(q, "23 + 6 = 29. 29 - 0 = 29. The final answer is 29.")
  assert not arith.steps_right(q, "23 + 7 = 30. 30 - 1 = 29.")  # no final answer
  with pytest.raises(ValueError, match="not an arith question"):
    arith.reference_steps("What is 2 + 2?")


def _lookup_body(problem):
  """A program that passes the problem's unit tests by table lookup and is wrong elsewhere."""
  table = {repr(x): y for x, y in zip(problem["inputs"], problem["outputs"])}
  return f"    return {table!r}.get(repr({problem['arg']}), 0)\n"


def test_prog_fresh_check_separates_right_programs_from_test_fitting_ones():
  problems = prog.generate({"test": 20}, seed=3)["test"]
  for problem in problems:
    check = prog.fresh_check(problem, num_inputs=50, seed=1)
    namespace = {}
    exec(check, namespace)  # our own generated source, not model output
    ref = prog._function(problem["canonical_solution"], problem["arg"])
    namespace["check"](ref)
    assert check == prog.fresh_check(problem, num_inputs=50, seed=1)  # deterministic
    fitted = prog._function(_lookup_body(problem), problem["arg"])
    assert all(fitted(x) == y for x, y in zip(problem["inputs"], problem["outputs"]))
    with pytest.raises(AssertionError):
      namespace["check"](fitted)


def test_prog_generate_returns_a_fresh_copy():
  a = prog.generate({"test": 3}, seed=0)
  a["test"][0]["inputs"].append("mutated")
  assert "mutated" not in prog.generate({"test": 3}, seed=0)["test"][0]["inputs"]


def test_kept_precision_arith_counts_every_kept_sample():
  options = {"seed": 0, "sizes": {"train": 20, "valid": 2, "test": 2}, "knobs": {}}
  problems = {p["id"]: p for p in arith.generate(options["sizes"], 0)["train"]}
  ids = sorted(problems)[:3]
  right = [{"id": i, "text": problems[i]["solution"]} for i in ids]
  a, op, n, r = arith.reference_steps(problems[ids[0]]["question"])[0]
  slip = problems[ids[0]]["solution"].replace(f"= {r}.", f"= {r + 1}.", 1)
  out = truth.kept_precision("arith", options, problems, right + [{"id": ids[0], "text": slip}])
  assert out == {"kept_precision": 0.75, "kept_checked": 4}
  assert truth.kept_precision("gsm8k", options, problems, right) is None
  assert truth.kept_precision("arith", options, problems, []) is None


@pytest.mark.skipif(not any(sandbox.probe(b) is None for b in ("bwrap", "unshare")),
                    reason="no OS sandbox")
def test_kept_precision_prog_runs_fresh_inputs_in_the_sandbox():
  options = {"seed": 0, "sizes": {"train": 6, "valid": 1, "test": 1},
             "knobs": {"max_stages": 2}}
  generated = prog.generate(options["sizes"], 0, prog.ProgConfig(max_stages=2))["train"]
  problems = {p["task_id"]: {"id": p["task_id"], "prompt": p["prompt"],
                             "entry_point": p["entry_point"]} for p in generated}
  kept = ([{"id": p["task_id"], "text": p["canonical_solution"]} for p in generated[:3]]
          + [{"id": generated[0]["task_id"], "text": _lookup_body(generated[0])}] * 2)
  out = truth.kept_precision("prog", options, problems, kept,
                             {"humaneval_timeout_s": 5.0})
  assert out == {"kept_precision": 0.6, "kept_checked": 5}  # the duplicate counts twice
  sub = truth.kept_precision("prog", options, problems, kept, {"humaneval_timeout_s": 5.0},
                             max_checked=1, seed=0)
  assert sub["kept_checked"] in (1, 2) and sub["kept_precision"] in (0.0, 1.0)
