"""What answer form a question asks for, read from its wording (see `_math_forms`)."""

from __future__ import annotations

import dataclasses
import functools
import re

# ----------------------------------------------------------------------------- units

_UNIT_CANON = {
    "centimeter": "cm", "centimetre": "cm", "meter": "m", "metre": "m", "millimeter": "mm",
    "kilometer": "km", "inch": "in", "inche": "in", "foot": "ft", "feet": "ft", "yard": "yd",
    "mile": "mi", "hour": "hr", "hr": "hr", "minute": "min", "second": "sec", "sec": "sec",
    "degree": "deg", "dollar": "usd", "gram": "g", "kilogram": "kg", "pound": "lb", "lb": "lb",
    "sq": "square", "unit": "unit", "mph": "mi/hr", "cent": "cent", "liter": "l", "litre": "l",
    "ounce": "oz", "gallon": "gal", "radian": "rad", "day": "day", "week": "week", "year": "year",
    "month": "month"}
KNOWN_UNITS = frozenset(_UNIT_CANON.values()) - {"square", "unit"}
# Words that name a unit only sometimes ("in", "m", "g" are words or variables too); a sign or a
# count word ($, degrees, cents, days) says nothing about the measure asked for.
_AMBIGUOUS_WORDS = frozenset({"in", "m", "g", "l", "s", "h", "sec", "min", "sq"})
MARK_UNITS = frozenset({"deg", "usd", "cent"})  # signs of a kind of answer, not its measure
_CALENDAR_UNITS = frozenset({"day", "week", "year", "month"})  # story words more than units


def unit_bases(unit: str) -> set[str]:
  """The known units a canonical unit is made of (`mi/hr` -> {mi, hr}; `cm^2` -> {cm})."""
  return {part.split("^")[0] for part in unit.replace("/", " ").split()} & KNOWN_UNITS


def canonical_unit(words: str) -> str:
  """A unit phrase in one spelling (`square centimeters` and `cm^2` give `cm^2`)."""
  w = words.lower().replace("{", "").replace("}", "").replace(" per ", "/")
  w = re.sub(r"\s+", " ", w).strip()
  out = []
  power = ""
  for token in re.findall(r"[a-z]+|\^\s*\d|/", w):
    if token in ("square", "sq"):
      power = "^2"
      continue
    if token == "cubic":
      power = "^3"
      continue
    if token.startswith("^"):
      if out:
        out[-1] += "^" + token[-1]
      continue
    if token in ("squared",) and out:
      out[-1] += "^2"
      continue
    if token != "/":
      token = token[:-1] if token.endswith("s") and len(token) > 3 else token
      token = _UNIT_CANON.get(token, token)
    out.append(token + power if token != "/" else token)
    power = ""
  return " ".join(out).replace(" / ", "/")


# ----------------------------------------------------------------------------- questions


@dataclasses.dataclass(frozen=True)
class Question:
  """The forms a question asks for (all False / None for a question that fixes none)."""
  expand: bool = False
  factor: bool = False
  simplify: bool = False
  radical: bool = False
  common_fraction: bool = False
  lowest_terms: bool = False
  mixed: bool = False
  improper: bool = False
  complex_form: bool = False  # "in the form a+bi"
  decimal: bool = False
  in_pi: bool = False
  scientific: bool = False
  percent: bool = False
  ordered: bool = False
  listing: bool = False
  pair: bool = False
  evaluate: bool = False  # "Compute", "Evaluate": an integer answer is written as one
  degrees: str | None = None  # "decreasing" / "increasing": a polynomial's terms in that order
  base: int | None = None
  units: frozenset[str] = frozenset()  # the measures the question names (cm, mi, hr, ...)
  unit_powers: frozenset[str] = frozenset()  # those with their powers (cm^2 for "square cm")
  named_units: frozenset[str] = frozenset()  # every known unit named, signs too (deg, usd)
  ratio: bool = False  # asks for a ratio or odds (4:10 is then no time of day)
  choices: tuple[tuple[str, str], ...] = ()  # multiple choice: (letter, the option's text)
  solved_for: str | None = None  # "in the form $y = mx + b$": the equation is solved for y
  normalized: bool = False  # "A > 0 and gcd(|A|,|B|,...) = 1": an equation's scale is fixed
  known: bool = False  # a question was given (its silence about a form then means something)

  @property
  def asks_form(self) -> bool:
    """Whether the question asks for a form that only this module's readings can check."""
    return (self.expand or self.factor or self.simplify or self.radical or self.common_fraction
            or self.lowest_terms or self.mixed or self.improper or self.complex_form
            or self.decimal or self.in_pi or self.scientific
            or self.base not in (None, 10) or self.degrees is not None)


_BASE_RE = re.compile(r"(?:in|to|into|as a|as an?)\s+base[\s\-]*\$?\{?(\d+)\}?\$?", re.I)
# "base-6", "base 6 number", "base $6$ representation" (not "a base 6 cm long"); used when the
# question names one base only.
_BASE_ANY_RE = re.compile(r"base-\$?\{?(\d+)|base\s*\$?\{?(\d+)\}?\$?(?=\s*(?:numbers?|"
                          r"numerals?|representation|digits?|system|integers?|arithmetic|"
                          r"expansion|equivalent|[,.?)]|$))", re.I)


_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "sixteen": 16}
_WORD_BASE_RE = re.compile(r"base[\s\-]+(" + "|".join(_NUMBER_WORDS) + r")\b", re.I)


