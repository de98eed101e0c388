"""A small LaTeX expression reader for answer checking: parse once, then evaluate or inspect.

`parse_expr` reads the maths that final answers are written in (numbers, `\\frac`, `\\sqrt`,
powers, implicit products, `\\pi`, `e`, `i`, one-letter and Greek variables, common functions,
`\\binom`, `!`, absolute values) into a tree of tuples, or returns None for anything else (the
caller then falls back to sympy). Nothing here raises on bad input, and nothing takes more than
linear time in the answer's length: exponents are bounded before exact arithmetic.

Trees: ("n", Fraction, has_decimal_point) | ("c", "pi"|"e"|"i"|"inf") | ("v", name) |
("+", terms) | ("*", factors) | ("/", num, den) | ("^", base, exp) | ("neg", x) |
("f", name, arg) | ("root", n, x) | ("binom", n, k).

`exact` gives a Fraction when the tree is a rational number; `evaluate` gives a complex float
at an assignment of the variables (identity testing at random points decides equivalence of
expressions with variables, as polynomial identity testing does). `_math_shape.py` inspects the
written form of a tree for questions that ask for one.
"""

from __future__ import annotations

import cmath
import fractions
import math
import re

Fraction = fractions.Fraction

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+|\\[{}|])|(?P<letter>[a-zA-Z])"
    r"|(?P<op>[-+*/^_!()\[\]{}|=<>,])|(?P<bad>\S))")
_FUNCS = {"sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh",
          "cosh", "tanh", "ln", "log", "exp"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
          "vartheta", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "phi",
          "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Sigma", "Phi",
          "Psi", "Omega"}
_TIMES = {"\\cdot", "\\times", "*"}
_MAX_EXACT_BITS = 4096  # exact powers beyond this many bits fall back to floats


class _Fail(Exception):
  pass


def tokenize(s: str) -> list[tuple[str, str]] | None:
  """(kind, text) tokens, or None when s holds a character no answer uses."""
  tokens = []
  for m in _TOKEN_RE.finditer(s):
    kind = m.lastgroup
    if kind is None:
      continue
    if kind == "bad":
      return None
    tokens.append((kind, m.group(kind)))
  return tokens


