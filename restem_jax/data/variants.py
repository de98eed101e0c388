"""Number variants of worked solutions: more training rows for a from-scratch base.

A from-scratch base trained on a few hundred worked solutions memorises them: on the issue-15
word problems (600 solutions) it solved 545 of 549 of its own training problems but wrote a right
equation in 1.3% of its steps on others and copied a question's number right in about half
(README "A laptop recipe for your own math data"). It has seen too few numbers to learn reading
them or computing with them. Where the human solutions are chains of equations over the
question's numbers, each one is a template for many more problems with the same wording and
other numbers:

  question: "Ava has 47 stamps. She buys 6 packs with 8 stamps in each. ..."
  solution: "6 * 8 = 48. 47 + 48 = 95. ... The final answer is 95."
  variant:  "Ava has 31 stamps. She buys 4 packs with 7 stamps in each. ..."
            "4 * 7 = 28. 31 + 28 = 59. ... The final answer is 59."

`parse` reads a solution as such a chain: every `EXPR = NUMBER` in it (EXPR: numbers, + - * /
x × ÷ and parentheses) must hold exactly, and its last result must be the answer. Each number
of an equation's left side is a previous result (the latest equation whose result it equals), a
number of the question, or a constant ("half" -> 2); a number that could be both a previous
result and a question number makes the solution ambiguous, and it is not used. `variant` draws
new values for the question's numbers that the equations use (as many digits as the original,
decimals kept), recomputes every equation in order and keeps the draw only when each result keeps
the original's kind (whole, sign, decimal places) and order of magnitude, so that exact
divisions stay exact. Numbers of the solution outside its equations ("The final answer is 95.")
follow the value they repeat. Everything comes from the user's own solutions; nothing knows a
data set's wording.

`variant_rows` turns the train problems' solutions into decoder rows for the base. It switches
itself off, with one log line, when fewer than `MIN_CHAIN_FRACTION` of the solutions are such
chains (LaTeX solutions of MATH, prose answers, code).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import fractions
import logging
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from restem_jax.data import vocab as vocab_lib
from restem_jax.training import batches

Fraction = fractions.Fraction

# Below this share of solutions that parse as exact equation chains, variants are off.
MIN_CHAIN_FRACTION = 0.5
MIN_CHAINS = 10
_MAX_DRAWS = 200
# The equation drill's share of the base's extra tokens: arithmetic was the from-scratch base's
# weakest skill (3% of its equations right after 541 steps on variants alone, 76% of its
# operands copied right).
DRILL_SHARE = 1 / 3  # draws per variant before giving up on it (exact divisions reject most)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")
_NUM = r"\d+(?:\.\d+)?"
# An equation: a left side of numbers, operators and parentheses (at least one operator), "=",
# a number. Letters end the left side, so "x" counts only between numbers.
_EQUATION = re.compile(
    rf"(?P<lhs>[(\s]*{_NUM}(?:\s*[-+*/x×÷]\s*[(\s]*{_NUM}[)\s]*)+)\s*=\s*(?P<rhs>-?{_NUM})")
_OPS = {"x": "*", "×": "*", "÷": "/"}


def _value(text: str) -> Fraction:
  return Fraction(text)


def _places(text: str) -> int:
  return len(text.split(".")[1]) if "." in text else 0


def _format(value: Fraction, places: int) -> str | None:
  """`value` written with `places` decimals, or None when that is not exact."""
  scaled = value * 10 ** places
  if scaled.denominator != 1:
    return None
  n = int(scaled)
  if not places:
    return str(n)
  sign, n = ("-" if n < 0 else ""), abs(n)
  return f"{sign}{n // 10 ** places}.{n % 10 ** places:0{places}d}"


def _evaluate(node: ast.AST) -> Fraction:
  if isinstance(node, ast.Expression):
    return _evaluate(node.body)
  if isinstance(node, ast.Name):  # operand placeholders n0, n1, ...
    raise KeyError(node.id)
  if isinstance(node, ast.BinOp):
    a, b = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Add):
      return a + b
    if isinstance(node.op, ast.Sub):
      return a - b
    if isinstance(node.op, ast.Mult):
      return a * b
    if isinstance(node.op, ast.Div):
      return a / b  # ZeroDivisionError: the caller rejects
  if isinstance(node, ast.Constant) and isinstance(node.value, Fraction):
    return node.value
  raise ValueError(f"unsupported expression {ast.dump(node)}")


def _substitute(tree: ast.AST, values: Sequence[Fraction]) -> ast.AST:
  """A copy of `tree` with each operand placeholder nK replaced by values[K]."""
  class Sub(ast.NodeTransformer):
    def visit_Name(self, node):  # noqa: N802 (ast's naming)
      return ast.Constant(values[int(node.id[1:])])
  return Sub().visit(copy.deepcopy(tree))


@dataclasses.dataclass(frozen=True)
class Slot:
  """A number of the solution: where it is and what it stands for.

  kind: "q" (a number of the question: `ref` is its text there), "r" (equation `ref`'s result,
  used as an operand or repeated in prose), "res" (the result equation `ref` states), or "c" (a
  constant, written as is).
  """
  start: int
  end: int
  kind: str
  ref: Any


@dataclasses.dataclass(frozen=True)
class Chain:
  """A worked solution read as equations over the question's numbers (`parse`)."""
  question: str
  solution: str
  slots: tuple[Slot, ...]
  equations: tuple[tuple[ast.AST, tuple[Slot, ...], str], ...]  # (left side, operands, result)
  variables: tuple[str, ...]  # the question numbers (texts) the equations use
  spans: tuple[tuple[int, int], ...]  # each equation's (start, end) in the solution

  @property
  def answer(self) -> str:
    return self.equations[-1][2]


