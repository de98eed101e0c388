"""Ground truth beyond the binary reward, for the embedded tasks: is a kept sample truly right?

ReST^EM keeps every sample its reward calls right. The embedded generators know more than the
reward checks, so a run can measure how often that reward is fooled (the paper's open question
about false positives):

  arith   the reward reads the final answer only; truly right = every worked step is right
          (`arith.steps_right`), not two slips that cancel out.
  prog    the reward runs six unit tests; truly right = the program also passes a few hundred
          fresh random inputs (`prog.fresh_check`), run in the sandbox by the code judge.

`kept_precision` is the fraction of kept samples that are truly right; other data sets have no
such truth (None).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from restem_jax.data import arith, prog, sources
from restem_jax import rewards

KINDS = ("arith", "prog")
FRESH_INPUTS = 300  # prog: fresh random inputs per problem


def kept_precision(kind: str, options: Mapping[str, Any], problems: Mapping[str, Mapping],
                   kept: Sequence[Mapping[str, str]], reward_options: Mapping[str, Any] = {},
                   max_checked: int = 0, seed: int = 0) -> dict[str, Any] | None:
  """The fraction of kept samples that are truly right by the generator's ground truth.

  Args:
    kind: the data set kind; only "arith" and "prog" have a ground truth.
    options: the task's source options ("seed", "sizes", "knobs"), as the run registered it.
    problems: problem id -> the loop's problem dict ("question"; prog: "prompt", "entry_point").
    kept: the kept samples, each {"id", "text"}.
    reward_options: options of the code reward (`restem_jax.rewards.get`), for prog.
    max_checked: prog: judge at most this many distinct (problem, program) pairs, drawn
      uniformly with `seed`, each counted as often as it was kept (0 = all). Identical programs
      kept for one problem are judged once.
    seed: the draw of `max_checked`.

  Returns:
    None for other kinds or when nothing was kept; else {"kept_precision": float,
    "kept_checked": how many kept samples the fraction is over}.
  """
  if kind not in KINDS or not kept:
    return None
  if kind == "arith":
    right = [arith.steps_right(problems[k["id"]]["question"], k["text"]) for k in kept]
    return {"kept_precision": sum(right) / len(right), "kept_checked": len(right)}
  counts: dict[tuple[str, str], int] = {}
  for k in kept:
    counts[(k["id"], k["text"])] = counts.get((k["id"], k["text"]), 0) + 1
  pairs = sorted(counts)
  if max_checked and len(pairs) > max_checked:
    pairs = sorted(random.Random(seed).sample(pairs, max_checked))
  config = prog.ProgConfig.from_dict(dict(options.get("knobs") or {}))
  sizes = {**sources.DEFAULT_SIZES, **dict(options.get("sizes") or {})}
  generated = {p["task_id"]: p for split in prog.generate(sizes, options.get("seed", 0),
                                                          config).values() for p in split}
  checks = [{"prompt": problems[i]["prompt"], "entry_point": problems[i]["entry_point"],
             "test": prog.fresh_check(generated[i], FRESH_INPUTS, seed, config)}
            for i, _ in pairs]
  reward = rewards.get("humaneval", **dict(reward_options))
  verdicts = reward.score_batch(checks, [text for _, text in pairs])
  weights = [counts[p] for p in pairs]
  right = sum(w for w, v in zip(weights, verdicts) if v.passed)
  return {"kept_precision": right / sum(weights), "kept_checked": sum(weights)}
