"""What every reward function returns."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The judgement of one sample.

  Attributes:
    passed: whether the sample earns reward 1 (ReST^EM's binary reward).
    reason: why, in a few words ("correct (number)", "wrong answer", "test 3: timed out", ...).
    answer: math: the extracted final answer (None when none was found).
    key: math: the canonical answer key for majority voting (None when no answer).
    isolation: code: the OS isolation the sample ran under ("bwrap", "unshare" or "none").
    tests_passed: code: how many unit tests the judge saw pass.
    tests_total: code: how many unit tests the problem has.
  """
  passed: bool
  reason: str
  answer: str | None = None
  key: str | None = None
  isolation: str | None = None
  tests_passed: int | None = None
  tests_total: int | None = None

  @property
  def reward(self) -> float:
    """The binary reward r(x, y) in {0, 1}."""
    return 1.0 if self.passed else 0.0

  def to_json(self) -> dict[str, Any]:
    """The set fields as a JSON-ready dict (for results files)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
