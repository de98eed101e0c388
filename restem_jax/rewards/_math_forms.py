"""Answer forms: read a final answer into what it says (a number with a unit, an interval, a
set, a list, a matrix, an equation, a number in a base, a choice, words), as a grader of
MATH / GSM8K reads it; `_math_same.same` then compares two readings.

`read_answer(text, question)` -> an `Answer` or None (None: outside the forms known here; the
caller falls back to sympy). `read_question(text)` (from `_math_question`) -> a `Question`:
which form the question asks for. Nothing here raises on bad input; every step is linear or
quadratic in the answer's length (answers over 600 characters are not read).

Rules an expert applies, encoded here and in `_math_same`:
  - a value is a value whatever its spelling: `12{,}000` = `12\\,000` = `12 000` = `12,000`;
    `\\tfrac12` = `1/2` = `0.5`; `2\\frac12` and `2 1/2` are mixed numbers (5/2);
    `0.\\overline{3}` = 1/3; `1.2\\times10^{5}` = 120000;
  - units, `\\text{}` words after a number, `\\$`, degree signs do not change the value, but two
    different units are different answers; `25\\%` answers "what percent" and `0.25` does not;
  - an interval equals the inequality or phrase that describes the same set (`x > 4`,
    `(4,\\infty)`; `\\mathbb{R}`, "all real numbers", `(-\\infty,\\infty)`); the ends' openness
    matters;
  - solutions listed in any order (`x=4 \\text{ or } x=-1` = `-1, 4`), sets in any order;
    tuples in order; `y = 2x+1` = `2x+1`; an equation equals any nonzero multiple of itself;
  - a number in a base is its digits in that base (`111_2` != `111_3`; `111` = `111_2` when
    the question asks for base 2);
  - the question's "Expand", "Factor", "simplest radical form", "common fraction", "mixed
    number", "decimal", "in terms of \\pi", "scientific notation" and "percent" decide whether
    a right value in the wrong form is right.
"""

from __future__ import annotations

import dataclasses
import fractions
import re

from restem_jax.rewards._math_clean import Marks, clean, split_top
from restem_jax.rewards import _math_expr as ex
from restem_jax.rewards._math_question import KNOWN_UNITS, Question, canonical_unit, read_question

__all__ = ["Answer", "Question", "as_interval", "canonical_unit", "clean", "read_answer",
           "read_question"]

Fraction = fractions.Fraction

# ----------------------------------------------------------------------------- answers


@dataclasses.dataclass(frozen=True)
class Answer:
  """One reading of an answer.

  kind: "expr" (node; unit; percent; mixed), "based" (digits, base), "clock" (hour, minute,
    "a"/"p"/None), "interval" (a union:
  tuple of (lo, hi, lo_closed, hi_closed) with nodes), "bracket" (open, close, items),
  "set" (items), "list" (items), "matrix" (rows of nodes), "eq" (var or None, lhs, rhs),
  "choice" (letter), "text" (words).
  """
  kind: str
  value: object
  unit: str = ""
  percent: bool = False
  mixed: bool = False
  text: str = ""


_SCALE_WORDS = {"hundred": "100", "thousand": "1000", "million": "10^6", "billion": "10^9",
                "trillion": "10^{12}", "dozen": "12", "hundreds": "100", "thousands": "1000",
                "millions": "10^6", "billions": "10^9"}
_MATH_WORDS = frozenset("sqrt pi infty frac dfrac cdot times div sin cos tan sec csc cot arcsin "
                        "arccos arctan sinh cosh tanh log ln exp".split())
_NOT_UNITS = frozenset("sin cos tan sec csc cot ln log exp or and pi mod".split())
_UNIT_TAIL_RE = re.compile(
    r"(?P<unit>(?:\s*(?:(?<![\\a-zA-Z])[a-zA-Z]{2,}\.?|\^\s*\{?[23]\}?|/\s*[a-zA-Z]+))+)"
    r"\s*$")


