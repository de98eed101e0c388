"""Clean-up of a LaTeX final answer before it is read (`_math_forms.read_answer`).

`clean` strips presentation that does not change the value (`\\boxed`, `\\left`/`\\right` and
sizes, spacing, `\\text{}` wrappers, thousands separators, Unicode symbols, plain-text `sqrt`
and `pi`) and returns in `Marks` what the marks it removed said (%, a degree sign, $); a decimal
with an ellipsis that shows its period becomes a repeating decimal. `unwrap` removes a command
around its argument (the math reward's normalizer uses it too); `matching_brace` and `split_top`
find a closing brace and the top-level separators of a list.
"""

from __future__ import annotations

import dataclasses
import re

_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|"
                          r"mbox|hbox|operatorname|textsf|mathsf)\s*\{")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°|"
                        r"(?<=\d)\s*\^\s*\{?\s*o\s*\}?(?![a-zA-Z])")  # 30^o, a common slip
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|"
                            r"Bigg|displaystyle)(?![a-zA-Z])")
_SEP_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\{,\}|\\,|\\ |~|\\;|\\:|,\\!|\\!,|\\!)(?=\d{3}(?!\d))")
_COMPARE = [(r"\\leqslant|\\leq|\\le(?![a-zA-Z])|≤", "<="),
            (r"\\geqslant|\\geq|\\ge(?![a-zA-Z])|≥", ">="), (r"\\lt(?![a-zA-Z])", "<"),
            (r"\\gt(?![a-zA-Z])", ">"), (r"\\neq|\\ne(?![a-zA-Z])|≠", "!=")]


_UNICODE = [("\u2212", "-"), ("\u2013", "-"), ("\u221a", "\\sqrt"), ("\u03c0", "\\pi "),
            ("\u221e", "\\infty "), ("\u00d7", "\\times "), ("\u00b7", "\\cdot "), ("\u2264", "<="),
            ("\u2265", ">="), ("\u2260", "!="), ("\u222a", "\\cup "), ("\u00bd", "\\frac{1}{2}"),
            ("\u2153", "\\frac{1}{3}"), ("\u00b2", "^2"), ("\u00b3", "^3"),
            ("\u00bc", "\\frac{1}{4}"), ("\u00be", "\\frac{3}{4}")]


def matching_brace(s: str, i: int) -> int | None:
  """Index of the `}` closing the `{` at i; escaped braces (`\\{`) do not count."""
  depth = 0
  while i < len(s):
    ch = s[i]
    if ch == "\\":
      i += 2
      continue
    if ch == "{":
      depth += 1
    elif ch == "}":
      depth -= 1
      if depth == 0:
        return i
    i += 1
  return None


def unwrap(s: str, pattern: re.Pattern, pad: str = "") -> str:
  """Replaces `\\cmd{X}` by X (between `pad`s) for every match of pattern (brace-matched,
  innermost last; at most 50, so bounded)."""
  for _ in range(50):
    m = pattern.search(s)
    if not m:
      break
    close = matching_brace(s, m.end() - 1)
    if close is None:
      break
    s = s[:m.start()] + pad + s[m.end():close] + pad + s[close + 1:]
  return s


@dataclasses.dataclass(frozen=True)
class Marks:
  percent: bool = False
  degree: bool = False
  dollar: bool = False