class _Parser:
  """Recursive descent over tokens; `_Fail` on anything outside the grammar."""

  def __init__(self, tokens):
    self.t = tokens
    self.i = 0

  def peek(self, k: int = 0):
    j = self.i + k
    return self.t[j] if j < len(self.t) else (None, None)

  def take(self):
    tok = self.peek()
    self.i += 1
    return tok

  def expect(self, text):
    if self.take()[1] != text:
      raise _Fail

  def expr(self):
    terms = [self.term()]
    while self.peek()[1] in ("+", "-"):
      op = self.take()[1]
      term = self.term()
      terms.append(("neg", term) if op == "-" else term)
    return terms[0] if len(terms) == 1 else ("+", terms)

  def term(self):
    factors = [self.unary()]
    while True:
      kind, text = self.peek()
      if text in _TIMES:
        self.take()
        factors.append(self.unary())
      elif text in ("/", "\\div"):
        self.take()
        num = factors.pop() if len(factors) == 1 else ("*", factors)
        factors = [("/", num, self.unary())]
      elif self._starts_atom(kind, text):
        factors.append(self.power())
      else:
        break
    return factors[0] if len(factors) == 1 else ("*", factors)

  def _starts_atom(self, kind, text) -> bool:
    if kind in ("num", "letter"):
      return True
    if kind == "cmd":
      return text in ("\\frac", "\\sqrt", "\\pi", "\\infty", "\\binom", "\\lfloor",
                      "\\lceil") or text[1:] in _FUNCS or text[1:] in _GREEK
    return text in ("(", "{")

  def unary(self):
    text = self.peek()[1]
    if text == "-":
      self.take()
      return ("neg", self.unary())
    if text == "+":
      self.take()
      return self.unary()
    return self.power()

  def power(self):
    base = self.postfix()
    if self.peek()[1] == "^":
      self.take()
      exp = self.script()
      if self.peek()[1] == "^":  # a^b^c is not valid TeX
        raise _Fail
      return ("^", base, exp)
    return base

  def script(self):
    """A superscript: a braced group, a number, or one character / command.

    `10^23` is 10^{23} as a reader (and every plain-text answer) means it, not TeX's 10^2 * 3.
    """
    kind, text = self.peek()
    if text == "{":
      return self.group()
    if kind == "num":
      self.take()
      return ("n", Fraction(text), "." in text)
    if text == "-":  # x^-1, a common slip for x^{-1}
      self.take()
      return ("neg", self.script())
    return self.atom()

  def group(self):
    self.expect("{")
    node = self.expr()
    self.expect("}")
    return node

  def postfix(self):
    node = self.atom()
    while self.peek()[1] == "!":
      self.take()
      node = ("f", "fact", node)
    return node

  def atom(self):
    kind, text = self.take()
    if kind == "num":
      return ("n", Fraction(text), "." in text)
    if kind == "letter":
      if text in ("e", "i"):
        node = ("c", text)
      else:
        node = ("v", text)
      if self.peek()[1] == "_" and node[0] == "v":
        self.take()
        sub = self.take() if self.peek()[1] != "{" else ("group", self._raw_group())
        node = ("v", f"{text}_{sub[1]}")
      return node
    if text in ("(", "["):
      node = self.expr()
      self.expect(")" if text == "(" else "]")
      return node
    if text == "{":
      self.i -= 1
      return self.group()
    if text == "|":
      node = self.expr()
      self.expect("|")
      return ("f", "abs", node)
    if text in ("\\lfloor", "\\lceil"):
      node = self.expr()
      self.expect("\\rfloor" if text == "\\lfloor" else "\\rceil")
      return ("f", "floor" if text == "\\lfloor" else "ceil", node)
    if text == "\\frac":
      num = self._arg()
      return ("/", num, self._arg())
    if text == "\\binom":
      n = self._arg()
      return ("binom", n, self._arg())
    if text == "\\sqrt":
      if self.peek()[1] == "[":
        self.take()
        n = self.expr()
        self.expect("]")
        return ("root", n, self._arg())
      return ("root", ("n", Fraction(2), False), self._arg())
    if text == "\\pi":
      return ("c", "pi")
    if text == "\\infty":
      return ("c", "inf")
    if kind == "cmd" and text[1:] in _GREEK:
      return ("v", text[1:])
    if kind == "cmd" and text[1:] in _FUNCS:
      name = text[1:]
      if name == "log" and self.peek()[1] == "_":
        self.take()
        base = self.script()
        return ("/", ("f", "ln", self._func_arg()), ("f", "ln", base))
      power = None
      if self.peek()[1] == "^":  # \sin^2 x
        self.take()
        power = self.script()
      node = ("f", "ln" if name == "log" else name, self._func_arg())
      return ("^", node, power) if power is not None else node
    raise _Fail

  def _arg(self):
    """A macro argument: a braced group or one token (`\\frac12`, `\\sqrt2`)."""
    kind, text = self.peek()
    if text == "{":
      return self.group()
    if kind == "num":
      self.take()
      if len(text) > 1 and "." not in text:
        self.t.insert(self.i, ("num", text[1:]))
        return ("n", Fraction(text[0]), False)
      return ("n", Fraction(text), "." in text)
    return self.atom()

  def _func_arg(self):
    if self.peek()[1] in ("(", "{", "["):
      return self.atom()
    return self.power()

  def _raw_group(self):
    self.expect("{")
    parts = []
    while self.peek()[1] != "}":
      tok = self.take()
      if tok[0] is None:
        raise _Fail
      parts.append(tok[1])
    self.take()
    return "".join(parts)