_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_INNER_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_SPACE_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_MIXED_RE = re.compile(r"([+-]?)(\d+)\s*(?:\\frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}|"
                       r"\\frac(\d)(\d)|\s(\d+)\s*/\s*(\d+))")
_REPEAT_RE = re.compile(r"([+-]?)(\d*)\.(\d*)\\(?:overline|bar|dot)\s*\{?(\d+)\}?")
_SCI_E_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)[eE][+-]?\d{1,4}")
_BASED_RE = re.compile(r"([0-9A-Za-z]+)\s*_\s*\{?\s*\(?(\d+)\)?\s*\}?")
_CHOICE_RE = re.compile(r"(?:(?:[Oo]ption|[Cc]hoice)\s*)?(?:\(?([A-Ha-h])\)(?:\s.*)?|([A-H]))")
_ALLREALS_RE = re.compile(r"(all\s*)?(real\s*(numbers?|values?)(\s*(of|for)\s*[a-z])?|reals|"
                          r"allreals|real\s+[a-z])|"
                          r"x\s*\\in\s*allreals|-?\s*\\infty\s*<\s*x\s*<\s*\\infty", re.I)
_EMPTY_RE = re.compile(r"emptyset|no\s+(real\s+)?solutions?|none", re.I)
_MATRIX_RE = re.compile(r"\\begin\s*\{([pbBvV]?matrix|smallmatrix|array)\}(?:\s*\{[^{}]*\})?(.*?)"
                        r"\\end\s*\{\1\}", re.S)
_MEMBER_RE = re.compile(r"[a-zA-Z]\s*\\in\s*(.+)")
_BUILDER_RE = re.compile(r"[a-zA-Z]\s*(?:\||\\mid|:)\s*(.+)")
_LETTER_UNIT_RE = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s+([mgsLh](?:\s*/\s*[a-zA-Z]+)?)"
                             r"(?:\s*\^\s*\{?([23])\}?)?")
_REALS_MINUS_RE = re.compile(r"allreals\s*(?:\\setminus|\\backslash|-|\\)\s*\\\{(.*)\\\}")
_LIST_SEP_RE = re.compile(r"\s*(?:,\s*(?:and|or)\b|,|;|\bor\b|\band\b)\s*")
_UNION_RE = re.compile(r"\s*(?:\\cup|\bU\b)\s*")
_CMP_RE = re.compile(r"<=|>=|!=|<|>")


def _words_only(s: str) -> bool:
  return bool(re.fullmatch(r"[A-Za-z][A-Za-z' \-]*", s))


def read_answer(text: str, question: Question = Question()) -> Answer | None:
  """The reading of an (extracted) answer, or None when it is outside the known forms."""
  if not isinstance(text, str) or len(text) > 600:
    return None
  s, marks = clean(text)
  if not s:
    return None
  return _read(s, marks, question)


_CLOCK_RE = re.compile(r"(\d{1,2})\s*(?:\{:\}|:)\s*(\d{2})(?:\s*([ap])\.?\s*m\.?)?", re.I)