def parse(question: str, solution: str, answer: str) -> Chain | None:
  """Reads `solution` as a chain of exact equations over `question`'s numbers, or None.

  None when: no equation, an equation that does not hold, a last result that is not `answer`,
  no question number among the operands, or an operand that is both a question number and an
  earlier result.
  """
  try:
    answer_value = _value(answer.strip().replace(",", ""))
  except (ValueError, ZeroDivisionError):
    return None
  question_numbers = {m.group() for m in _NUMBER.finditer(question)}
  results: dict[Fraction, int] = {}  # value -> latest equation stating it
  slots, equations, variables = [], [], []
  claimed = []  # (start, end) of equation numbers
  for eq in _EQUATION.finditer(solution):
    lhs_start = eq.start("lhs")
    operands, names, pieces, at = [], [], [], 0
    lhs = eq.group("lhs")
    for m in re.finditer(_NUM, lhs):
      text = m.group()
      value = _value(text)
      in_question = text in question_numbers
      if value in results and in_question:
        return None  # which one the solution means cannot be told
      if value in results:
        slot = Slot(lhs_start + m.start(), lhs_start + m.end(), "r", results[value])
      elif in_question and value >= 2:
        slot = Slot(lhs_start + m.start(), lhs_start + m.end(), "q", text)
        if text not in variables:
          variables.append(text)
      else:
        slot = Slot(lhs_start + m.start(), lhs_start + m.end(), "c", text)
      pieces.append(lhs[at:m.start()])
      pieces.append(f"n{len(operands)}")
      at = m.end()
      operands.append(slot)
      names.append(value)
    pieces.append(lhs[at:])
    expr = "".join(pieces)
    for op, py in _OPS.items():
      expr = expr.replace(op, py)
    try:
      tree = ast.parse(expr.strip(), mode="eval")
      value = _evaluate(_substitute(tree, names))
    except (SyntaxError, ValueError, ZeroDivisionError):
      return None
    rhs = eq.group("rhs")
    if value != _value(rhs):
      return None
    index = len(equations)
    equations.append((tree, tuple(operands), rhs))
    slots.extend(operands)
    slots.append(Slot(eq.start("rhs"), eq.end("rhs"), "res", index))
    claimed.append((eq.start(), eq.end()))
    results[value] = index
  if not equations or not variables or _value(equations[-1][2]) != answer_value:
    return None
  # Numbers in the prose repeat a result ("The final answer is 95.") or are constants.
  final = {}
  for m in _NUMBER.finditer(solution):
    if any(s <= m.start() < e for s, e in claimed):
      continue
    before = [k for k, (s, _) in enumerate(claimed) if s < m.start()]
    known = {_value(equations[k][2]): k for k in before}
    value = _value(m.group())
    if value in known:
      final[m.start()] = Slot(m.start(), m.end(), "r", known[value])
  slots = sorted(slots + list(final.values()), key=lambda s: s.start)
  return Chain(question, solution, tuple(slots), tuple(equations), tuple(variables),
               tuple(claimed))