# "(A) $5$ (B) 6": an option's letter and its text, up to the next option or the line's end.
_OPTION_RE = re.compile(r"\(([A-E])\)\s*\}?[ \t]*([^\n]*?)[ \t]*(?=\\q?quad|\([A-E]\)|\n|$)")


@functools.lru_cache(maxsize=4096)
def read_question(text: str | None) -> Question:
  """Which answer form the question's wording asks for."""
  if not isinstance(text, str) or not text:
    return Question()
  q = _WORD_BASE_RE.sub(lambda m: f"base-{_NUMBER_WORDS[m.group(1).lower()]}",
                       text[-2000:])  # the instructions are at the end; a bounded scan
  low = q.lower()
  base = None
  targets = _BASE_RE.findall(q)
  if targets:
    base = int(targets[-1])
  else:
    named = {a or b for a, b in _BASE_ANY_RE.findall(q)}
    if not named:  # "Find $12_6 + 5_6$": the base its numbers are written in
      named = set(re.findall(r"\d_\{?(\d+)\}?", q))
    if len(named) == 1:
      base = int(named.pop())
  if base is not None and not 2 <= base <= 36:
    base = None
  factor = bool(re.search(r"\bfactor\b(?!s| of| out)", low)) and not re.search(
      r"(common|prime|scale|integer|largest|greatest|smallest) factor\b", low)
  return Question(
      expand=bool(re.search(r"\b(expand|multiply out)\b|form \$\s*[a-z]\s*x\s*\^\s*\{?\d\}?\s*\+",
                            low)),  # "in the form $ax^2+bx+c$": expanded
      factor=factor,
      simplify=bool(re.search(r"\bsimplify\b", low)),
      radical=("simplest radical form" in low or "rationaliz" in low),
      common_fraction="common fraction" in low,
      lowest_terms=bool(re.search(r"(lowest terms|simplest form|reduced fraction)", low)),
      mixed="mixed number" in low,
      improper="improper fraction" in low,
      # "Compute", "Find the value", "What is $3^4$?", "Find $(1+i)^2$.": a value is asked for
      evaluate=bool(re.search(r"\b(compute|evaluate|calculate|simplify)\b|(find|what is) the value"
                              r"|\b(?:what is|find|determine) \$[^$]*[-+*/^!\\][^$]*\$\s*[.?]",
                              low)),
      complex_form=bool(re.search(r"form \$?a\s*\+\s*bi\b", low)),
      decimal=bool(re.search(r"\b(as a decimal|decimal to|to the nearest (tenth|hundredth|"
                             r"thousandth)|decimal form|in decimal)", low)),
      in_pi=bool(re.search(r"in terms of \$?\\pi", low)),
      scientific="scientific notation" in low,
      percent=bool(re.search(r"(what|which) percent|as a percent|percentage|\bpercent\b.*\?",
                             low)),
      ordered=bool(re.search(r"(increasing|decreasing|ascending|descending) order|"
                             r"least to greatest|greatest to least|smallest to largest", low)),
      degrees=("decreasing" if re.search(r"degrees? of the terms in (decreasing|descending)", low)
               else "increasing" if re.search(r"degrees? of the terms in (increasing|ascending)",
                                              low) else None),
      listing=bool(re.search(r"separated by commas|comma[- ]separated|enter all", low)),
      pair=bool(re.search(r"ordered (pair|triple)|coordinates|\bpoint\b", low)),
      units=_question_units(low), unit_powers=_question_unit_powers(low),
      choices=tuple((m.group(1), m.group(2).strip()) for m in _OPTION_RE.finditer(q)),
      named_units=_named_units(low), ratio=bool(re.search(r"\b(ratios?|odds)\b", low)),
      solved_for=(m.group(1) if (m := re.search(r"form\s*\$\s*([a-z])\s*=", low)) else None),
      normalized=bool(re.search(r"\\gcd\s*\(\s*\|", low)), base=base, known=True)


def _named_units(low: str) -> frozenset[str]:
  """Every known unit the question names without doubt, signs of a kind included (degrees,
  dollars, cents)."""
  found = set()
  for word in re.findall(r"[a-z]+", low):
    if word not in _AMBIGUOUS_WORDS:
      found |= unit_bases(canonical_unit(word))
  if re.search(r"\\circ|\^\s*\{?\s*\\circ|°", low):
    found.add("deg")
  if "\\$" in low:
    found.add("usd")
  return frozenset(found)


def _question_units(low: str) -> frozenset[str]:
  """Known units the question names; empty unless one is named without doubt (a word like
  "centimeters" or "mph", not "in" or "m")."""
  found = set()
  for word in re.findall(r"[a-z]+", low):
    if word not in _AMBIGUOUS_WORDS:
      found |= unit_bases(canonical_unit(word))
  if not found - MARK_UNITS - _CALENDAR_UNITS:
    return frozenset()
  return frozenset(found)


def _question_unit_powers(low: str) -> frozenset[str]:
  """The units the question names without doubt, each with its power ("square feet" ->
  ft^2, "cubic cm" -> cm^3, "feet" -> ft)."""
  words = re.findall(r"[a-z]+|\^\s*\d", low)
  plain = " ".join(w for w in words if w not in _AMBIGUOUS_WORDS or w == "sq")
  found = set()
  for part in canonical_unit(plain).replace("/", " ").split():
    base = part.split("^")[0]
    if base in KNOWN_UNITS and base not in MARK_UNITS and base not in _CALENDAR_UNITS:
      found.add(part if not part.endswith("^1") else base)
  return frozenset(found)
