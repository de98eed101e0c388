"""Sample-and-score on problem sets: the shared core of the Generate step and of evaluation.

`sample_and_score` draws N samples per problem with a `sampling.Sampler`, scores each with a
reward (`restem_jax.rewards`), and returns JSON-ready records. `summarize` turns the records of
one model on one split into the summary.json evaluation entry: greedy accuracy, unbiased pass@k
and maj@k.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from restem_jax import file_io
from restem_jax.loop import metrics
from restem_jax import sampling


def sample(sampler: sampling.Sampler, problems: Sequence[Mapping[str, Any]], *,
           num_samples: int, strategy, max_new_tokens: int, seed: int, iteration: int,
           stop_strings: Sequence[str] = (), batch_size: int = 64) -> list[dict[str, Any]]:
  """Samples `num_samples` completions of every problem.

  Args:
    sampler: holds the model on the mesh.
    problems: dicts with "id" and "prompt_ids".
    num_samples: samples per problem.
    strategy: a `sampling` strategy (Greedy(), TopK(k, t), ...).
    max_new_tokens: most tokens per sample.
    seed, iteration: seed the per-sample keys (with the problem id and sample index).
    stop_strings: end a sample at the first of these.
    batch_size: rows decoded together.

  Returns:
    One sample record (`file_io.sample_record`) per sample, problem-major: {"id",
    "sample_index", "question", "answer", "text", "num_tokens", "finish_reason", "logprob"}:
    the problem's question and reference answer (where the problem has them) travel with each
    sample, so a record reads on its own.
  """
  if not problems:
    return []
  start = time.time()
  samples = sampler.generate([p["id"] for p in problems], [p["prompt_ids"] for p in problems],
                             num_samples=num_samples, strategy=strategy,
                             max_new_tokens=max_new_tokens, seed=seed, iteration=iteration,
                             stop_strings=stop_strings, batch_size=batch_size)
  # The question, reference answer and breakdown fields (MATH's level and subject) travel
  # with the samples, for the notebooks.
  records = [file_io.sample_record(p["id"], j, s, token_ids=False, problem=p)
             for p, per in zip(problems, samples) for j, s in enumerate(per)]
  seconds = time.time() - start
  tokens = sum(r["num_tokens"] for r in records)
  logging.info("  sampled %d problems x %d: %d tokens in %.1fs (%.0f tok/s)", len(problems),
               num_samples, tokens, seconds, tokens / max(seconds, 1e-9))
  return records


def score(records: Sequence[Mapping[str, Any]], problems: Sequence[Mapping[str, Any]], reward,
          workers: int | None = None) -> list[dict[str, Any]]:
  """Adds each sample's verdict ("passed", "reason", "key") to a copy of its record.

  Args:
    records: from `sample`.
    problems: the problems they were drawn for (what the reward needs, by "id").
    reward: `reward(problem, text) -> Verdict`, with `score_batch`.
    workers: parallel scorers (default: CPU count).
  """
  by_id = {str(p["id"]): p for p in problems}
  start = time.time()
  verdicts = reward.score_batch([by_id[str(r["id"])] for r in records],
                                [r["text"] for r in records], workers=workers)
  logging.info("  scored %d samples in %.1fs: %d correct", len(records), time.time() - start,
               sum(v.passed for v in verdicts))
  return [{**r, "passed": bool(v.passed), "reason": v.reason, "key": v.key}
          for r, v in zip(records, verdicts)]


def sample_and_score(sampler: sampling.Sampler, problems: Sequence[Mapping[str, Any]], reward,
                     **kwargs) -> list[dict[str, Any]]:
  """`sample` then `score` (kwargs go to `sample`)."""
  return score(sample(sampler, problems, **kwargs), problems, reward)


def with_prompts(records: Sequence[Mapping[str, Any]], problems: Sequence[Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
  """Copies of `records` with their problem's full prompt text (few-shot prefix included) as
  "prompt", and its reference solution (where it has one) as "solution". For greedy records,
  one per problem: the prompt is what the model saw."""
  by_id = {str(p["id"]): p for p in problems}
  out = []
  for r in records:
    p = by_id.get(str(r["id"]), {})
    extra = {"prompt": p.get("prompt", "")}
    if p.get("solution"):
      extra["solution"] = p["solution"]
    out.append({**r, **extra})
  return out


def by_problem(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
  """Groups records by problem id, each group in sample-index order."""
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for r in records:
    groups.setdefault(str(r["id"]), []).append(r)
  for g in groups.values():
    g.sort(key=lambda r: r["sample_index"])
  return groups


def summarize(model: str, split: str, task: str, greedy: Sequence[Mapping[str, Any]],
              sampled: Sequence[Mapping[str, Any]] = (), ks: Sequence[int] = ()
              ) -> dict[str, Any]:
  """The summary.json entry of one model on one split of one task.

  Args:
    model, split, task: names.
    greedy: one greedy record per problem.
    sampled: n sampled records per problem (may be empty: no pass@k / maj@k).
    ks: the k of pass@k and maj@k (those above n are left out).

  Returns:
    {"model", "split", "task", "num_problems", "accuracy", "pass_at_k", "maj_at_k"}.
  """
  entry = {"model": model, "split": split, "task": task, "num_problems": len(greedy),
           "accuracy": metrics.accuracy([r["passed"] for r in greedy]),
           "pass_at_k": {}, "maj_at_k": {}}
  groups = by_problem(sampled)
  if groups:
    n = min(len(g) for g in groups.values())
    valid_ks = [k for k in ks if k <= n]
    counts = {pid: (len(g), sum(r["passed"] for r in g)) for pid, g in groups.items()}
    entry["pass_at_k"] = {str(k): v for k, v in
                          metrics.mean_pass_at_k(counts, valid_ks).items()}
    keyed = {pid: ([r["key"] for r in g], [r["passed"] for r in g]) for pid, g in groups.items()}
    entry["maj_at_k"] = {str(k): v for k, v in metrics.mean_maj_at_k(keyed, valid_ks).items()}
  return entry