def _draw(text: str, rng: random.Random) -> str:
  """A number with as many digits (and decimals) as `text`, at least 2."""
  whole, _, decimals = text.partition(".")
  digits = len(whole.lstrip("0")) or 1
  low = 2 if digits == 1 else 10 ** (digits - 1)
  out = str(rng.randint(low, 10 ** digits - 1))
  if decimals:
    out += "." + "".join(str(rng.randint(0, 9)) for _ in decimals)
  return out


def _keeps_kind(new: Fraction, old_text: str) -> bool:
  old = _value(old_text)
  if (new < 0) != (old < 0) or _format(new, _places(old_text)) is None:
    return False
  return abs(new) <= 10 * max(abs(old), 10)


def variant(chain: Chain, rng: random.Random) -> tuple[str, str, str] | None:
  """(question, solution, answer) with new numbers for the chain's question numbers, or None.

  Every equation of the variant holds exactly, its results keep the original's kind, and no
  two of its question numbers, nor a question number and a result, are alike (so `parse` reads
  the variant as the same chain); None when `_MAX_DRAWS` draws found no such numbers.
  """
  fixed = {_value(m.group()) for m in _NUMBER.finditer(chain.question)} - {
      _value(v) for v in chain.variables}
  for _ in range(_MAX_DRAWS):
    new = {v: _draw(v, rng) for v in chain.variables}
    drawn = {_value(v) for v in new.values()}
    if len(drawn) < len(new) or drawn & fixed:
      continue  # two numbers of the question alike: which one an equation uses is unclear
    results: list[str] = []
    for tree, operands, rhs in chain.equations:
      values = [_value(new[s.ref]) if s.kind == "q" else
                _value(results[s.ref]) if s.kind == "r" else _value(s.ref) for s in operands]
      try:
        value = _evaluate(_substitute(tree, values))
      except ZeroDivisionError:
        break
      if not _keeps_kind(value, rhs):
        break
      if value in drawn:
        break  # a result equal to a question number: unclear, as in `parse`
      results.append(_format(value, _places(rhs)))
    else:
      question = _NUMBER.sub(lambda m: new.get(m.group(), m.group()), chain.question)
      pieces, at = [], 0
      for s in chain.slots:
        pieces.append(chain.solution[at:s.start])
        pieces.append(new[s.ref] if s.kind == "q" else results[s.ref] if s.kind in ("r", "res")
                      else s.ref)
        at = s.end
      pieces.append(chain.solution[at:])
      return question, "".join(pieces), results[-1]
  return None


def equation(chain: Chain, k: int, rng: random.Random) -> str | None:
  """Equation `k` of `chain` with new operands of the same digits (constants kept), or None.

  The text is the solution's, from the equation's start to the next equation (or the end),
  cut after its first sentence mark; the result is computed exactly and keeps the original's
  kind (whole, sign, decimal places), else None.
  """
  tree, operands, rhs = chain.equations[k]
  start, end = chain.spans[k]
  stop = chain.spans[k + 1][0] if k + 1 < len(chain.spans) else len(chain.solution)
  tail = re.match(r"[^\n.;,]*[.;,]?", chain.solution[end:stop]).group()
  texts = [s.ref if s.kind in ("q", "c") else chain.equations[s.ref][2] for s in operands]
  new = [t if s.kind == "c" else _draw(t, rng) for s, t in zip(operands, texts)]
  try:
    value = _evaluate(_substitute(tree, [_value(t) for t in new]))
  except ZeroDivisionError:
    return None
  if not _keeps_kind(value, rhs):
    return None
  pieces, at = [], start
  for s, t in zip(operands, new):
    pieces += [chain.solution[at:s.start], t]
    at = s.end
  res = next(s for s in chain.slots if s.kind == "res" and s.ref == k)
  pieces += [chain.solution[at:res.start], _format(value, _places(rhs)),
             chain.solution[res.end:end], tail]
  return "".join(pieces)


def equation_examples(chains: Sequence[Chain], vocab, *, num_tokens: int, length: int,
                      rng: random.Random) -> list[tuple[list[int], list[int]]]:
  """Arithmetic drill: runs of the solutions' equations with new operands, `num_tokens` in all.

  Each example is equations drawn from random chains (`equation`), joined by spaces, as many as
  fit `length` tokens; it has no prompt, and every token carries loss.
  """
  templates = [(c, k) for c in chains for k in range(len(c.equations))]
  examples, total = [], 0
  while total < num_tokens:
    tokens: list[int] = []
    for _ in range(4 * length):  # draws, most of which fit
      text = equation(*rng.choice(templates), rng)
      if text is None:
        continue
      piece = list(vocab.encode((" " if tokens else "") + text.strip()))
      if len(tokens) + len(piece) > length:
        break
      tokens += piece
    if not tokens:
      break
    examples.append(([], tokens))
    total += len(tokens)
  return examples


