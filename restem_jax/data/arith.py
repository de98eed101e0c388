"""`arith`: the embedded math task, multi-step integer arithmetic with worked solutions.

A problem is a start number followed by a few operations, e.g.

  question: "Start with 23. Add 7, then multiply by 4, then subtract 15. What is the result?"
  solution: "23 + 7 = 30. 30 * 4 = 120. 120 - 15 = 105. The final answer is 105."
  answer:   "105"

It is small enough for a from-scratch model on a CPU (question ~25-40 SentencePiece tokens with
digits split, solution ~30-60) and hard in the way that matters for ReST^EM: a tiny model gets the
format right quickly but slips on carries and multiplications, so greedy decoding fails on some
problems while some of 32 temperature samples get them right. The knobs in `ArithConfig` (number
of steps, digit counts, operations, value range) move the task along that scale.

Problems are in the generic JSONL format of DESIGN.md ({"id", "question", "answer", "solution"}),
deterministic in (config, seed, sizes). Splits are disjoint by question text: one random stream
fills test first, then valid, then train, skipping any question already drawn, so a split's
problems do not change when a later split is made larger.
"""

from __future__ import annotations

import dataclasses
import random
import re

from restem_jax.data import splits

SPLITS = splits.ORDER  # fill order: see the module docstring
# The closing sentence of every solution; the math reward extracts the answer from it.
ANSWER_PHRASE = "The final answer is {answer}."
_OP_TEXT = {"+": "add {n}", "-": "subtract {n}", "*": "multiply by {n}", "/": "divide by {n}"}
_QUESTION_RE = re.compile(r"Start with (\d+)\. (.+)\. What is the result\?")
_PHRASE_RE = re.compile(r"(add|subtract|multiply by|divide by) (\d+)")
_PHRASE_OP = {"add": "+", "subtract": "-", "multiply by": "*", "divide by": "/"}
_STEP_RE = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)")
_ANSWER_RE = re.compile(ANSWER_PHRASE.replace(".", r"\.").replace("{answer}", r"(-?\d+)"))


@dataclasses.dataclass(frozen=True)
class ArithConfig:
  """Difficulty knobs of the generator.

  Attributes:
    min_steps: fewest operations after the start number.
    max_steps: most operations after the start number.
    start_digits: digits of the start number.
    operand_digits: most digits of an addend or subtrahend.
    max_factor: largest multiplier or divisor (at least 2).
    ops: operations to draw from, a subset of "+", "-", "*", "/" (division is always exact).
    max_value: every intermediate result stays in [0, max_value], so no step needs negative
      numbers and products stay short.
  """
  min_steps: int = 2
  max_steps: int = 3
  start_digits: int = 2
  operand_digits: int = 1
  max_factor: int = 9
  ops: tuple[str, ...] = ("+", "-", "*")
  max_value: int = 999

  def validate(self) -> None:
    """Raises ValueError for knob values the generator cannot honour."""
    if not 1 <= self.min_steps <= self.max_steps:
      raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, "
                       f"{self.max_steps}")
    if self.start_digits < 1 or self.operand_digits < 1:
      raise ValueError("start_digits and operand_digits must be >= 1")
    if self.max_factor < 2:
      raise ValueError(f"max_factor must be >= 2, got {self.max_factor}")
    if not self.ops or set(self.ops) - set(_OP_TEXT):
      raise ValueError(f"ops must be a non-empty subset of {sorted(_OP_TEXT)}, got {self.ops}")
    if self.max_value < 10 ** self.start_digits - 1:
      raise ValueError(f"max_value {self.max_value} is below the largest start number")

  @classmethod
  def from_dict(cls, d: dict) -> ArithConfig:
    """An ArithConfig from a config dict (unknown keys are an error, `ops` may be a string)."""
    d = dict(d)
    if isinstance(d.get("ops"), str):
      d["ops"] = tuple(d["ops"].replace(",", "").replace(" ", ""))
    elif "ops" in d:
      d["ops"] = tuple(d["ops"])
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown arith knobs {sorted(unknown)}")
    return cls(**d)


def _apply(op: str, a: int, n: int) -> int:
  if op == "+":
    return a + n
  if op == "-":
    return a - n
  if op == "*":
    return a * n
  return a // n


