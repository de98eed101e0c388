"""Symbolic answer comparison in a child process (run by `math.py`, never imported there).

math-verify's own time limits use SIGALRM, which works only in the main thread and cannot stop
C code (sympy's big-integer arithmetic on `10^{10^{10}}` holds the interpreter for minutes). So
the parent sends each comparison here and kills this process when it runs out of time: that works
from any thread or process and stops anything. One request per line on stdin, JSON
`[gold, pred]` (or `"clear"`: forget cached parses); one answer per line on stdout, `1` (equal)
or `0` (not equal or unparsable), after a first line `ready` once the imports are done.

This file is passed to `python -I -c`, so it imports nothing from restem_jax.
"""

import functools
import json
import logging
import resource
import sys

# A comparison that explodes sympy's memory must fail here, not take the host down.
_MEMORY_BYTES = 2 << 30
# Relative tolerance when either side is written with a decimal point, and for exact values
# (whose difference, evaluated at 50 digits, is either 0 or far above this).
_FLOAT_RTOL = 2e-6  # 0.333333 for 1/3 is 1e-6 off: inside, with room for rounding
_EXACT_RTOL = 1e-30


def _numeric_value(expr):
  """The value of a closed-form number as an mpmath-backed sympy Float, else None."""
  import sympy
  if not isinstance(expr, sympy.Expr) or isinstance(expr, sympy.MatrixBase):
    return None
  if expr.free_symbols or not expr.is_number:
    return None
  value = sympy.N(expr, 50)
  return value if value.is_finite else None


def _without_percent(expr):
  """latex2sympy writes `X\\%` as X * UnevaluatedExpr(1/100); give X back."""
  from math_verify.grader import get_pct_val
  return get_pct_val(expr, expr)


def _close(a, b) -> bool:
  """Whether two closed-form numbers agree (relative tolerance; exact forms must be exact)."""
  import sympy
  va, vb = _numeric_value(a), _numeric_value(b)
  if va is None or vb is None:
    return True  # not plain numbers: nothing to veto
  has_float = bool(a.atoms(sympy.Float) or b.atoms(sympy.Float))
  rtol = _FLOAT_RTOL if has_float else _EXACT_RTOL
  scale = max(abs(va), abs(vb))
  return bool(abs(va - vb) <= rtol * scale)


def numbers_agree(gold, pred) -> bool:
  """Our veto on math-verify's "equal" for plain numbers.

  math-verify compares numbers with an *absolute* cut-off: `(a - b).evalf(chop=True)` for exact
  forms and rounding to 6 decimals for floats. Both call any two tiny numbers equal, so it says
  `1/2^{99}` = `1/2^{98}` and `0.0000001` = `0.0000002` (and `\\frac{1}{2^{99}}` = `0.0`). We
  require relative agreement instead, trying the values with and without a percent sign as
  math-verify does (it calls `50\\%` equal to both `50` and `0.5`).
  """
  for a in {gold, _without_percent(gold)}:
    for b in {pred, _without_percent(pred)}:
      if _close(a, b):
        return True
  return False


@functools.lru_cache(maxsize=4096)
def _parse(text: str):
  """math-verify's parse of an answer; cached: a gold answer is compared with many samples."""
  from math_verify import parse
  return tuple(parse(f"${text}$", parsing_timeout=None))


def _quick_compare(gold, pred):
  """A verdict without math-verify's `verify` (whose simplify() costs tens of ms), or None.

  Only for shapes where the answer is plain: two closed-form numbers (compared as in
  `numbers_agree`), two intervals (same open/closed ends, agreeing endpoints) and two tuples of
  numbers (agreeing element by element, in order).
  """
  import sympy
  if _numeric_value(gold) is not None and _numeric_value(pred) is not None:
    return numbers_agree(gold, pred)
  if isinstance(gold, sympy.Interval) and isinstance(pred, sympy.Interval):
    ends = (gold.start, gold.end, pred.start, pred.end)
    if all(_numeric_value(e) is not None for e in ends):
      return (gold.left_open == pred.left_open and gold.right_open == pred.right_open
              and numbers_agree(gold.start, pred.start) and numbers_agree(gold.end, pred.end))
  if type(gold) is sympy.Tuple and type(pred) is sympy.Tuple:
    items = gold.args + pred.args
    if all(_numeric_value(e) is not None for e in items):
      return len(gold) == len(pred) and all(map(numbers_agree, gold.args, pred.args))
  return None


def compare(gold_text: str, pred_text: str) -> bool:
  """math-verify's verdict on two extracted answers, with our numeric veto."""
  from math_verify import verify
  gold, pred = _parse(gold_text), _parse(pred_text)
  if not gold or not pred:
    return False
  # parse() returns [sympy value, source string] (or strings only when sympy failed).
  if isinstance(gold[0], str) or isinstance(pred[0], str):
    return verify(list(gold), list(pred), timeout_seconds=None)
  quick = _quick_compare(gold[0], pred[0])
  if quick is not None:
    return quick
  if not verify(list(gold), list(pred), timeout_seconds=None):
    return False
  return numbers_agree(gold[0], pred[0])


def main() -> None:
  resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))
  # Our parent owns the time limit; math-verify would warn once that it does not.
  logging.disable(logging.CRITICAL)
  import math_verify.parser  # imported before "ready", so no check pays for it
  out = sys.stdout
  out.write("ready\n")
  out.flush()
  for line in sys.stdin:
    try:
      request = json.loads(line)
      if request == "clear":  # benchmarks measure cold parses
        _parse.cache_clear()
        math_verify.parser.parse_latex_cached.cache_clear()
        math_verify.parser.parse_expr_cached.cache_clear()
        verdict = True
      else:
        gold_text, pred_text = request
        verdict = compare(str(gold_text), str(pred_text))
    except Exception:  # garbage in any form (incl. MemoryError, RecursionError) is "not equal"
      verdict = False
    out.write("1\n" if verdict else "0\n")
    out.flush()


if __name__ == "__main__":
  main()