def parse_expr(s: str):
  """The tree of an expression in LaTeX, or None when it is not one this reader knows."""
  if len(s) > 400:
    return None
  tokens = tokenize(s)
  if not tokens:
    return None
  parser = _Parser(tokens)
  try:
    node = parser.expr()
  except (_Fail, ValueError, ZeroDivisionError, IndexError, RecursionError):
    return None
  return node if parser.i == len(parser.t) else None


# ----------------------------------------------------------------------------- evaluation


def _int_root(value: Fraction, n: int) -> Fraction | None:
  if n < 1 or n > 64 or (value < 0 and n % 2 == 0):
    return None
  sign = -1 if value < 0 else 1
  out = []
  for part in (abs(value.numerator), value.denominator):
    if part.bit_length() > _MAX_EXACT_BITS:
      return None
    r = round(part ** (1.0 / n)) if part < 2 ** 1000 else math.isqrt(part) if n == 2 else None
    if r is None:
      return None
    for cand in (r - 1, r, r + 1):
      if cand >= 0 and cand ** n == part:
        out.append(cand)
        break
    else:
      return None
  return sign * Fraction(out[0], out[1])


def exact(node) -> Fraction | None:
  """The tree's value when it is a rational number computed exactly, else None."""
  try:
    return _exact(node)
  except (ZeroDivisionError, OverflowError, ValueError, RecursionError):
    return None


def _exact(node):
  tag = node[0]
  if tag == "n":
    return node[1]
  if tag == "neg":
    v = _exact(node[1])
    return None if v is None else -v
  if tag == "+":
    total = Fraction(0)
    for t in node[1]:
      v = _exact(t)
      if v is None:
        return None
      total += v
    return total
  if tag == "*":
    prod = Fraction(1)
    for t in node[1]:
      v = _exact(t)
      if v is None:
        return None
      prod *= v
    return prod
  if tag == "/":
    a, b = _exact(node[1]), _exact(node[2])
    return None if a is None or b is None or b == 0 else a / b
  if tag == "^":
    a, b = _exact(node[1]), _exact(node[2])
    if a is None or b is None:
      return None
    if b.denominator != 1:
      root = _int_root(a, b.denominator)
      return None if root is None else _exact(("^", ("n", root, False), ("n", b.numerator,
                                                                           False)))
    n = b.numerator
    bits = max(a.numerator.bit_length(), a.denominator.bit_length())
    if bits * abs(n) > _MAX_EXACT_BITS or (a == 0 and n < 0):
      return None
    return a ** n
  if tag == "root":
    n, x = _exact(node[1]), _exact(node[2])
    if n is None or x is None or n.denominator != 1:
      return None
    return _int_root(x, int(n))
  if tag == "f" and node[1] == "fact":
    v = _exact(node[2])
    if v is None or v.denominator != 1 or not 0 <= v <= 300:
      return None
    return Fraction(math.factorial(int(v)))
  if tag == "f" and node[1] in ("abs", "floor", "ceil"):
    v = _exact(node[2])
    if v is None:
      return None
    return {"abs": abs, "floor": lambda x: Fraction(math.floor(x)),
            "ceil": lambda x: Fraction(math.ceil(x))}[node[1]](v)
  if tag == "binom":
    n, k = _exact(node[1]), _exact(node[2])
    if n is None or k is None or n.denominator != 1 or k.denominator != 1 or not 0 <= n <= 1000:
      return None
    return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
  return None


_CONSTS = {"pi": math.pi, "e": math.e, "i": 1j, "inf": math.inf}
_CFUNCS = {"sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "sec": lambda z: 1 / cmath.cos(z),
           "csc": lambda z: 1 / cmath.sin(z), "cot": lambda z: 1 / cmath.tan(z),
           "arcsin": cmath.asin, "arccos": cmath.acos, "arctan": cmath.atan, "sinh": cmath.sinh,
           "cosh": cmath.cosh, "tanh": cmath.tanh, "ln": cmath.log, "exp": cmath.exp, "abs": abs}


