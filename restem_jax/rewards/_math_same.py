"""Whether two answer readings (`_math_forms.Answer`) say the same thing, as a grader would.

`same(gold, pred, question)` -> True, False, or None when the values need sympy (the caller
then asks math-verify). Values are compared exactly (rationals), else at fixed evaluation
points (closed forms and expressions with variables); see `_math_expr`. The question's form
rules apply only after the values agree: a right value in the form the question forbids is
wrong, a wrong value is wrong whatever its form.
"""

from __future__ import annotations

import fractions
import math

from restem_jax.rewards import _math_expr as ex
from restem_jax.rewards import _math_shape as shape
from restem_jax.rewards._math_forms import (KNOWN_UNITS, Answer, Question, as_interval,
                                            read_answer)
from restem_jax.rewards._math_question import MARK_UNITS, unit_bases

Fraction = fractions.Fraction
# Where the question asks for a decimal, one written to 6 significant digits (0.333333 for 1/3)
# agrees; elsewhere a decimal that stops is an approximation of a value that does not stop.
_DECIMAL_RTOL = 2e-6
_EXACT_RTOL = 1e-9  # closed forms at double precision


def same(g: Answer, p: Answer, q: Question) -> bool | None:
  """Whether the predicted answer says what the gold answer says.

  Args:
    g: the gold answer's reading.
    p: the predicted answer's reading.
    q: the forms the question asks for.

  Returns:
    True / False; None when a value could not be evaluated here (the caller asks sympy).
  """
  if g.kind == "eq" or p.kind == "eq":
    return _same_eq(g, p, q)
  if g.kind in ("list", "set") or p.kind in ("list", "set"):
    return _same_collection(g, p, q)
  if g.kind == "interval" or p.kind == "interval":
    if q.pair and "bracket" in (g.kind, p.kind):
      return False  # an ordered pair is not an interval
    return _same_interval(g, p)
  if g.kind == "bracket" or p.kind == "bracket":
    return _same_bracket(g, p, q)
  if g.kind == "matrix" or p.kind == "matrix":
    return _same_matrix(g, p)
  if g.kind == "based" or p.kind == "based":
    return _same_based(g, p, q)
  if g.kind != p.kind:
    return False
  if g.kind == "clock":
    return _same_clock(g.value, p.value)
  if g.kind == "ratio":  # 3:4 and 6:8 name one ratio; the simplest form, where asked
    (a, b), (c, d) = g.value, p.value
    return a * d == b * c and (g.value == p.value or not (q.lowest_terms or q.simplify))
  if g.kind == "choice" and p.text and _words(g.value) == _words(p.value):
    return _option_agrees(p, q)
  if g.kind in ("choice", "text"):
    return _words(g.value) == _words(p.value)
  if q.base not in (None, 10) and g.text.isalnum() and g.text.isdigit() != p.text.isdigit():
    return False
  return _same_expr(g, p, q)


def _option_agrees(p: Answer, q: Question) -> bool:
  """Whether the text after a chosen letter ("(A) 6") says what the question's option A says;
  a letter with another option's value is no clear choice."""
  option = dict(q.choices).get(p.value)
  if not option:
    return True
  said, meant = read_answer(p.text, q), read_answer(option, q)
  if said is None or meant is None:
    return True
  return same(meant, said, q) is not False


def _same_clock(g, p) -> bool:
  """Times of day: 4:30 p.m. is 16:30, not 4:30 a.m.; 4:30 without a.m./p.m. is either."""
  def minutes(h, m, half):
    return (h % 12 + (12 if half == "p" else 0)) * 60 + m if half else (h % 24) * 60 + m
  if (g[2] is None) == (p[2] is None):
    return minutes(*g) == minutes(*p)
  plain, marked = (g, p) if g[2] is None else (p, g)
  if plain[0] > 12 or plain[0] == 0:  # a 24-hour time
    return minutes(*plain) == minutes(*marked)
  return plain[0] == marked[0] and plain[1] == marked[1]


