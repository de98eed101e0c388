"""The E-step's decisions as pure functions of sample records: what to keep, what to draw next.

The paper's filter keeps, for each problem, at most K samples whose reward is 1, the first K by
sample index (`filter_samples`). With `dedup`, samples whose text is the same after whitespace
normalisation (`normalize`) count once toward K: the first by sample index is kept, the later
ones are dropped and counted.

The adaptive budget (`Plan.budget == "adaptive"`) spends the uniform budget (N samples times the
number of problems) in rounds. The first round gives every problem `round_samples` samples
(indices 0, 1, ...: exactly the first samples the uniform budget draws); each later round
(`allocate`) goes to the problems with fewer than K samples counted toward K, those with the
fewest first, until each has K, or has drawn `max_samples_per_problem`, or the budget is spent.
A problem's samples keep consecutive indices across rounds, so a sample is still identified by
(problem id, sample index), and with it its PRNG key.

Nothing here reads or writes files: `adaptive.py` runs the rounds on disk, `run.py` calls both.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BUDGETS = ("uniform", "adaptive")
FINETUNE_FROM = ("base", "previous")
# Iteration statistics that only the adaptive budget or dedup make informative: a plain uniform
# run leaves them out of summary.json, whose bytes then equal the runs' before these switches
# (there, problems_with_kept is the solved count and duplicates_dropped is 0).
EXTENDED_STATS = ("problems_with_kept", "duplicates_dropped")


@dataclasses.dataclass(frozen=True)
class Plan:
  """How one iteration's E-step spends its samples (the `restem` config keys, resolved).

  Attributes:
    budget: "uniform" (N samples for every problem, the paper) or "adaptive" (rounds).
    num_samples: N; the iteration's budget is N x the number of problems either way.
    max_per_problem: K, the most samples kept per problem.
    max_samples_per_problem: adaptive: the most samples one problem may draw.
    round_samples: adaptive: samples a problem gets in a round (the first round: every problem).
    dedup: samples equal after whitespace normalisation count once toward K.
  """

  budget: str = "uniform"
  num_samples: int = 32
  max_per_problem: int = 10
  max_samples_per_problem: int = 128
  round_samples: int = 16
  dedup: bool = False

  def __post_init__(self):
    if self.budget not in BUDGETS:
      raise ValueError(f"restem.budget must be one of {BUDGETS}, got {self.budget!r}")
    for name in ("num_samples", "max_per_problem", "max_samples_per_problem", "round_samples"):
      if getattr(self, name) < 1:
        raise ValueError(f"restem.{name} must be >= 1, got {getattr(self, name)}")
    if self.round_samples > self.num_samples:
      raise ValueError(f"restem.round_samples ({self.round_samples}) must be at most "
                       f"restem.num_samples ({self.num_samples}): the first round gives every "
                       f"problem that many samples out of the N-per-problem budget")

  @classmethod
  def from_config(cls, restem: Mapping[str, Any]) -> Plan:
    """The plan of a run's `restem` config section; 0 means the default for the two sizes.

    Raises:
      ValueError: naming the `restem.` key that is out of range.
    """
    n = int(restem["num_samples"])
    cap = int(restem["max_samples_per_problem"]) or 4 * n
    per_round = int(restem["round_samples"]) or max(1, n // 2)
    return cls(budget=str(restem["budget"]), num_samples=n,
               max_per_problem=int(restem["max_per_problem"]), max_samples_per_problem=cap,
               round_samples=per_round, dedup=bool(restem["dedup"]))

  def total(self, num_problems: int) -> int:
    """The iteration's budget: N samples per problem, however they are spread."""
    return self.num_samples * num_problems


def normalize(text: str) -> str:
  """The text with every run of whitespace made one space and none at the ends (for dedup)."""
  return " ".join(text.split())


def histogram(values: Iterable[int]) -> dict[str, int]:
  """{"value": how many times, ...} in increasing value order (JSON keys are strings)."""
  counts = collections.Counter(values)
  return {str(k): v for k, v in sorted(counts.items())}


@dataclasses.dataclass
class Filtered:
  """What `filter_samples` returns.

  Attributes:
    kept: {"id", "sample_index", "prompt", "text"} per kept sample, in the order the problems
      first occur in the records, each problem's by sample index.
    stats: num_samples, num_correct, num_kept, train_solve_rate (problems with a correct
      sample / problems), kept_per_problem_histogram, correct_per_problem_histogram,
      problems_with_kept, duplicates_dropped (correct samples not kept because they repeat a
      kept one of their problem, counted while it has fewer than K).
    kept_per_problem: problem id -> samples kept (what counts toward K), every problem.
    drawn_per_problem: problem id -> samples in the records, every problem.
  """

  kept: list[dict[str, Any]]
  stats: dict[str, Any]
  kept_per_problem: dict[Any, int]
  drawn_per_problem: dict[Any, int]