def evaluate(node, env: dict[str, float]) -> complex:
  """The tree's value (complex float) with variables from env; raises on overflow/domain."""
  tag = node[0]
  if tag == "n":
    return complex(float(node[1]))
  if tag == "c":
    return complex(_CONSTS[node[1]])
  if tag == "v":
    return complex(env[node[1]])
  if tag == "neg":
    return -evaluate(node[1], env)
  if tag == "+":
    return sum((evaluate(t, env) for t in node[1]), 0j)
  if tag == "*":
    out = 1 + 0j
    for t in node[1]:
      out *= evaluate(t, env)
    return out
  if tag == "/":
    return evaluate(node[1], env) / evaluate(node[2], env)
  if tag == "^":
    base = evaluate(node[1], env)
    e = exact(node[2])
    if e is not None and e.denominator == 1 and abs(e) <= 10000:
      return base ** int(e)
    if e is not None and e.denominator % 2 == 1 and base.imag == 0 and base.real < 0:
      return -((-base.real) ** float(e)) if e.numerator % 2 else (-base.real) ** float(e)
    return base ** evaluate(node[2], env)
  if tag == "root":
    n = evaluate(node[1], env)
    x = evaluate(node[2], env)
    if x.imag == 0 and x.real < 0 and n.imag == 0 and n.real % 2 == 1:
      return complex(-((-x.real) ** (1 / n.real)))
    return x ** (1 / n)
  if tag == "f":
    x = evaluate(node[2], env)
    if node[1] == "fact":
      if x.imag or x.real != int(x.real) or not 0 <= x.real <= 170:
        raise ValueError("factorial")
      return complex(math.factorial(int(x.real)))
    if node[1] in ("floor", "ceil"):
      if x.imag:
        raise ValueError(node[1])
      return complex(getattr(math, node[1])(x.real))
    return complex(_CFUNCS[node[1]](x))
  if tag == "binom":
    n, k = evaluate(node[1], env), evaluate(node[2], env)
    if n.imag or k.imag or n.real != int(n.real) or k.real != int(k.real) or n.real > 1000:
      raise ValueError("binom")
    return complex(math.comb(int(n.real), int(k.real)) if k.real >= 0 else 0)
  raise ValueError(tag)


def variables(node) -> set[str]:
  """Names of the variables in a tree."""
  if node[0] == "v":
    return {node[1]}
  out = set()
  for child in node[1:]:
    if isinstance(child, tuple):
      out |= variables(child)
    elif isinstance(child, list):
      for c in child:
        out |= variables(c)
  return out


def has_decimal(node) -> bool:
  """Whether a number in the tree is written with a decimal point."""
  if node[0] == "n":
    return node[2]
  return any(has_decimal(c) for c in children(node))


def has_const(node, name: str) -> bool:
  if node[0] == "c":
    return node[1] == name
  return any(has_const(c, name) for c in children(node))


def children(node):
  for child in node[1:]:
    if isinstance(child, tuple):
      yield child
    elif isinstance(child, list):
      yield from child


# Evaluation points: irrational-looking values, distinct per variable, away from poles at small
# integers; three points make an accidental agreement of different expressions negligible.
_POINTS = [(0.5772156649, 1.3247179572, 0.7390851332, 1.6180339887, 0.4142135624, 2.2360679775),
           (1.1319882488, 0.3183098862, 1.4142135624, 0.6931471806, 1.7320508076, 0.9159655942),
           (0.8414709848, 1.2020569032, 0.2718281828, 1.5707963268, 0.6434105463, 1.0471975512)]


def envs(names: set[str]) -> list[dict[str, float]] | None:
  """Assignments of the variables to the fixed evaluation points (None: too many variables)."""
  names = sorted(names)
  if len(names) > len(_POINTS[0]):
    return None
  return [dict(zip(names, point)) for point in _POINTS]


def close(a: complex, b: complex, rtol: float) -> bool:
  """Relative agreement of two finite values (both zero counts as agreement)."""
  if not (cmath.isfinite(a) and cmath.isfinite(b)):
    return False
  return abs(a - b) <= rtol * max(abs(a), abs(b))
