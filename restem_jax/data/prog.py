"""`prog`: the embedded code task, small list and string transforms with unit tests.

A problem is a pipeline of two to four stages (the default knobs) applied to a list of integers
(map, filter, sort, reverse) or a string (replace, remove, reverse, repeat, upper case), and a
final step (return the result, its sum, length, largest element, a character count). Each problem
comes with

  - a HumanEval-style prompt: the signature and a docstring with one example;
  - a reference solution (the function body) that passes the tests;
  - unit tests as a HumanEval `check(candidate)` function and as APPS call-based `input_output`.

The tests are chosen greedily, from 80 random candidate inputs, to reject the plausible wrong
programs a model writes: mutants of the pipeline (a parameter off by one or another letter, a
stage dropped, two stages swapped, another final step). In the first 300 default test problems
every mutant that differs from the reference on one of 300 random inputs fails a test.

With the default knobs the prompt is ~50-110 tokens of a 512-piece SentencePiece vocabulary
(mean 75) and the body ~20-90 (mean 51), so a from-scratch model on a CPU learns the format; the
knobs in `ProgConfig` (stages, value ranges) set how often it gets the semantics right. A tiny
model most often errs by copying a stage's parameter wrong (a character, a threshold), which
temperature sampling often gets right where greedy decoding does not. Splits are disjoint by the
pipeline (not just the text), filled test, valid, train from one random stream as in `arith`.
Everything is deterministic in (sizes, seed, config).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import random

from restem_jax.data import splits

ENTRY_POINT = "transform"
SPLITS = splits.ORDER

# Stages: name -> (docstring phrase, line of code). Phrases and code take the stage parameters
# {k} (an integer) or {a}/{b} (characters) by name.
_LIST_STAGES = {
    "add": ("add {k} to each element", "xs = [x + {k} for x in xs]"),
    "mul": ("multiply each element by {k}", "xs = [x * {k} for x in xs]"),
    "gt": ("keep the elements greater than {k}", "xs = [x for x in xs if x > {k}]"),
    "lt": ("keep the elements less than {k}", "xs = [x for x in xs if x < {k}]"),
    "ne": ("remove every element equal to {k}", "xs = [x for x in xs if x != {k}]"),
    "even": ("keep the even elements", "xs = [x for x in xs if x % 2 == 0]"),
    "odd": ("keep the odd elements", "xs = [x for x in xs if x % 2 == 1]"),
    "sort": ("sort them in increasing order", "xs = sorted(xs)"),
    "rev": ("reverse their order", "xs = xs[::-1]"),
}
_LIST_FINALS = {
    "list": ("return the resulting list", "return xs"),
    "sum": ("return their sum", "return sum(xs)"),
    "count": ("return how many elements are left", "return len(xs)"),
    "max": ("return the largest element, or 0 if there is none", "return max(xs, default=0)"),
}
_STR_STAGES = {
    "replace": ("replace every '{a}' with '{b}'", "s = s.replace('{a}', '{b}')"),
    "remove": ("remove every '{a}'", "s = s.replace('{a}', '')"),
    "reverse": ("reverse it", "s = s[::-1]"),
    "repeat": ("repeat it {k} times", "s = s * {k}"),
    "upper": ("convert it to upper case", "s = s.upper()"),
}
_STR_FINALS = {
    "str": ("return the result", "return s"),
    "len": ("return its length", "return len(s)"),
    "count": ("return how many times '{a}' occurs in it", "return s.count('{a}')"),
}
_LETTERS = "abcde"  # a small alphabet, so replacements and counts hit often in short tests
_CANDIDATES = 80  # random test inputs a problem's tests are chosen from


@dataclasses.dataclass(frozen=True)
class ProgConfig:
  """Difficulty knobs of the generator.

  Attributes:
    min_stages: fewest transform stages before the final step.
    max_stages: most transform stages before the final step.
    kinds: problem kinds to draw from: "list" (list of ints) and/or "str".
    max_param: largest integer parameter of add/gt/lt/ne stages (mul and repeat use 2..3).
    max_elem: test list elements are drawn from 0..max_elem.
    max_len: longest test list or string.
    num_tests: unit tests per problem (the first one is the docstring example).
  """
  min_stages: int = 2
  max_stages: int = 4
  kinds: tuple[str, ...] = ("list", "str")
  max_param: int = 9
  max_elem: int = 9
  max_len: int = 6
  num_tests: int = 6

  def validate(self) -> None:
    """Raises ValueError for knob values the generator cannot honour."""
    if not 1 <= self.min_stages <= self.max_stages:
      raise ValueError(f"need 1 <= min_stages <= max_stages, got {self.min_stages}, "
                       f"{self.max_stages}")
    if not self.kinds or set(self.kinds) - {"list", "str"}:
      raise ValueError(f"kinds must be a non-empty subset of ('list', 'str'), got {self.kinds}")
    if self.max_param < 1 or self.max_elem < 1 or self.max_len < 1 or self.num_tests < 2:
      raise ValueError("max_param, max_elem, max_len must be >= 1 and num_tests >= 2")

  @classmethod
  def from_dict(cls, d: dict) -> ProgConfig:
    """A ProgConfig from a config dict (unknown keys are an error)."""
    d = dict(d)
    if "kinds" in d:
      d["kinds"] = tuple(d["kinds"].split(",")) if isinstance(d["kinds"], str) else tuple(
          d["kinds"])
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown prog knobs {sorted(unknown)}")
    return cls(**d)


def _params(rng: random.Random, name: str, config: ProgConfig) -> dict:
  if name in ("mul", "repeat"):
    return {"k": rng.randint(2, 3)}
  if name in ("add", "gt", "lt", "ne"):
    return {"k": rng.randint(1 if name != "gt" else 0, config.max_param)}
  if name in ("replace", "remove", "count"):
    a = rng.choice(_LETTERS)
    b = rng.choice(_LETTERS.replace(a, "") + "xyz")
    return {"a": a, "b": b}
  return {}


def _draw_pipeline(rng: random.Random, config: ProgConfig) -> tuple[str, list, tuple]:
  kind = rng.choice(config.kinds)
  stages_table = _LIST_STAGES if kind == "list" else _STR_STAGES
  finals_table = _LIST_FINALS if kind == "list" else _STR_FINALS
  stages: list[tuple[str, dict]] = []
  for _ in range(rng.randint(config.min_stages, config.max_stages)):
    used = [s for s, _ in stages]
    if "upper" in used:
      break  # upper case only last: later lower-case replacements would silently do nothing
    names = [n for n in stages_table if n not in used]
    if not names:
      break
    name = rng.choice(names)
    stages.append((name, _params(rng, name, config)))
  final = rng.choice(list(finals_table))
  final_params = _params(rng, final, config)
  if kind == "str" and final == "count" and any(s == "upper" for s, _ in stages):
    final_params["a"] = final_params["a"].upper()
  return kind, stages, (final, final_params)


def _render(kind: str, stages: list, final: tuple) -> tuple[str, str]:
  """(docstring sentence, function body) of a pipeline."""
  stages_table = _LIST_STAGES if kind == "list" else _STR_STAGES
  finals_table = _LIST_FINALS if kind == "list" else _STR_FINALS
  phrases = [stages_table[n][0].format(**p) for n, p in stages]
  phrases.append(finals_table[final[0]][0].format(**final[1]))
  subject = "Given a list of integers xs" if kind == "list" else "Given a string s"
  sentence = f"{subject}, {', then '.join(phrases[:-1])}, and {phrases[-1]}."
  code = [stages_table[n][1].format(**p) for n, p in stages]
  code.append(finals_table[final[0]][1].format(**final[1]))
  return sentence, "".join(f"    {line}\n" for line in code)


def _draw_input(rng: random.Random, kind: str, stages: list, config: ProgConfig,
                min_len: int) -> list | str:
  # Values near the pipeline's parameters (k - 1, k, k + 1, its characters) make the tests tell a
  # threshold of k from k + 1, or '>' from '>=', which uniform draws often would not.
  params = [p for _, p in stages]
  near_k = sorted({v for p in params if "k" in p for v in (p["k"] - 1, p["k"], p["k"] + 1)
                   if 0 <= v <= config.max_elem})
  n = rng.randint(min(min_len, config.max_len), config.max_len)
  if kind == "list":
    return [rng.choice(near_k) if near_k and rng.random() < 0.4 else
            rng.randint(0, config.max_elem) for _ in range(n)]
  chars = sorted({p["a"] for p in params if "a" in p} | set(_LETTERS))
  return "".join(rng.choice(chars) for _ in range(n))


def _mutants(kind: str, stages: list, final: tuple) -> list[tuple[list, tuple]]:
  """Plausible wrong pipelines: a parameter off by one or another character, a stage dropped,
  two stages swapped, another final step. The tests are chosen to reject them."""
  out = []
  for i, (name, p) in enumerate(stages):
    for key, value in p.items():
      alternatives = ([value - 1, value + 1] if isinstance(value, int) else
                      [c for c in _LETTERS if c != value])
      for v in alternatives:
        out.append((stages[:i] + [(name, {**p, key: v})] + stages[i + 1:], final))
    out.append((stages[:i] + stages[i + 1:], final))
    if i + 1 < len(stages):
      out.append((stages[:i] + [stages[i + 1], stages[i]] + stages[i + 2:], final))
  finals_table = _LIST_FINALS if kind == "list" else _STR_FINALS
  for name in finals_table:
    if name != final[0] and ("{a}" not in finals_table[name][1] or "a" in final[1]):
      out.append((stages, (name, final[1])))
  if "a" in final[1]:
    out.extend((stages, (final[0], {**final[1], "a": c})) for c in _LETTERS
               if c != final[1]["a"].lower())
  return out


def _function(body: str, arg: str):
  # The reference and its mutants are code this module wrote from its own templates (never model
  # output), so running them in-process to compute outputs is safe.
  namespace: dict = {}
  exec(f"def {ENTRY_POINT}({arg}):\n{body}", namespace)  # pylint: disable=exec-used
  return namespace[ENTRY_POINT]


def _compile(body: str, arg: str):
  """The function of `body`, returning repr(output) or how it raised."""
  fn = _function(body, arg)

  def call(x):
    try:
      return repr(fn(x))
    except Exception as e:  # pylint: disable=broad-except  # a mutant may raise: also wrong
      return f"raises {type(e).__name__}"
  return call


def _choose_tests(rng: random.Random, kind: str, stages: list, final: tuple,
                  config: ProgConfig) -> list:
  """Test inputs: the docstring example first (at least 3 long), chosen from random candidates
  to reject the most mutants, then more candidates while they reject mutants the tests so far
  let through, then the empty input, then candidates with new outputs up to `num_tests`."""
  arg = "xs" if kind == "list" else "s"
  reference = _compile(_render(kind, stages, final)[1], arg)
  mutants = [_compile(_render(kind, st, fi)[1], arg) for st, fi in _mutants(kind, stages, final)]
  candidates: list = [[] if kind == "list" else ""]  # the empty input: an edge case worth a test
  for i in range(_CANDIDATES):
    x = _draw_input(rng, kind, stages, config, 3 if i < _CANDIDATES // 4 else 0)
    if x not in candidates:
      candidates.append(x)
  expected = [reference(x) for x in candidates]
  # kills[c]: the mutants candidate c rejects.
  kills = [{m for m, mutant in enumerate(mutants) if mutant(x) != y}
           for x, y in zip(candidates, expected)]
  chosen: list[int] = []
  alive = set(range(len(mutants)))
  while len(chosen) < config.num_tests:
    pool = [c for c in range(len(candidates)) if c not in chosen and
            (chosen or len(candidates[c]) >= min(3, config.max_len))]
    if not pool:
      break
    best = max(pool, key=lambda c: (len(kills[c] & alive), len({expected[c]} - {
        expected[d] for d in chosen})))
    if not kills[best] & alive and chosen:
      # Every mutant that can be rejected is: the empty input next, then new outputs.
      rest = [c for c in pool if expected[c] not in {expected[d] for d in chosen}] or pool
      best = 0 if 0 in pool else rest[0]
    chosen.append(best)
    alive -= kills[best]
  return [candidates[c] for c in chosen]


def make_problem(rng: random.Random, config: ProgConfig) -> dict:
  """Draws one problem (without an id).

  Args:
    rng: the random stream to draw from.
    config: difficulty knobs.

  Returns:
    {"key" (the pipeline, for de-duplication), "prompt", "canonical_solution", "test",
    "entry_point", "description", "arg", "inputs", "outputs"}.
  """
  # Tests whose outputs are nearly all the same (e.g. every list filtered to empty) would pass
  # wrong programs, so a draw is kept only when its outputs take enough distinct values.
  min_distinct = min(4, config.num_tests)
  while True:
    kind, stages, final = _draw_pipeline(rng, config)
    arg = "xs" if kind == "list" else "s"
    sentence, body = _render(kind, stages, final)
    inputs = _choose_tests(rng, kind, stages, final, config)
    outputs = [_function(body, arg)(x) for x in inputs]
    if len(inputs) == config.num_tests and len({repr(y) for y in outputs}) >= min_distinct:
      break
  prompt = (f"def {ENTRY_POINT}({arg}):\n    \"\"\"{sentence}\n"
            f"    >>> {ENTRY_POINT}({inputs[0]!r})\n    {outputs[0]!r}\n    \"\"\"\n")
  test = "def check(candidate):\n" + "".join(
      f"    assert candidate({x!r}) == {y!r}\n" for x, y in zip(inputs, outputs))
  return {"key": json.dumps([kind, stages, final], sort_keys=True), "prompt": prompt,
          "canonical_solution": body, "test": test, "entry_point": ENTRY_POINT,
          "description": sentence, "arg": arg, "inputs": inputs, "outputs": outputs}


def generate(sizes: dict[str, int], seed: int = 0,
             config: ProgConfig = ProgConfig()) -> dict[str, list[dict]]:
  """Generates disjoint splits of `prog` problems.

  Args:
    sizes: number of problems per split name, filled test, valid, train, then others sorted.
    seed: the random seed; the output is a pure function of (sizes, seed, config).
    config: difficulty knobs.

  Returns:
    split -> problems as `make_problem` returns them plus "task_id": "prog/SPLIT/I" (a fresh
    copy each call: drawing the tests takes seconds, so the draw is cached per arguments).

  Raises:
    ValueError: if the knobs admit fewer distinct problems than requested.
  """
  config.validate()
  return copy.deepcopy(_generate(tuple(sizes.items()), seed, config))


@functools.lru_cache(maxsize=4)
def _generate(sizes: tuple, seed: int, config: ProgConfig) -> dict[str, list[dict]]:
  return splits.draw(dict(sizes), random.Random(f"prog-{seed}"),
                     lambda rng: make_problem(rng, config), key="key", id_field="task_id",
                     name="prog", knobs=config)


def fresh_check(problem: dict, num_inputs: int = 300, seed: int = 0,
                config: ProgConfig = ProgConfig()) -> str:
  """A HumanEval `check(candidate)` on fresh random inputs: the truth behind the unit tests.

  A program that passes a problem's few unit tests may still be wrong elsewhere (a false
  positive of the reward); this check, on inputs the tests do not have, tells.

  Args:
    problem: one problem from `generate` (its "key" is the pipeline).
    num_inputs: how many distinct inputs to draw (fewer when the knobs admit fewer).
    seed: the random seed of the draw (with the problem's key).
    config: the knobs the problem was generated with (input lengths and values).

  Returns:
    Python source defining check(candidate), which asserts candidate(x) == the reference's
    output for each input x.
  """
  kind, stages, final = json.loads(problem["key"])
  arg = "xs" if kind == "list" else "s"
  reference = _function(_render(kind, stages, final)[1], arg)
  rng = random.Random(f"prog-fresh-{seed}-{problem['key']}")
  seen = {repr(x) for x in problem["inputs"]}
  cases = []
  for _ in range(20 * num_inputs):
    if len(cases) == num_inputs:
      break
    x = _draw_input(rng, kind, stages, config, 0)
    if repr(x) not in seen:
      seen.add(repr(x))
      cases.append((x, reference(x)))
  return (f"def check(candidate):\n    cases = {cases!r}\n"
          f"    for x, y in cases:\n        assert candidate(x) == y, x\n")


def to_humaneval(problem: dict) -> dict[str, str]:
  """The HumanEval jsonl record of a generated problem.

  Args:
    problem: one problem from `generate`.

  Returns:
    {"task_id", "prompt", "canonical_solution", "test", "entry_point"}.
  """
  return {k: problem[k] for k in ("task_id", "prompt", "canonical_solution", "test",
                                   "entry_point")}


def to_apps(problem: dict) -> dict[str, str]:
  """The APPS jsonl record (call-based format) of a generated problem.

  Args:
    problem: one problem from `generate`.

  Returns:
    {"problem_id", "question", "solutions", "input_output", "difficulty", "url",
    "starter_code"}, with `solutions` and `input_output` JSON-encoded strings as APPS has them.
  """
  starter = f"def {ENTRY_POINT}({problem['arg']}):\n"
  example = f"{ENTRY_POINT}({problem['inputs'][0]!r}) == {problem['outputs'][0]!r}"
  question = (f"Write a function {ENTRY_POINT}({problem['arg']}). {problem['description']}"
              f"\n\nExample: {example}\n")
  io = {"fn_name": ENTRY_POINT, "inputs": [[x] for x in problem["inputs"]],
        "outputs": list(problem["outputs"])}
  return {"problem_id": problem["task_id"], "question": question,
          "solutions": json.dumps([starter + problem["canonical_solution"]]),
          "input_output": json.dumps(io), "difficulty": "introductory", "url": "",
          "starter_code": starter}
