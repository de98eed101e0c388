"""A calculator inside the decode loop: after `a op b =`, the number the model writes is exact.

GSM8K's models wrote their arithmetic as annotations that a calculator filled in while sampling
(Cobbe et al., 2021, "Training Verifiers to Solve Math Word Problems"). This is that tool for
solutions written as equation chains ("6 * 8 = 48. 47 + 48 = 95."): a small from-scratch model
learns which numbers of a question to combine long before it learns multi-digit arithmetic, so
without the tool almost every chain it writes has a wrong sum somewhere and no reward to learn
from. With it (`sampling.calculator`, on by default in configs/jsonl_math.py where the worked
solutions are equation chains), the model still writes every equation, its operands and its
final answer; only the digits of a result it starts to write right after an `=` are replaced
by the exact value. The reward still checks only the final answer, which the model copies
itself.

How it runs: each row carries a parser state (`COLUMNS` int32 columns beside the stop strings'
automaton states) that reads the tokens the row writes (not its prompt). Tokens are classed once
per vocabulary (`table`): a digit, spaces, one of + - * / (also "x" and "×" as a piece of its
own, "÷"), "=", "." or ",", or anything else (newlines included). The parser follows `A op B =`
with A and B whole numbers up to `MAX_OPERAND`, where A starts the expression. At the `=` it
computes the value: a sum, a non-negative difference, a product that fits 31 bits, an exact
quotient. Everything else is left
to the model: a longer expression (`2 + 3 * 4 =`, `x - 5 + 3 =`: anything after an operator
that did not follow a number), a negative operand, a decimal or a number with a thousands comma.
When the model's next non-space token after a computed `=` is a digit, that token and the next
ones are the value's digits, and the token after the last one cannot be a digit (its logits are
masked), so the number ends there; the value then is the A of a chained `= 48 + 2 =`. A forced
token's log-probability is the model's own for it. All of it is fixed-shape array work in the
decode step, shared by the static sampler and the rollout engine (`strategies.choose_token`).

The vocabulary must write every digit as a piece of its own (SentencePiece's split_digits, as
`data.vocab.train_sentencepiece` does): `table` refuses one whose pieces hold several digits.
"""

from __future__ import annotations

import logging
import re

import jax.numpy as jnp
import numpy as np

from restem_jax.sampling.stop_strings import piece_bytes

# Token classes: 0-9 a digit, then these; -1 anything else (newlines included).
SPACE, PLUS, MINUS, TIMES, DIVIDE, EQUALS, POINT, OTHER = 10, 11, 12, 13, 14, 15, 16, -1
_OPERATORS = {b"+": PLUS, b"-": MINUS, b"*": TIMES, b"x": TIMES, "×".encode(): TIMES,
              b"/": DIVIDE, "÷".encode(): DIVIDE, b"=": EQUALS}
# Parser phases (column 0 of a row's state).
# TAINT: inside a longer expression or a number with a decimal point or a thousands comma
# (nothing there is computed); NUMBER_POINT: a number followed by "." or ",".
(IDLE, IN_A, AFTER_A, OP, IN_B, AFTER_B, ARMED, FORCING, AFTER_FORCE, TAINT,
 NUMBER_POINT) = range(11)
PHASES = 11
# State columns: phase, A, the operator, B, the value, digits of it still to write.
COLUMNS = 6
MAX_OPERAND = 10**6
_INT_MAX = 2**31 - 1
_POW10 = np.array([10**k for k in range(10)], np.int64).astype(np.int32)


