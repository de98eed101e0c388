"""Symbolic answer comparison in a child process (run by `math.py`, never imported there).

math-verify's own time limits use SIGALRM, which works only in the main thread and cannot stop
C code (sympy's big-integer arithmetic on `10^{10^{10}}` holds the interpreter for minutes). So
the parent sends each comparison here and kills this process when it runs out of time: that works
from any thread or process and stops anything. One request per line on stdin, JSON
`[gold, pred]`; one answer per line on stdout, `1` (equal), `0` (not equal or unparsable), after a
first line `ready` once the imports are done.

This file is passed to `python -I -c`, so it imports nothing from restem_jax.
"""

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


def compare(gold_text: str, pred_text: str) -> bool:
  """math-verify's verdict on two extracted answers, with our numeric veto."""
  from math_verify import parse, verify
  gold = parse(f"${gold_text}$", parsing_timeout=None)
  pred = parse(f"${pred_text}$", parsing_timeout=None)
  if not gold or not pred:
    return False
  if not verify(gold, pred, timeout_seconds=None):
    return False
  # parse() returns [sympy value, source string]; veto on the parsed values.
  return numbers_agree(gold[0], pred[0]) if not isinstance(gold[0], str) and \
      not isinstance(pred[0], str) else True


def main() -> None:
  resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))
  # Our parent owns the time limit; math-verify would warn once that it does not.
  logging.disable(logging.CRITICAL)
  import math_verify  # noqa: F401  (imported before "ready", so no check pays for it)
  out = sys.stdout
  out.write("ready\n")
  out.flush()
  for line in sys.stdin:
    try:
      gold_text, pred_text = json.loads(line)
      verdict = compare(str(gold_text), str(pred_text))
    except Exception:  # garbage in any form (incl. MemoryError, RecursionError) is "not equal"
      verdict = False
    out.write("1\n" if verdict else "0\n")
    out.flush()


if __name__ == "__main__":
  main()