def _draw_step(rng: random.Random, value: int, config: ArithConfig) -> tuple[str, int] | None:
  """One operation applicable to `value` within the value range, or None if none was found."""
  for _ in range(20):
    op = rng.choice(config.ops)
    if op in "+-":
      n = rng.randint(1, 10 ** config.operand_digits - 1)
    elif op == "*":
      n = rng.randint(2, config.max_factor)
    else:
      divisors = [d for d in range(2, config.max_factor + 1) if value % d == 0]
      if not divisors:
        continue
      n = rng.choice(divisors)
    if 0 <= _apply(op, value, n) <= config.max_value:
      return op, n
  return None


def make_problem(rng: random.Random, config: ArithConfig) -> dict[str, str]:
  """Draws one problem (without an id).

  Args:
    rng: the random stream to draw from.
    config: difficulty knobs.

  Returns:
    {"question", "answer", "solution"}.
  """
  while True:
    start = rng.randint(10 ** (config.start_digits - 1), 10 ** config.start_digits - 1)
    num_steps = rng.randint(config.min_steps, config.max_steps)
    value, steps = start, []
    for _ in range(num_steps):
      step = _draw_step(rng, value, config)
      if step is None:
        break
      steps.append((value, *step))
      value = _apply(step[0], value, step[1])
    if len(steps) == num_steps:
      break
  phrases = [_OP_TEXT[op].format(n=n) for _, op, n in steps]
  instructions = ", then ".join(phrases)
  question = f"Start with {start}. {instructions[0].upper()}{instructions[1:]}. What is the result?"
  lines = [f"{a} {op} {n} = {_apply(op, a, n)}." for a, op, n in steps]
  solution = " ".join(lines + [ANSWER_PHRASE.format(answer=value)])
  return {"question": question, "answer": str(value), "solution": solution}


def reference_steps(question: str) -> list[tuple[int, str, int, int]]:
  """The right worked steps of a question this module wrote, from the question alone.

  Args:
    question: "Start with A. Add N, then multiply by M, ... What is the result?".

  Returns:
    [(left operand, op, right operand, result), ...] in order; the last result is the answer.

  Raises:
    ValueError: if the text is not a question of this generator.
  """
  m = _QUESTION_RE.fullmatch(question.strip())
  phrases = m.group(2).lower().split(", then ") if m else []
  ops = [_PHRASE_RE.fullmatch(p) for p in phrases]
  if not m or not ops or not all(ops):
    raise ValueError(f"not an arith question: {question[:80]!r}")
  value, steps = int(m.group(1)), []
  for op in ops:
    symbol, n = _PHRASE_OP[op.group(1)], int(op.group(2))
    steps.append((value, symbol, n, _apply(symbol, value, n)))
    value = steps[-1][-1]
  return steps


def steps_right(question: str, completion: str) -> bool:
  """Whether a worked solution is right at every step, not just in its final answer.

  The reward only reads the final answer, so a sample with two compensating slips ("23 + 7 = 31.
  31 - 1 = 29." for 23 + 7 - 1) earns it; this is the ground truth behind that reward.

  Args:
    question: a question this module wrote.
    completion: the model's solution.

  Returns:
    True when the completion's "a op n = r" steps are exactly the right ones, in order, and its
    last "The final answer is N." names the right answer.
  """
  steps = reference_steps(question)
  got = [(int(a), op, int(n), int(r)) for a, op, n, r in _STEP_RE.findall(completion)]
  answers = _ANSWER_RE.findall(completion)
  return got == steps and bool(answers) and int(answers[-1]) == steps[-1][-1]


def generate(sizes: dict[str, int], seed: int = 0,
             config: ArithConfig = ArithConfig()) -> dict[str, list[dict[str, str]]]:
  """Generates disjoint splits of `arith` problems.

  Args:
    sizes: number of problems per split name; known splits are filled in the order of `SPLITS`
      (test, valid, train), any other names after them in sorted order.
    seed: the random seed; the output is a pure function of (sizes, seed, config).
    config: difficulty knobs.

  Returns:
    split -> problems, each {"id": "arith/SPLIT/I", "question", "answer", "solution"}.

  Raises:
    ValueError: if the knobs admit fewer distinct problems than requested.
  """
  config.validate()
  return splits.draw(sizes, random.Random(f"arith-{seed}"),
                     lambda rng: make_problem(rng, config), key="question", id_field="id",
                     name="arith", knobs=config)