def _words(text: str) -> str:
  return "".join(ch for ch in text.lower() if ch.isalnum())


# ----------------------------------------------------------------------------- structures


def _same_eq(g: Answer, p: Answer, q: Question) -> bool | None:
  gv = g.value if g.kind == "eq" else None
  pv = p.value if p.kind == "eq" else None
  general = (gv is not None and gv[0] is None) or (pv is not None and pv[0] is None)
  if q.solved_for and gv is not None and gv[0] == q.solved_for and pv is not None and (
      pv[0] != gv[0]):
    return False  # "in the form y = mx + b": 2x - y = 5 is the line, not in that form
  if not general:
    if gv is not None and pv is not None and gv[0] != pv[0]:
      return False  # x = 5 is not y = 5
    return same(gv[2] if gv else g, pv[2] if pv else p, q)
  if gv is None or pv is None:
    return False  # an equation is not an expression
  diffs = []
  for v in (gv, pv):
    rhs = v[3] if v[0] is not None else v[2]
    if v[1] is None or rhs is None:
      return None
    diffs.append(("+", [v[1], ("neg", rhs)]))
  return _proportional(*diffs, scaled=not q.normalized)


def _proportional(a, b, scaled: bool = True) -> bool | None:
  """Whether a = c * b for one nonzero constant c (the same equation a = 0, b = 0); c = 1
  unless `scaled` (the question fixes the coefficients: A > 0, their gcd 1)."""
  names = ex.variables(a) | ex.variables(b)
  if ex.variables(a) != ex.variables(b):
    return False
  envs = ex.envs(names)
  if envs is None:
    return None
  ratio = None
  for env in envs:
    try:
      va, vb = ex.evaluate(a, env), ex.evaluate(b, env)
    except (ArithmeticError, ValueError, KeyError):
      return None
    if abs(vb) == 0 or abs(va) == 0:
      if abs(va) != abs(vb):
        return False
      continue  # both sides vanish here: no information
    r = va / vb
    if ratio is not None and not ex.close(r, ratio, _EXACT_RTOL):
      return False
    ratio = r
  if ratio is not None and not scaled and not ex.close(ratio, 1, _EXACT_RTOL):
    return False
  return True if ratio is not None else None


def _same_collection(g: Answer, p: Answer, q: Question) -> bool | None:
  if "set" in (g.kind, p.kind) and "bracket" in (g.kind, p.kind):
    return False  # a set is not an ordered tuple
  if p.kind == "bracket":
    return False  # solutions listed as (-1, 4) read as a pair or an interval
  for one, other in ((g, p), (p, g)):  # {3} and 3 say the same
    if one.kind == "set" and len(one.value) == 1 and other.kind not in ("list", "set", "bracket"):
      return same(one.value[0], other, q) if one is g else same(g, one.value[0], q)
  gi = _items(g)
  pi = _items(p)
  if gi is None or pi is None or len(gi) != len(pi):
    return False
  if q.ordered and g.kind == p.kind == "list" or g.kind == "bracket" or p.kind == "bracket":
    return _all_same(gi, pi, q)
  unused = list(pi)
  for item in gi:
    for j, cand in enumerate(unused):
      if same(item, cand, q) is True:
        del unused[j]
        break
    else:
      return False
  return True


def _items(a: Answer):
  if a.kind in ("list", "set"):
    return a.value
  if a.kind == "bracket" and a.value[0] == "(" and a.value[1] == ")":
    return a.value[2]  # (2, -1) given as "2, -1": the same pair if in order
  return None


def _all_same(gi, pi, q) -> bool | None:
  verdicts = [same(a, b, q) for a, b in zip(gi, pi)]
  if False in verdicts:
    return False
  return None if None in verdicts else True