def _read(s: str, marks: Marks, q: Question) -> Answer | None:
  if _MATRIX_RE.search(s):
    return _read_matrix(s)
  clock = None if q.ratio else _CLOCK_RE.fullmatch(s)
  if clock:  # 4:30 p.m., 16:30: a time of day, never a ratio or a number
    h, m, half = int(clock.group(1)), int(clock.group(2)), clock.group(3)
    if h <= 24 and m < 60 and not (half and not 1 <= h <= 12):
      return Answer("clock", (h, m, half.lower() if half else None))
    return None
  ratio = re.fullmatch(r"(\d+)\s*(?:\{:\}|:)\s*(\d+)", s)
  if ratio:  # 1:6 is a ratio, not the number 1/6
    return Answer("ratio", (int(ratio.group(1)), int(ratio.group(2))))
  if _ALLREALS_RE.fullmatch(s):
    return Answer("interval", ((_NEG_INF, _POS_INF, False, False),))
  if _EMPTY_RE.fullmatch(s):
    return Answer("set", ())
  minus = _REALS_MINUS_RE.fullmatch(s)
  if minus:  # \mathbb{R} \setminus \{1, 2\}: the reals without finitely many points
    return _reals_without(minus.group(1), marks, q)
  # Where the question asks for a list, "2,500" may be two answers; "1,000" (a group with a
  # leading zero) is still one number.
  grouped = not q.listing or bool(re.search(r",0", s))
  if grouped and (_THOUSANDS_RE.fullmatch(s) or _SPACE_THOUSANDS_RE.fullmatch(s)):
    return _number(s.replace(",", "").replace(" ", ""), marks)
  if grouped and s[0] not in "([\\":
    s = _INNER_THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), s)
  union = split_top(s, _UNION_RE)
  if len(union) > 1:
    parts = [_read_item(p, marks, q) for p in union]
    if all(p is not None and p.kind in ("interval", "bracket") for p in parts):
      ivs = [as_interval(p) for p in parts]
      if all(iv is not None for iv in ivs):
        return Answer("interval", tuple(x for iv in ivs for x in iv.value))
    return None
  items = split_top(s, _LIST_SEP_RE)
  if len(items) > 1:
    if any(not item for item in items):
      return None
    parts = [_read_item(p, marks, q) for p in items]
    if any(p is None for p in parts):
      return None
    if all(p.kind == "interval" for p in parts) and any(
        _CMP_RE.search(item) for item in items):  # x < -1 or x > 2: one set
      return Answer("interval", tuple(x for p in parts for x in p.value))
    names = [p.value[0] if p.kind == "eq" else None for p in parts]
    if None not in names and len(set(names)) == len(names):
      # y = -1, x = 2: the values in the variables' order, as an ordered pair lists them
      parts = [p for _, p in sorted(zip(names, parts), key=lambda np: np[0])]
    return Answer("list", tuple(_strip_assignment(p) for p in parts))
  return _read_item(s, marks, q)


def _reals_without(points: str, marks: Marks, q: Question) -> Answer | None:
  items = [_read_item(p, marks, q) for p in split_top(points, re.compile(r"\s*,\s*"))]
  if not items or any(i is None or i.kind != "expr" or ex.variables(i.value) for i in items):
    return None
  try:
    nodes = sorted((i.value for i in items), key=lambda n: ex.evaluate(n, {}).real)
  except (ArithmeticError, ValueError, KeyError):
    return None
  ends = [_NEG_INF] + nodes + [_POS_INF]
  return Answer("interval", tuple((lo, hi, False, False) for lo, hi in zip(ends, ends[1:])))


def _number(s: str, marks: Marks, **kw) -> Answer | None:
  node = ex.parse_expr(s)
  if node is None:
    return None
  return Answer("expr", node, unit="usd" if marks.dollar else ("deg" if marks.degree else ""),
                percent=marks.percent, **kw)


_NEG_INF = ("neg", ("c", "inf"))
_POS_INF = ("c", "inf")


