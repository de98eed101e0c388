"""The adaptive E-step on disk: rounds of sample shards, each scored before the next is planned.

  ITER/samples/round-01/   round 1's samples (`shards.write_ranges`; its spec.json holds
                           a digest of the round's ranges, so other ranges are refused)
  ITER/scores/round-01/    round 1's scored shards
  ITER/samples/round-02/   ...

Round r's ranges are `estep.allocate` of the counts that `estep.filter_samples` gives over the
scored shards of rounds 1 .. r-1, and round r starts only once those are all written. A rerun
after `kill -9` anywhere therefore computes the same ranges from the same files, finds the
finished shards and draws only the rest: it equals an uninterrupted run. A sample depends only on
(problem id, sample index) and the run's settings, not on batch size or device count, so neither
do the rounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from etils import epath

from restem_jax import file_io
from restem_jax.loop import estep

# (problem id, prompt token ids, first sample index, count)
Range = tuple[Any, Sequence[int], int, int]


@dataclasses.dataclass
class Rounds:
  """What `run_rounds` returns.

  Attributes:
    score_paths: every round's scored shards, in round order, then shard order.
    rounds: per round {"round": r, "problems": problems sampled, "samples": samples drawn}.
    samples_per_problem: problem id -> samples drawn in all rounds.
  """

  score_paths: list[str]
  rounds: list[dict[str, int]]
  samples_per_problem: dict[Any, int]


def round_dirs(iter_dir: epath.PathLike, r: int) -> tuple[epath.Path, epath.Path]:
  """Round r's samples and scores directories under the iteration's directory."""
  iter_dir = epath.Path(iter_dir)
  return iter_dir / "samples" / f"round-{r:02d}", iter_dir / "scores" / f"round-{r:02d}"


def run_rounds(iter_dir: epath.PathLike, problems: Sequence[Mapping[str, Any]],
               prompts: Mapping[Any, Sequence[int]], plan: estep.Plan, *,
               draw: Callable[[epath.Path, list[Range]], None],
               score: Callable[[epath.Path, epath.Path], list[str]]) -> Rounds:
  """Runs (or resumes) the rounds of one iteration's adaptive E-step.

  Args:
    iter_dir: the iteration's directory (WORKDIR/iterN).
    problems: the training problems ({"id", "prompt", ...}); rounds list them in this order.
    prompts: problem id -> prompt token ids, for every problem.
    plan: the budget, K, cap, round size and dedup (`estep.Plan`).
    draw: draw(samples_dir, ranges) writes a round's samples (e.g. with
      `shards.write_ranges`), returning once every host's shards exist; a rerun with
      the same ranges must resume.
    score: score(samples_dir, scores_dir) writes each sample shard's scored copy (records with
      "passed") and returns every scored shard's path (all hosts'), in order.

  Raises:
    ValueError: a problem without a prompt, or a round whose scored shards do not hold exactly
      the samples it asked for (files changed under the run).
  """
  ids = [p["id"] for p in problems]
  missing = [pid for pid in ids if pid not in prompts]
  if missing:
    raise ValueError(f"no prompt for problems {missing[:5]}")
  budget = plan.total(len(ids))
  records: list[dict[str, Any]] = []
  paths: list[str] = []
  rounds: list[dict[str, int]] = []
  while True:
    got = estep.filter_samples(records, problems, max_per_problem=plan.max_per_problem,
                               dedup=plan.dedup)
    drawn = [got.drawn_per_problem[pid] for pid in ids]
    if rounds and sum(drawn) != sum(r["samples"] for r in rounds):
      raise ValueError(f"{iter_dir}: the scored rounds hold {sum(drawn)} samples, the rounds "
                       f"asked for {sum(r['samples'] for r in rounds)}; use a new directory")
    counts = estep.allocate(drawn, [got.kept_per_problem[pid] for pid in ids],
                            max_per_problem=plan.max_per_problem,
                            max_samples_per_problem=plan.max_samples_per_problem,
                            budget_left=budget - sum(drawn), round_samples=plan.round_samples)
    if not any(counts):
      return Rounds(paths, rounds, dict(zip(ids, drawn)))
    r = len(rounds) + 1
    ranges = [(pid, prompts[pid], first, n) for pid, first, n in zip(ids, drawn, counts) if n]
    sample_dir, score_dir = round_dirs(iter_dir, r)
    draw(sample_dir, ranges)
    new = score(sample_dir, score_dir)
    for path in new:
      records += [{k: rec[k] for k in ("id", "sample_index", "text", "passed")}
                  for rec in file_io.read_jsonl(path)]
    paths += [str(p) for p in new]
    rounds.append({"round": r, "problems": len(ranges), "samples": sum(counts)})
