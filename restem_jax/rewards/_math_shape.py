"""The written form of a parsed answer (`_math_expr` trees), for questions that ask for one.

"Expand", "Factor", "simplest radical form", "in terms of \\pi": a right value in another form is
wrong. `terms` and `degree` split a sum; `is_expanded` (a sum of monomials), `factors` (the
factors of a product and its constant), `radicals_simplified` (no square factor left under a
root, no root in a denominator) and `is_irrational_form` (a root or a constant such as pi kept
exact) read the form the way a grader does. Nothing here raises on any tree.
"""

from __future__ import annotations

import math

from restem_jax.rewards._math_expr import Fraction, children, exact, variables


def terms(node) -> list:
  """The terms of a sum (one term when the tree is not a sum)."""
  if node[0] == "+":
    return list(node[1])
  return [node]


def _is_monomial(node) -> bool:
  tag = node[0]
  if tag in ("n", "c", "v"):
    return True
  if tag == "neg":
    return _is_monomial(node[1])
  if tag == "*":
    return all(_is_monomial(f) for f in node[1])
  if tag == "/":  # x/2 or 3/4: a monomial over a number
    return _is_monomial(node[1]) and node[2][0] == "n"
  if tag == "^":
    return node[1][0] in ("v", "c", "n") and exact(node[2]) is not None
  if tag == "root":
    return exact(node[2]) is not None
  return False


def is_expanded(node) -> bool:
  """Whether the tree is written as a sum of monomials (no product or power of a sum)."""
  return all(_is_monomial(t) for t in terms(node))


def factors(node) -> tuple[list, list] | None:
  """(non-constant factors with multiplicity, constant factors) of a product, else None."""
  out, consts = [], []

  def walk(n):
    tag = n[0]
    if tag == "neg":
      consts.append(("n", Fraction(-1), False))
      walk(n[1])
    elif tag == "*":
      for f in n[1]:
        walk(f)
    elif tag == "^" and not variables(n[2]):
      k = exact(n[2])
      if k is not None and k.denominator == 1 and 0 < k <= 50 and variables(n[1]):
        for _ in range(int(k)):
          walk(n[1])
      elif variables(n[1]):
        out.append(n)
      else:
        consts.append(n)
    elif variables(n):
      out.append(n)
    else:
      consts.append(n)

  walk(node)
  return out, consts


def radicals_simplified(node) -> bool:
  """No square factor under a square root, no root in a denominator, no common factor of a
  coefficient and the denominator (`2\\sqrt{6}/6`): simplest radical form."""
  tag = node[0]
  if tag == "/" and _has_root(node[1]):
    den = exact(node[2])
    coef = _integer_coefficient(node[1])
    if den is not None and den.denominator == 1 and coef and math.gcd(coef, den.numerator) > 1:
      return False
  if tag == "root":
    x, n = exact(node[2]), exact(node[1])
    if x is not None and n == 2 and x.denominator == 1:
      k = abs(x.numerator)
      if any(k % (d * d) == 0 for d in range(2, min(math.isqrt(k), 10 ** 4) + 1)):
        return False
    if x is not None and x.denominator != 1:
      return False
  if tag == "/" and _has_root(node[2]):
    return False
  if tag == "^":
    e = exact(node[2])
    if e is not None and e < 0 and _has_root(node[1]):
      return False
  return all(radicals_simplified(c) for c in children(node))


def _integer_coefficient(node) -> int | None:
  """The integer written in front of a product (`2\\sqrt{6}` -> 2, `\\sqrt{6}` -> 1)."""
  if node[0] == "neg":
    return _integer_coefficient(node[1])
  if node[0] == "*":
    values = [exact(f) for f in node[1]]
    ints = [v for v in values if v is not None]
    if all(v.denominator == 1 for v in ints):
      return abs(math.prod(int(v) for v in ints)) if ints else 1
    return None
  return 1 if node[0] in ("root", "v", "c") else None


def _has_root(node) -> bool:
  if node[0] == "root":
    return True
  if node[0] == "^":
    e = exact(node[2])
    if e is not None and e.denominator != 1:
      return True
  return any(_has_root(c) for c in children(node))


def is_irrational_form(node) -> bool:
  """Whether the tree is written with a root, pi, e or a transcendental function."""
  if node[0] == "c":
    return node[1] in ("pi", "e")
  if node[0] == "f":
    return node[1] not in ("fact", "abs", "floor", "ceil") or is_irrational_form(node[2])
  return _has_root(node) or any(is_irrational_form(c) for c in children(node))


def degree(term) -> int | None:
  """The total degree of a monomial (None when it is not one)."""
  tag = term[0]
  if tag in ("n", "c"):
    return 0
  if tag == "v":
    return 1
  if tag == "neg":
    return degree(term[1])
  if tag == "*":
    parts = [degree(f) for f in term[1]]
    return None if None in parts else sum(parts)
  if tag == "/" and term[2][0] == "n":
    return degree(term[1])
  if tag == "^" and term[1][0] == "v":
    e = exact(term[2])
    return int(e) if e is not None and e.denominator == 1 else None
  if tag == "^" and term[1][0] in ("n", "c"):
    return 0
  return None