def _chains(problems: Sequence[Mapping[str, Any]]) -> tuple[list, int]:
  """([(problem, chain)] of the problems whose solution `parse`s, number with a solution)."""
  solved = [p for p in problems if p.get("solution")]
  chains = [(p, parse(p.get("question", ""), p["solution"], p.get("answer", "")))
            for p in solved]
  return ([(p, c) for p, c in chains if c is not None and p["question"] in p.get("prompt", "")],
          len(solved))


def applies(problems: Sequence[Mapping[str, Any]]) -> bool:
  """Whether enough of `problems`' worked solutions are equation chains; logs a line if not."""
  chains, solved = _chains(problems)
  if len(chains) < max(MIN_CHAINS, MIN_CHAIN_FRACTION * solved):
    logging.info("solution variants: off: %d of %d worked solutions are chains of exact "
                 "equations over the question's numbers (need %d%% and %d)", len(chains),
                 solved, round(100 * MIN_CHAIN_FRACTION), MIN_CHAINS)
    return False
  return True


def variant_rows(problems: Sequence[Mapping[str, Any]], vocab, *, per_solution: int,
                 inputs_length: int, targets_length: int, pack: bool, seed: int = 0,
                 drill_share: float = DRILL_SHARE) -> dict[str, np.ndarray] | None:
  """Decoder rows of `per_solution` number variants of each problem's worked solution, and a
  drill of their equations (`equation_examples`) making `drill_share` of the tokens.

  Args:
    problems: train problems (`tasks.load_problems`: "question", "answer", "solution", "prompt");
      those without a solution are skipped.
    vocab: the run's seqio vocabulary.
    per_solution: variants drawn per solution (a solution's variants may repeat).
    inputs_length, targets_length: the rows' prompt and solution limits (data.*_length); a
      variant longer than either is dropped, never cut.
    pack: pack rows as the base's other rows are.
    seed: the draws' seed.
    drill_share: the equation drill's share of the rows' tokens (0: none).

  Returns:
    {feature: [N, inputs_length + targets_length]} as `batches.decoder_rows` builds them, or
    None (one log line says why) when fewer than `MIN_CHAIN_FRACTION` of the solutions (or fewer
    than `MIN_CHAINS`) are exact equation chains, or per_solution is 0.
  """
  if per_solution <= 0:
    logging.info("solution variants: off (data.solution_variants is %d)", per_solution)
    return None
  if not applies(problems):
    return None
  chains, solved = _chains(problems)
  rng = random.Random(seed)
  prefix = list(vocab_lib.prompt_prefix(vocab))
  examples, dropped = [], 0
  for problem, chain in chains:
    prompt = problem["prompt"]
    at = prompt.rfind(problem["question"])
    for _ in range(per_solution):
      v = variant(chain, rng)
      if v is None:
        dropped += 1
        continue
      question, solution, _ = v
      inputs = prefix + list(vocab.encode(prompt[:at] + question +
                                          prompt[at + len(problem["question"]):]))
      targets = list(vocab.encode(solution)) + [vocab.eos_id]
      if len(inputs) > inputs_length or len(targets) > targets_length:
        dropped += 1
        continue
      examples.append((inputs, targets))
  if not examples:
    logging.info("solution variants: off: no variant fits the rows")
    return None
  num_variants = len(examples)
  tokens = sum(len(a) + len(b) for a, b in examples)
  drill = equation_examples([c for _, c in chains], vocab, length=inputs_length + targets_length
                            - 1, num_tokens=int(tokens * drill_share / (1 - drill_share)),
                            rng=rng) if drill_share > 0 else []
  examples += drill
  rng.shuffle(examples)  # packing puts neighbours in a row: mix drill and problems
  logging.info("solution variants: %d of %d worked solutions are equation chains; %d variants "
               "(%d per solution, %d dropped: no exact draw or too long) and %d equation drill "
               "rows (%d tokens)", len(chains), solved, num_variants, per_solution, dropped,
               len(drill), sum(len(b) for _, b in drill))
  return batches.decoder_rows(examples, inputs_length + targets_length, pack=pack,
                                 start_id=vocab_lib.decoder_start_id(vocab))