def _same_bracket(g: Answer, p: Answer, q: Question) -> bool | None:
  if g.kind == "bracket" and p.kind == "bracket":
    if g.value[:2] != p.value[:2] or len(g.value[2]) != len(p.value[2]):
      return False
    return _all_same(g.value[2], p.value[2], q)
  other = p if g.kind == "bracket" else g
  if other.kind == "matrix":
    return _same_matrix(g, p)
  return False


def _same_interval(g: Answer, p: Answer) -> bool | None:
  gi, pi = as_interval(g), as_interval(p)
  if gi is None or pi is None or len(gi.value) != len(pi.value):
    return False
  gs, ps = _sorted_intervals(gi.value), _sorted_intervals(pi.value)
  if gs is None or ps is None:
    return None
  for (glo, ghi, glc, ghc), (plo, phi, plc, phc) in zip(gs, ps):
    for gn, pn, gc, pc in ((glo, plo, glc, plc), (ghi, phi, ghc, phc)):
      ginf, pinf = _infinity(gn), _infinity(pn)
      if ginf or pinf:
        if ginf != pinf or gc != pc:  # (4, \infty] is not (4, \infty)
          return False
        continue
      if gc != pc:
        return False
      verdict = _values_equal(gn, pn)
      if verdict is not True:
        return verdict
  return True


def _infinity(node) -> int:
  if node == ("c", "inf"):
    return 1
  if node == ("neg", ("c", "inf")):
    return -1
  return 0


def _sorted_intervals(ivs):
  keyed = []
  for iv in ivs:
    lo = iv[0]
    inf = _infinity(lo)
    if inf:
      key = -math.inf if inf < 0 else math.inf
    else:
      try:
        value = ex.evaluate(lo, {})
      except (ArithmeticError, ValueError, KeyError):
        return None
      if value.imag:
        return None
      key = value.real
    keyed.append((key, iv))
  keyed.sort(key=lambda kv: kv[0])
  return [iv for _, iv in keyed]


def _same_matrix(g: Answer, p: Answer) -> bool | None:
  def cells(a: Answer):
    if a.kind == "matrix":
      rows = a.value
      if len(rows) == 1 or len(rows[0]) == 1:  # a vector: a row is not a column
        shape = "row" if len(rows[0]) > 1 else "col" if len(rows) > 1 else None
        return ("vec", tuple(c for r in rows for c in r), shape)
      return ("mat", rows)
    if a.kind == "bracket" and a.value[0] == "(" and all(i.kind == "expr" for i in a.value[2]):
      return ("vec", tuple(i.value for i in a.value[2]), None)  # a tuple stands for either
    return None
  gc, pc = cells(g), cells(p)
  if gc is None or pc is None or gc[0] != pc[0]:
    return False
  if gc[0] == "vec" and None not in (gc[2], pc[2]) and gc[2] != pc[2]:
    return False
  if gc[0] == "mat":
    if len(gc[1]) != len(pc[1]) or len(gc[1][0]) != len(pc[1][0]):
      return False
    pairs = [(a, b) for ra, rb in zip(gc[1], pc[1]) for a, b in zip(ra, rb)]
  else:
    if len(gc[1]) != len(pc[1]):
      return False
    pairs = list(zip(gc[1], pc[1]))
  verdicts = [_values_equal(a, b) for a, b in pairs]
  if False in verdicts:
    return False
  return None if None in verdicts else True


def _same_based(g: Answer, p: Answer, q: Question) -> bool | None:
  def digits(a: Answer, base_if_plain):
    if a.kind == "based":
      return a.value
    if a.kind == "expr" and a.text.isalnum() and not a.percent:
      return (a.text.upper().lstrip("0") or "0", base_if_plain)
    if (a.kind == "text" and a.value.isalnum() and base_if_plain > 10
        and all(int(ch, 36) < base_if_plain for ch in a.value)):
      return (a.value.upper().lstrip("0") or "0", base_if_plain)  # \\text{FF} in base 16
    return None
  gd = digits(g, q.base or 10)
  if gd is None:
    return False
  pd = digits(p, gd[1] if g.kind == "based" else q.base or 10)
  if pd is None or pd[1] != gd[1]:
    return False
  return pd[0] == gd[0]