def _read_item(s: str, marks: Marks, q: Question) -> Answer | None:
  s = s.strip()
  if not s:
    return None
  member = _MEMBER_RE.fullmatch(s)
  if member:  # x \in [2, 5), x \in \{1, 2\}
    return _read(member.group(1), marks, q)
  bare_set = (s[0] == "{" and s[-1] == "}" and _closes_at_end(s)
              and len(split_top(s[1:-1], re.compile(r"\s*,\s*"))) > 1)
  if bare_set:  # {1, 2}: TeX would drop the braces, the writer meant a set
    s = "\\{" + s[1:-1] + "\\}"
  if s.startswith("\\{") and s.endswith("\\}"):
    inner = s[2:-2].strip()
    if not inner:
      return Answer("set", ())
    builder = _BUILDER_RE.fullmatch(inner)
    if builder:  # \{x \mid x > 3\}: the condition's set
      return _read(builder.group(1), marks, q)
    items = [_read_item(p, marks, q) for p in split_top(inner, re.compile(r"\s*[,;]\s*"))]
    return None if any(i is None for i in items) else Answer(
        "set", tuple(_strip_assignment(i) for i in items))
  if s.startswith("\\langle") and s.endswith("\\rangle"):
    s = "(" + s[len("\\langle"):-len("\\rangle")] + ")"
  if s[0] in "([" and s[-1] in ")]" and _closes_at_end(s):
    inner = split_top(s[1:-1], re.compile(r"\s*,\s*"))
    if len(inner) > 1:
      items = [_read_item(p, Marks(), q) for p in inner]
      if any(i is None for i in items):
        return None
      return Answer("bracket", (s[0], s[-1], tuple(_strip_assignment(i) for i in items)))
  if _CMP_RE.search(s):
    return _read_inequality(s)
  if s.count("\\pm") + s.count("\\mp") > 1:
    return None  # each sign doubles the readings: one is all answers use
  if "\\pm" in s or "\\mp" in s:
    plus, minus = s.replace("\\mp", "\\pm").replace("\\pm", "+", 1), s.replace(
        "\\mp", "\\pm").replace("\\pm", "-", 1)
    a, b = _read_item(plus, marks, q), _read_item(minus, marks, q)
    return None if a is None or b is None else Answer("list", (a, b))
  sides = split_top(s, re.compile(r"\s*=\s*"))
  if len(sides) == 2:
    return _read_equation(sides, marks, q)
  if len(sides) > 2:
    return None
  choice = _CHOICE_RE.fullmatch(s)
  if choice:  # the text after the letter ("(A) 5") is kept: it must be that option's
    after = s[s.index(")") + 1:].strip() if choice.group(1) else ""
    return Answer("choice", (choice.group(1) or choice.group(2)).upper(), text=after)
  return _read_value(s, marks, q)


def _closes_at_end(s: str) -> bool:
  """Whether the bracket opening s closes at its last character."""
  depth = 0
  for i, ch in enumerate(s):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
      if depth == 0 and i != len(s) - 1:
        return False
  return depth == 0