def table(vocab, vocab_size: int) -> np.ndarray:
  """int32 [vocab_size + 10]: each token id's class, then the piece written for each digit."""
  pieces = piece_bytes(vocab)
  classes = np.full((vocab_size,), OTHER, np.int32)
  digit_ids: dict[int, list[int]] = {d: [] for d in range(10)}
  several = []
  for i, b in enumerate(pieces[:vocab_size]):
    digits = sum(48 <= c <= 57 for c in b)  # ASCII 0-9
    if len(b) == 1 and digits:
      classes[i] = b[0] - ord("0")
      digit_ids[b[0] - ord("0")].append(i)
    elif digits:
      several.append(b.decode("utf-8", "replace"))
    elif b and not b.strip(b" "):
      classes[i] = SPACE
    elif b in (b".", b","):
      classes[i] = POINT
    elif b.strip(b" ") in _OPERATORS:
      classes[i] = _OPERATORS[b.strip(b" ")]
  if several:
    raise ValueError(f"sampling.calculator needs a vocabulary that writes each digit as a piece "
                     f"of its own; this one has {len(several)} pieces with digits and more, "
                     f"e.g. {several[:3]}: turn the calculator off (sampling.calculator=-1)")
  missing = [d for d, ids in digit_ids.items() if not ids]
  if missing:
    raise ValueError(f"sampling.calculator: the vocabulary has no piece for the digits {missing}")
  written = []
  for d, ids in digit_ids.items():  # the piece the tokenizer itself writes for the digit
    encoded = list(vocab.encode(str(d)))
    written.append(encoded[-1] if encoded and encoded[-1] in ids else max(ids))
  return np.concatenate([classes, np.asarray(written, np.int32)])


def empty() -> np.ndarray:
  """The table of a sampler without the calculator."""
  return np.zeros((0,), np.int32)


def columns(calc_V) -> int:
  """State columns the calculator adds to each row (0 when it is off)."""
  return COLUMNS if calc_V.shape[0] else 0


def _num_digits(v_B):
  return 1 + jnp.sum(v_B[:, None] >= jnp.asarray(_POW10[1:])[None, :], axis=-1).astype(jnp.int32)