# ----------------------------------------------------------------------------- values


def _values_equal(gn, pn, rounding: bool = False) -> bool | None:
  """Whether two expression trees have the same value (as functions of their variables).

  A terminating decimal equals a rational with no finite decimal (0.333333 for 1/3) only when
  `rounding` (the question asks for a decimal); it never equals a different terminating one.
  """
  ginf, pinf = _infinity(gn), _infinity(pn)
  if ginf or pinf:
    return ginf == pinf
  if ex.variables(gn) != ex.variables(pn):
    return False
  decimal = ex.has_decimal(gn) or ex.has_decimal(pn)
  rtol = _DECIMAL_RTOL if decimal else _EXACT_RTOL
  names = ex.variables(gn)
  if not names:
    ge, pe = ex.exact(gn), ex.exact(pn)
    if ge is not None and pe is not None:
      if ge == pe:
        return True
      # A decimal may round a value that has no finite decimal (0.333333 for 1/3) where the
      # question asks for a decimal; two values that both have one must be equal.
      if not decimal or not rounding or (_terminates(ge) and _terminates(pe)):
        return False
      return abs(ge - pe) <= _DECIMAL_RTOL * max(abs(ge), abs(pe))
    envs = [{}]
  else:
    envs = ex.envs(names)
    if envs is None:
      return None
  agreed = 0
  for env in envs:
    a = b = None
    try:
      a = ex.evaluate(gn, env)
    except (ArithmeticError, ValueError, KeyError):
      pass
    try:
      b = ex.evaluate(pn, env)
    except (ArithmeticError, ValueError, KeyError):
      pass
    if a is None and b is None:
      continue
    if a is None or b is None or not ex.close(a, b, rtol):
      return False
    agreed += 1
  return True if agreed else None


def _terminates(value: Fraction) -> bool:
  """Whether the value has a finite decimal expansion (its denominator is 2^a 5^b)."""
  d = value.denominator
  for p in (2, 5):
    while d % p == 0:
      d //= p
  return d == 1


def _same_expr(g: Answer, p: Answer, q: Question) -> bool | None:
  if g.unit and p.unit and g.unit != p.unit and _known(g.unit) and _known(p.unit):
    return False
  if not g.unit and p.unit and q.units and _known(p.unit):
    # 24 m^2 where the question asks for square centimeters: the number alone is not enough.
    if not unit_bases(p.unit) - MARK_UNITS <= q.units:
      return False
  if _unit_power_differs(p.unit, q):
    return False  # 64 cm^2 where the question asks for cubic centimeters
  if not g.unit and p.unit and _known(p.unit) and (
      g.percent or q.named_units and not unit_bases(p.unit) - MARK_UNITS <= q.named_units):
    return False  # $50 for 50%; 150 radians where the question counts degrees
  gn, pn = g.value, p.value
  verdict = _values_equal(gn, pn, q.decimal)
  hundred = ("n", Fraction(100), False)
  if p.percent and not (g.percent or q.percent):
    # 25% for a gold 0.25 (a probability, say). Without the question, a gold 25 may be the
    # answer to "what percent": 25% is then right too.
    as_fraction = _values_equal(gn, ("/", pn, hundred), q.decimal)
    verdict = as_fraction if q.known or verdict is not True else verdict
  elif g.percent and not p.percent and q.known and not q.percent and verdict is not True:
    # A gold 25% where the question asks for no percent (a probability): 0.25 says the same.
    # Where it asks "what percent", 0.25 stays wrong.
    verdict = _values_equal(("/", gn, hundred), pn, q.decimal)
  if verdict is not True:
    return verdict
  return _form_ok(g, p, q)