def _read_value(s: str, marks: Marks, q: Question) -> Answer | None:
  """A single value: number / expression with an optional unit, a based number, or words."""
  unit = ""
  paren = re.fullmatch(r"(.*?\S)\s*\(\s*([A-Za-z]{2,}[A-Za-z ]*)\)", s)
  if paren and not re.search(r"[A-Za-z]", paren.group(1)) and (
      canonical_unit(paren.group(2)) in KNOWN_UNITS or len(paren.group(2)) >= 4):
    # 18 (dollars), 5 (cm); not 2(abc), which is a product
    s = f"{paren.group(1)} {paren.group(2)}"
  tail = _UNIT_TAIL_RE.search(s)
  if tail and tail.start() > 0:
    words = tail.group("unit")
    names = re.findall(r"[a-zA-Z]{2,}", words)
    head = s[:tail.start()].strip()
    # A unit is spaced off ("5 apples", not "5xy") or known ("5cm"); two letters after a space
    # are a product ("2 ab") unless they are a unit ("2 cm").
    known = bool(names) and (canonical_unit(names[0]) in KNOWN_UNITS or names[0].lower() == "sq")
    spaced = known or bool(names) and words[:1].isspace() and len(names[0]) >= 3
    lowered = [w.lower() for w in names]
    if lowered and lowered[0] in ("squared", "cubed"):
      return None  # "5 squared" is 25, not 5 with a unit
    if (head and spaced and not any(w in _NOT_UNITS for w in lowered)
        and not head.endswith("\\")):
      unit = canonical_unit(words)
      s = head
      scale = _SCALE_WORDS.get(lowered[0])
      if scale:  # "12 million": a number word scales the value (to a number when whole)
        whole = (Fraction(s) * ex.exact(ex.parse_expr(scale))
                 if re.fullmatch(r"-?\d+(?:\.\d+)?", s) else None)
        s = str(whole) if whole is not None and whole.denominator == 1 else f"{scale}\\cdot({s})"
        unit = canonical_unit(" ".join(words.split()[1:]))
  elif tail and _words_only(s):
    return _read_words(s)
  letter_unit = _LETTER_UNIT_RE.fullmatch(s)
  if letter_unit:  # 5 m, 3 s, 2 m^2: a one-letter unit after a number and a space
    power = letter_unit.group(3)
    s, unit = letter_unit.group(1), letter_unit.group(2).replace(" ", "") + (
        f"^{power}" if power else "")
  if marks.degree:
    unit = unit or "deg"
  if marks.dollar:
    unit = unit or "usd"
  if unit in ("deg", "degree"):
    unit = "deg"
  if _THOUSANDS_RE.fullmatch(s) or _SPACE_THOUSANDS_RE.fullmatch(s):
    s = s.replace(",", "").replace(" ", "")
  based = _BASED_RE.fullmatch(s)
  if based:
    digits, base = based.group(1), int(based.group(2))
    # All letters (FF_{16}) is a based number where the question asks for that base, else a
    # subscripted variable (a_{12}).
    if (2 <= base <= 36 and _valid_digits(digits, base)
        and (any(c.isdigit() for c in digits) or q.base == base)):
      return Answer("based", (digits.upper().lstrip("0") or "0", base), unit=unit)
    if digits.isdigit():  # 338_7 has no meaning: equal to nothing but itself
      return Answer("text", s)
  mixed = _MIXED_RE.fullmatch(s)
  if mixed:
    sign, whole = mixed.group(1), int(mixed.group(2))
    num = mixed.group(3) or mixed.group(5) or mixed.group(7)
    den = mixed.group(4) or mixed.group(6) or mixed.group(8)
    if 0 < int(num) < int(den):
      value = whole + Fraction(int(num), int(den))
      return Answer("expr", ("n", -value if sign == "-" else value, False), unit=unit,
                    percent=marks.percent, mixed=True)
  repeat = _REPEAT_RE.fullmatch(s.replace(" ", ""))
  if repeat:
    sign, whole, fixed, rep = repeat.groups()
    value = Fraction(int(whole or 0)) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0)
    value += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return Answer("expr", ("n", -value if sign == "-" else value, False), unit=unit,
                  percent=marks.percent)
  if _SCI_E_RE.fullmatch(s):
    mantissa, exponent = re.split("[eE]", s)
    s = f"{mantissa}\\times10^{{{exponent}}}"
  if re.search(r"(?<![_^\d])\d+\s+\d", s):  # "2 3" is no number a grader would read
    return None
  if any(w.lower() not in _MATH_WORDS for w in re.findall(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s)):
    # Words ("June 22"), not a product of one-letter variables: sympy-style reading would make
    # "Jnue 22" equal "June 22".
    return Answer("text", re.sub(r"\s+", " ", s.lower()).strip())
  node = ex.parse_expr(s)
  if node is None:
    if _words_only(s):
      return _read_words(s)
    return None
  return Answer("expr", node, unit=unit, percent=marks.percent, text=s)


def _valid_digits(digits: str, base: int) -> bool:
  try:
    int(digits, base)
    return True
  except ValueError:
    return False


def _read_words(s: str) -> Answer:
  words = re.sub(r"\s+", " ", s.lower()).strip()
  words = re.sub(r"^(the|a|an)\s+", "", words)
  if _ALLREALS_RE.fullmatch(words):
    return Answer("interval", ((_NEG_INF, _POS_INF, False, False),))
  return Answer("text", words)


def _strip_assignment(a: Answer) -> Answer:
  if a.kind == "eq" and a.value[0] is not None:
    return a.value[2]
  return a


_VAR_TUPLE_RE = re.compile(r"\(\s*[a-zA-Z](?:\s*,\s*[a-zA-Z])+\s*\)")
_VAR_RE = re.compile(r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-z]\))?"
                     r"|[fghpqrFGHPQRST](?:\^\{?-1\}?)?\([^()=]*\)")  # f(4) = 14