def clean(s: str) -> tuple[str, Marks]:
  """Strips presentation (delimiters, spacing, sizes, `\\text`) and notes %, degree and $."""
  s = s.strip()
  for char, tex in _UNICODE:
    s = s.replace(char, tex)
  # Plain-text maths from chat models: sqrt(2), pi, inf.
  s = re.sub(r"(?<![\\a-zA-Z])(sqrt|pi|infty|sin|cos|tan|ln|log)(?![a-zA-Z])", r"\\\1", s)
  s = unwrap(s, re.compile(r"\\(?:boxed|fbox)\s*\{"))
  s = s.replace("\\\\", "\x01")  # a matrix row break survives the escape clean-up below
  dollar = "\\$" in s or bool(re.search(r"\$\s*\d", s)) and s.count("$") == 1
  s = s.replace("\\$", " ").replace("$", " ")
  s = re.sub(r"\\[()\[\]]", " ", s)
  s = re.sub(r"\\(?:left|right)\s*\.", "", s)  # \left. ... \right| : invisible delimiters
  s = _LEFT_RIGHT_RE.sub("", s)
  s = _SEP_THOUSANDS_RE.sub(",", s)
  s = s.replace("{,}", ",").replace("\\!", "")
  s = re.sub(r"\\[,:; ]|\\q?quad(?![a-zA-Z])|~", " ", s)
  s = re.sub(r"\\[dt](frac|binom)(?![a-zA-Z])|\\(?:nicefrac|sfrac|cfrac)(?![a-zA-Z])",
             lambda m: "\\" + (m.group(1) or "frac"), s)
  s = re.sub(r"\{([^{}]*)\\over(?![a-zA-Z])([^{}]*)\}", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\langle(?![a-zA-Z])", "(", s)
  s = re.sub(r"\\rangle(?![a-zA-Z])", ")", s)
  s = re.sub(r"\\mathbb\s*\{?\s*R\s*\}?", " allreals ", s)
  s = re.sub(r"\\(?:emptyset|varnothing)(?![a-zA-Z])|\\\{\s*\\\}", " emptyset ", s)
  s = unwrap(s, _TEXT_CMD_RE, pad=" ")
  s = re.sub(r"\\(?:rm|bf|it|mathrm)(?![a-zA-Z])", " ", s)
  s = re.sub(r"(?<![\\a-zA-Z}^_])\{\s*([A-Za-z]{2,}[A-Za-z ]*)\}", r" \1 ", s)  # {\rm cm}
  degree = bool(_DEGREE_RE.search(s))
  s = _DEGREE_RE.sub(" ", s)
  percent = "%" in s
  s = s.replace("\\%", " ").replace("%", " ")
  for pattern, repl in _COMPARE:
    s = re.sub(pattern, repl, s)
  s = re.sub(r"\s+", " ", s).strip()
  s = _ELLIPSIS_RE.sub(_repeating, s)
  s = re.sub(r"[.\s]+$", "", s).strip()
  s = re.sub(r"^(?:and|or)\s+|^(?:=|\\approx|\\sim)\s*", "", s)
  exact, approx, _ = s.partition("\\approx")
  if approx and exact.strip() and not re.search(r"(?<![\\a-zA-Z])[a-zA-Z](?![a-zA-Z])", exact):
    s = exact.strip()  # 2\\sqrt{3} \\approx 3.46: the exact value is the answer
  s = re.sub(r"\\approx", "=", s)  # x \\approx 3.46: the value given
  return s, Marks(percent, degree, dollar)


_ELLIPSIS_RE = re.compile(r"(\d*)\.(\d+)\s*(?:\.\.\.|\\[lc]?dots(?![a-zA-Z])|\u2026)")


def _repeating(m: re.Match) -> str:
  """`0.333...` -> `0.\\overline{3}` when the digits show their period twice (`0.1666...`,
  `0.142857142857...`); other decimals before an ellipsis stay as written."""
  whole, digits = m.group(1), m.group(2)
  for period in range(1, len(digits) // 2 + 1):
    tail = digits[-period:]
    if digits.endswith(tail * 2):
      fixed = digits[:-period]
      while fixed.endswith(tail):
        fixed = fixed[:-period]
      return f"{whole}.{fixed}\\overline{{{tail}}}"
  return f"{whole}.{digits}"


def split_top(s: str, seps: re.Pattern) -> list[str]:
  """s split at matches of seps outside any brackets."""
  parts, depth, start, i = [], 0, 0, 0
  while i < len(s):
    ch = s[i]
    if ch == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
      depth += 1 if s[i + 1] == "{" else -1
      i += 2
      continue
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif depth == 0:
      m = seps.match(s, i)
      if m and m.end() > i:
        parts.append(s[start:i])
        start = i = m.end()
        continue
    i += 1
  parts.append(s[start:])
  return [p.strip() for p in parts]