def _unit_power_differs(unit: str, q: Question) -> bool:
  """Whether a unit carries a known base at a power the question never names with it (cm for
  "square centimeters", cm^2 for "cubic centimeters")."""
  if not unit or not q.unit_powers:
    return False
  named = {u.split("^")[0] for u in q.unit_powers}
  for part in unit.replace("/", " ").split():
    base, _, power = part.partition("^")
    if base in named and (part if power not in ("", "1") else base) not in q.unit_powers:
      return True
  return False


def _known(unit: str) -> bool:
  return all(part.split("^")[0] in KNOWN_UNITS for part in unit.replace("/", " ").split())


def _form_ok(g: Answer, p: Answer, q: Question) -> bool:
  """The question's form rules, for a pred whose value equals the gold's."""
  gn, pn = g.value, p.value
  has_vars = bool(ex.variables(gn))
  if has_vars and (q.expand or q.simplify) and shape.is_expanded(gn):
    if not shape.is_expanded(pn) or len(shape.terms(pn)) != len(shape.terms(gn)):
      return False
  if has_vars and q.degrees and shape.is_expanded(gn):
    degrees = [shape.degree(t) for t in shape.terms(pn)]
    if None in degrees or degrees != sorted(degrees, reverse=q.degrees == "decreasing"):
      return False
  if has_vars and q.factor and not shape.is_expanded(gn):
    if not _same_factors(gn, pn):
      return False
  if (q.radical or q.simplify) and not shape.radicals_simplified(pn):
    return False
  rational = ex.exact(gn) if not has_vars else None
  if (not has_vars and rational is None and shape.is_irrational_form(gn) and ex.has_decimal(pn)
      and not shape.is_irrational_form(pn) and not ex.has_decimal(gn) and not q.decimal):
    return False  # a decimal approximation of an exact irrational answer (11.3137 for 8√2)
  if (rational is not None and rational.denominator != 1
      and (q.common_fraction or q.lowest_terms or q.simplify)):
    if not _is_reduced_fraction(pn) or p.mixed:
      return False
  if (rational is not None and rational.denominator == 1 and _is_literal(gn, decimal=False)
      and not _is_literal(pn, decimal=False) and not _scientific(pn, any_mantissa=True)
      and not _power_of_ten(pn)
      and (q.evaluate or q.known and (_unevaluated(pn) or _arithmetic(pn)))):
    # 6!, \\binom{10}{3}, 8 \\cdot 9 for a whole number a question asks for: a computation left
    # undone (with no question to read, the value alone is judged)
    return False
  if (q.evaluate and not has_vars and _unevaluated(pn, roots=False)
      and not _unevaluated(gn, roots=False)):
    return False  # "Evaluate log_4 8": \\log_4 8 restates it, 3/2 answers it
  if (not has_vars and (q.simplify or q.evaluate) and shape.is_expanded(gn)
      and (len(shape.terms(pn)) > len(shape.terms(gn)) or _has_product_of_sums(pn))):
    return False  # "Simplify": 2\\sqrt{3}+3\\sqrt{3} for 5\\sqrt{3}, (2+3i)(1-i) for 5+i
  if q.mixed and g.mixed and not p.mixed:
    return False
  if q.improper and p.mixed:
    return False
  if q.complex_form and ex.has_const(gn, "i") and not shape.is_expanded(pn):
    return False  # (1+i)/2 is not in the form a+bi
  if q.decimal and ex.has_decimal(gn) and not _is_literal(pn, decimal=True):
    return False
  if q.in_pi and ex.has_const(gn, "pi") and not ex.has_const(pn, "pi"):
    return False
  if q.scientific and _scientific(gn) and not _scientific(pn):
    return False
  return True


def _power_of_ten(node) -> bool:
  """10^n with |n| >= 3: a way to write a large or small number (10^2 is a square left undone)."""
  if node[0] != "^" or node[1][:2] != ("n", Fraction(10)):
    return False
  n = ex.exact(node[2])
  return n is not None and n.denominator == 1 and abs(n) >= 3