def _read_equation(sides: list[str], marks: Marks, q: Question) -> Answer | None:
  lhs, rhs = sides
  if not lhs or not rhs:
    return None
  if _VAR_TUPLE_RE.fullmatch(lhs):  # (x, y) = (2, -1)
    return _read_item(rhs, marks, q)
  if _VAR_RE.fullmatch(lhs) and lhs not in ("\\pi", "\\infty"):
    value = _read(rhs, marks, q) if ("," in rhs or "\\cup" in rhs) else _read_item(rhs, marks, q)
    if value is None:
      return None
    rhs_node = ex.parse_expr(rhs) if value.kind == "expr" else None
    return Answer("eq", (lhs.replace("{", "").replace("}", ""), ex.parse_expr(lhs), value,
                         rhs_node))
  l, r = ex.parse_expr(lhs), ex.parse_expr(rhs)
  if l is None or r is None:
    return None
  if not ex.variables(l) and not ex.variables(r):
    return _read_item(rhs, marks, q)  # 3^4 = 81: a computation answers with its last side
  return Answer("eq", (None, l, r, None))


def _read_inequality(s: str) -> Answer | None:
  """x > 4, 4 < x, -2 < x <= 3, x != 3 (one variable) -> a union of intervals."""
  parts = re.split(r"(<=|>=|!=|<|>)", s)
  exprs, ops = [p.strip() for p in parts[0::2]], parts[1::2]
  if len(exprs) not in (2, 3) or any(not e for e in exprs):
    return None
  var_at = [i for i, e in enumerate(exprs) if re.fullmatch(r"[a-zA-Z]", e)]
  if len(var_at) != 1:
    return None
  nodes = [None if i in var_at else ex.parse_expr(e) for i, e in enumerate(exprs)]
  if any(n is None for i, n in enumerate(nodes) if i not in var_at):
    return None
  lo, hi, lo_c, hi_c = _NEG_INF, _POS_INF, False, False
  v = var_at[0]
  if ops == ["!="]:
    other = nodes[1 - v]
    return Answer("interval", ((_NEG_INF, other, False, False), (other, _POS_INF, False, False)))
  for k, op in enumerate(ops):
    if op == "!=":
      return None
    left, right = k, k + 1
    if v not in (left, right):
      continue
    other = nodes[right] if v == left else nodes[left]
    # Normalise to "var OP other".
    if v == right:
      op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[op]
    if op in ("<", "<="):
      hi, hi_c = other, op == "<="
    else:
      lo, lo_c = other, op == ">="
  if len(ops) == 2 and ops[0][0] != ops[1][0]:
    return None  # 1 < x > 3 is no interval
  return Answer("interval", ((lo, hi, lo_c, hi_c),))


def _read_matrix(s: str) -> Answer | None:
  m = _MATRIX_RE.search(s)
  if m.group(1) in ("vmatrix", "Vmatrix"):
    return None  # a determinant: a number the sympy fallback can read
  prefix, suffix = s[:m.start()].strip(), s[m.end():].strip()
  scale = None
  if prefix[-1:] + suffix in ("()", "[]") and m.group(1) == "array":
    prefix, suffix = prefix[:-1].strip(), ""
  if suffix:
    return None
  if prefix:
    scale = ex.parse_expr(prefix.rstrip("*").removesuffix("\\cdot").strip())
    if scale is None:
      return None
  rows = []
  for row in m.group(2).split("\x01"):
    if not row.strip():
      continue
    cells = []
    for cell in row.split("&"):
      node = ex.parse_expr(cell.strip())
      if node is None:
        return None
      cells.append(node if scale is None else ("*", [scale, node]))
    rows.append(tuple(cells))
  if not rows or len({len(r) for r in rows}) != 1:
    return None
  return Answer("matrix", tuple(rows))


def as_interval(a: Answer) -> Answer | None:
  """An interval reading of a two-item bracket `(a, b]` (an interval stays itself), or None."""
  if a.kind == "interval":
    return a
  if a.kind == "bracket" and len(a.value[2]) == 2 and all(i.kind == "expr" for i in a.value[2]):
    lo, hi = a.value[2][0].value, a.value[2][1].value
    return Answer("interval", ((lo, hi, a.value[0] == "[", a.value[1] == "]"),))
  return None
