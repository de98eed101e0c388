"""Disjoint splits from one random stream, shared by the embedded generators (arith, prog)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

ORDER = ("test", "valid", "train")  # fill order: a later split growing never changes test
_MAX_MISSES = 10_000  # duplicates in a row that mean the problem space is nearly exhausted


def draw(sizes: Mapping[str, int], rng: random.Random, make: Callable[[random.Random], dict],
         key: str, id_field: str, name: str, knobs: Any) -> dict[str, list[dict[str, Any]]]:
  """Fills each split with `make(rng)` problems whose `key` field was never drawn before.

  Args:
    sizes: problems per split; known splits in `ORDER` first, any others after, sorted.
    rng: the one random stream (seeded by the caller).
    make: draws one problem.
    key: the field that identifies a problem (splits are disjoint in it).
    id_field: where the id "NAME/SPLIT/I" goes.
    name: the generator's name, for ids and errors.
    knobs: the generator's config, for the error message.

  Returns:
    split -> problems, each with its id.

  Raises:
    ValueError: if the knobs admit fewer distinct problems than requested.
  """
  order = [s for s in ORDER if s in sizes] + sorted(set(sizes) - set(ORDER))
  seen: set[str] = set()
  out: dict[str, list[dict[str, Any]]] = {}
  for split in order:
    problems, misses = [], 0
    while len(problems) < sizes[split]:
      problem = make(rng)
      if problem[key] in seen:
        misses += 1
        if misses > _MAX_MISSES:
          raise ValueError(f"{name} knobs {knobs} admit too few distinct problems for "
                           f"{dict(sizes)}")
        continue
      misses = 0
      seen.add(problem[key])
      problems.append({id_field: f"{name}/{split}/{len(problems)}", **problem})
    out[split] = problems
  return out