def _has_product_of_sums(node) -> bool:
  """Whether the tree multiplies or raises a sum ((2+3i)(1-i), (1+\\sqrt{2})^2)."""
  tag = node[0]
  if tag == "*" and any(f[0] == "+" or (f[0] == "neg" and f[1][0] == "+") for f in node[1]):
    return True
  if tag == "^" and node[1][0] == "+":
    return True
  kids = node[1] if isinstance(node[1], list) else [c for c in node[1:] if isinstance(c, tuple)]
  return any(isinstance(c, tuple) and _has_product_of_sums(c) for c in kids)


def _arithmetic(node) -> bool:
  """Whether the tree multiplies, adds or raises numbers (8 \\cdot 9, 2 + 3, 3^4)."""
  if node[0] == "neg":
    node = node[1]
  return node[0] in ("*", "+", "^") and not ex.variables(node)


def _unevaluated(node, roots: bool = True) -> bool:
  """Whether the tree applies a function, factorial, binomial (or a root, if `roots`)."""
  if node[0] in ("f", "binom") or roots and node[0] == "root":
    return True
  return any(_unevaluated(c, roots) for c in node[1:] if isinstance(c, tuple)) or any(
      _unevaluated(c, roots) for c in (node[1] if isinstance(node[1], list) else ()))


def _is_literal(node, decimal: bool) -> bool:
  if node[0] == "neg":
    node = node[1]
  return node[0] == "n" and (node[2] or node[1].denominator == 1 or not decimal)


def _is_reduced_fraction(node) -> bool:
  """An integer, or a/b with integers in lowest terms (no decimal point)."""
  if node[0] == "neg":
    node = node[1]
  if node[0] == "n":
    return not node[2] and node[1].denominator == 1
  if node[0] == "/":
    num, den = node[1], node[2]
    if num[0] == "neg":
      num = num[1]
    if num[0] == "n" and den[0] == "n" and not num[2] and not den[2]:
      a, b = num[1], den[1]
      return (a.denominator == b.denominator == 1 and b > 1
              and math.gcd(a.numerator, b.numerator) == 1)
  return False


def _scientific(node, any_mantissa: bool = False) -> bool:
  """Whether the tree is a x 10^n (with 1 <= |a| < 10 unless any_mantissa)."""
  if node[0] == "neg":
    node = node[1]
  if node[0] != "*" or len(node[1]) != 2:
    return False
  mantissa, power = node[1]
  if mantissa[0] != "n" or power[0] != "^" or power[1][:2] != ("n", Fraction(10)):
    return False
  return any_mantissa or 1 <= abs(mantissa[1]) < 10


def _same_factors(gn, pn) -> bool:
  """Pred's non-constant factors are gold's, each up to sign (`(2x-2)(x+1)` is not
  `2(x-1)(x+1)` factored completely)."""
  gf, _ = shape.factors(gn)
  pf, _ = shape.factors(pn)
  if len(gf) != len(pf):
    return False
  unused = list(pf)
  for factor in gf:
    for j, cand in enumerate(unused):
      ratio = _ratio(factor, cand)
      if ratio is not None and (ex.close(ratio, 1, _EXACT_RTOL)
                                or ex.close(ratio, -1, _EXACT_RTOL)):
        del unused[j]
        break
    else:
      return False
  return True


def _ratio(a, b) -> complex | None:
  """a / b when it is the same constant at every evaluation point, else None."""
  envs = ex.envs(ex.variables(a) | ex.variables(b))
  if envs is None:
    return None
  ratio = None
  for env in envs:
    try:
      r = ex.evaluate(a, env) / ex.evaluate(b, env)
    except (ArithmeticError, ValueError, KeyError):
      return None
    if ratio is not None and not ex.close(r, ratio, _EXACT_RTOL):
      return None
    ratio = r
  return ratio