def _digit(v_B, position_B):
  """Digit `position_B` (0 = units) of v_B."""
  return (v_B // jnp.asarray(_POW10)[position_B]) % 10


def mask_logits(calc_V, state_BC, logits_BV):
  """The logits a row draws from: no digit right after a value the calculator wrote."""
  is_digit_V = (calc_V[:logits_BV.shape[-1]] >= 0) & (calc_V[:logits_BV.shape[-1]] <= 9)
  block_B = state_BC[:, 0] == AFTER_FORCE
  return jnp.where(block_B[:, None] & is_digit_V[None, :], -jnp.inf, logits_BV)


def override(calc_V, state_BC, token_B):
  """The token each row writes: the value's next digit where the calculator is writing one."""
  V = calc_V.shape[0] - 10
  digit_ids = calc_V[V:]
  phase, value, left = state_BC[:, 0], state_BC[:, 4], state_BC[:, 5]
  cls = calc_V[token_B]
  starts = (phase == ARMED) & (cls >= 0) & (cls <= 9)
  first = digit_ids[_digit(value, _num_digits(value) - 1)]
  nxt = digit_ids[_digit(value, jnp.maximum(left - 1, 0))]
  return jnp.where(phase == FORCING, nxt, jnp.where(starts, first, token_B))


def advance(calc_V, state_BC, token_B):
  """Each row's parser state after it wrote `token_B` (see the module docstring)."""
  cls = calc_V[token_B]
  phase, a, op, b, value, left = (state_BC[:, k] for k in range(COLUMNS))
  digit = (cls >= 0) & (cls <= 9)
  d = jnp.clip(cls, 0, 9)
  space, eq, point = cls == SPACE, cls == EQUALS, cls == POINT
  is_op = (cls >= PLUS) & (cls <= DIVIDE)

  def grow(x):  # x * 10 + d, or -1 past MAX_OPERAND
    return jnp.where(x < MAX_OPERAND // 10, x * 10 + d, -1)

  def on(*pairs, default=IDLE):  # the first phase whose token condition holds
    out = default
    for cond, target in reversed(pairs):
      out = jnp.where(cond, target, out)
    return out

  # The value at "=": valid only where exact and non-negative (else -1).
  safe_b = jnp.maximum(b, 1)
  v = jnp.select(
      [op == PLUS, op == MINUS, op == TIMES, op == DIVIDE],
      [a + b, jnp.where(a >= b, a - b, -1),
       jnp.where((b == 0) | (a <= _INT_MAX // safe_b), a * b, -1),
       jnp.where((b > 0) & (a % safe_b == 0), a // safe_b, -1)], -1)
  armed = jnp.where(v >= 0, ARMED, IDLE)
  ndig = _num_digits(jnp.maximum(value, 0))
  grown_a, grown_b = grow(a), grow(b)

  nxt = jnp.select(
      [phase == k for k in range(PHASES)],
      [on((digit, IN_A), (is_op, TAINT)),  # IDLE
       on((digit, jnp.where(grown_a >= 0, IN_A, TAINT)), (space, AFTER_A), (is_op, OP),
          (point, NUMBER_POINT)),  # IN_A
       on((digit, IN_A), (space, AFTER_A), (is_op, OP)),  # AFTER_A
       on((digit, IN_B), (space, OP)),  # OP
       on((digit, jnp.where(grown_b >= 0, IN_B, TAINT)), (space, AFTER_B), (eq, armed),
          (point, NUMBER_POINT), (is_op, TAINT)),  # IN_B
       on((space, AFTER_B), (eq, armed), (is_op, TAINT)),  # AFTER_B
       on((digit, jnp.where(ndig > 1, FORCING, AFTER_FORCE)), (space, ARMED)),  # ARMED
       jnp.where(left > 1, FORCING, AFTER_FORCE),  # FORCING
       on((space, AFTER_A), (is_op, OP), (point, NUMBER_POINT)),  # AFTER_FORCE: the value is A
       on((digit | space | is_op | point, TAINT)),  # TAINT
       on((digit, TAINT))], IDLE)  # NUMBER_POINT
  starts_a = digit & ((phase == IDLE) | (phase == AFTER_A))
  new_a = jnp.select([starts_a, digit & (phase == IN_A),
                      (phase == FORCING) | ((phase == ARMED) & digit)], [d, grown_a, value], a)
  new_b = jnp.select([digit & (phase == OP), digit & (phase == IN_B)], [d, grown_b], b)
  new_op = jnp.where(is_op, cls, op)
  new_value = jnp.where(((phase == IN_B) | (phase == AFTER_B)) & eq, v, value)
  new_left = jnp.select([(phase == ARMED) & digit, phase == FORCING], [ndig - 1, left - 1], left)
  return jnp.stack([nxt, new_a, new_op, new_b, new_value, new_left], axis=-1).astype(jnp.int32)


# An equation the calculator computes, as text: A op B = C with whole numbers, not inside a
# longer expression or a decimal.
_EQUATION = re.compile(r"(?<![\d.,+\-*/x×÷] )(?<![\d.,+\-*/x×÷])\d+ *[-+*/x×÷] *\d+ *= *\d+")
MIN_FRACTION = 0.5


def applies(problems, vocab, vocab_size: int) -> bool:
  """Whether `sampling.calculator` AUTO turns on for a from-scratch model: at least
  `MIN_FRACTION` of the train / valid worked solutions write an `A op B = C` equation, and the
  vocabulary writes each digit as a piece of its own. Logs a line either way."""
  solutions = [p["solution"] for split in ("train", "valid") for p in problems.get(split, ())
               if p.get("solution")]
  with_equations = sum(bool(_EQUATION.search(s)) for s in solutions)
  if not solutions or with_equations < MIN_FRACTION * len(solutions):
    logging.info("calculator: off: %d of %d worked solutions write `A op B = C` equations "
                 "(need %d%%)", with_equations, len(solutions), round(100 * MIN_FRACTION))
    return False
  try:
    table(vocab, vocab_size)
  except ValueError as e:
    logging.info("calculator: off: %s", str(e).split(": turn")[0])
    return False
  logging.info("calculator: on: %d of %d worked solutions write `A op B = C` equations; the "
               "value after each such `=` a sample writes is exact (sampling.calculator=-1 "
               "turns it off)", with_equations, len(solutions))
  return True