def filter_samples(records: Iterable[Mapping[str, Any]], problems: Sequence[Mapping[str, Any]],
                   *, max_per_problem: int, dedup: bool = False) -> Filtered:
  """Keeps each problem's first `max_per_problem` correct samples by sample index.

  Args:
    records: scored samples, each with "id", "sample_index", "text" and "passed"; any order
      across rounds (a problem's are taken by sample index).
    problems: every training problem, each with "id" (and "prompt", copied into kept samples);
      the histograms and rates are over these.
    max_per_problem: K.
    dedup: a correct sample whose `normalize`d text equals a kept one of its problem is dropped
      and does not count toward K.

  Raises:
    ValueError: a record of a problem not in `problems`, or two records with the same
      (id, sample_index).
  """
  by_id = {p["id"]: p for p in problems}
  groups: dict[Any, list[Mapping[str, Any]]] = {}
  for rec in records:
    if rec["id"] not in by_id:
      raise ValueError(f"sample {rec['id']!r}/{rec['sample_index']} is of no known problem")
    groups.setdefault(rec["id"], []).append(rec)
  kept: list[dict[str, Any]] = []
  kept_n, correct_n, drawn_n = (collections.Counter() for _ in range(3))
  num_samples = num_correct = duplicates = 0
  for pid, group in groups.items():
    group = sorted(group, key=lambda r: r["sample_index"])
    indices = [r["sample_index"] for r in group]
    if len(set(indices)) != len(indices):
      raise ValueError(f"problem {pid!r} has two samples with the same sample_index")
    seen: set[str] = set()
    for rec in group:
      num_samples += 1
      drawn_n[pid] += 1
      if not rec["passed"]:
        continue
      num_correct += 1
      correct_n[pid] += 1
      if kept_n[pid] >= max_per_problem:
        continue
      if dedup:
        key = normalize(rec["text"])
        if key in seen:
          duplicates += 1
          continue
        seen.add(key)
      kept_n[pid] += 1
      kept.append({"id": pid, "sample_index": rec["sample_index"],
                   "prompt": by_id[pid]["prompt"], "text": rec["text"]})
  ids = [p["id"] for p in problems]
  stats = {"num_samples": num_samples, "num_correct": num_correct, "num_kept": len(kept),
           "train_solve_rate": sum(1 for i in ids if correct_n[i]) / max(1, len(ids)),
           "kept_per_problem_histogram": histogram(kept_n[i] for i in ids),
           "correct_per_problem_histogram": histogram(correct_n[i] for i in ids),
           "problems_with_kept": sum(1 for i in ids if kept_n[i]),
           "duplicates_dropped": duplicates}
  return Filtered(kept, stats, {i: kept_n[i] for i in ids}, {i: drawn_n[i] for i in ids})


def allocate(drawn: Sequence[int], counted: Sequence[int], *, max_per_problem: int,
             max_samples_per_problem: int, budget_left: int, round_samples: int) -> list[int]:
  """How many samples each problem draws in the next round (all 0: the E-step is done).

  The round goes to the open problems (fewer than K counted, fewer than the cap drawn) with the
  fewest counted; among them those that drew fewest come first, then by position. Each gets
  `round_samples`, less where the cap or the budget left is nearer. With nothing drawn yet,
  every problem is open with 0 counted: the first round gives each `round_samples`.

  Args:
    drawn: samples each problem has drawn so far.
    counted: samples each problem has that count toward K (kept so far).
    max_per_problem: K.
    max_samples_per_problem: the cap on a problem's samples.
    budget_left: samples the iteration may still draw.
    round_samples: samples per problem in a round.

  Returns:
    One count per problem, each within its cap, summing to at most `budget_left`.
  """
  if len(drawn) != len(counted):
    raise ValueError(f"{len(drawn)} drawn counts for {len(counted)} problems")
  open_ = [i for i in range(len(drawn))
           if counted[i] < max_per_problem and drawn[i] < max_samples_per_problem]
  out = [0] * len(drawn)
  if not open_ or budget_left <= 0:
    return out
  level = min(counted[i] for i in open_)
  left = budget_left
  for i in sorted((i for i in open_ if counted[i] == level), key=lambda i: (drawn[i], i)):
    if left == 0:
      break
    out[i] = min(round_samples, max_samples_per_problem - drawn[i], left)
    left -= out[i]
  return out
