"""Reward functions by name: the binary reward r(x, y) of ReST^EM, computed on host CPUs.

    reward = rewards.get("math")
    verdict = reward(problem, completion)          # a Verdict; verdict.reward is 0.0 or 1.0
    verdicts = reward.score_batch(problems, completions, workers=8)

  name            problem fields it needs            what earns 1
  math            answer (gold final answer);       the last \\boxed{} / "The final answer is"
                  question or problem (its text     / "The answer is" / "Answer:" / "#### N"
                  decides a form it asks for)       equals it (MATH, Minerva, GSM8K)
  gsm8k           answer; question                  as math
  code_apps       input_output (or tests): JSON     every APPS test passes in the sandbox
                  {"inputs", "outputs", "fn_name"?}
  code_humaneval  prompt, test, entry_point         check(entry_point) passes in the sandbox

"apps" and "humaneval" are aliases of the code rewards (the data set kinds' names). Options are
passed on: math takes `extractors` and `timeout_s`; the code rewards take the fields of
`code.JudgeConfig` (e.g. `backend="unshare"`, `allow_unsandboxed=True`, `test_timeout_s=4`).
Instances are cached per (name, options): a code reward keeps sandboxes started ahead of use.

  base.py      `Verdict`, what every reward returns
  math.py      the math reward (answer extraction; `_math_*`: answer forms, comparison, worker)
  code.py      the code judge (`sandbox.py`: containers; `_harness.py`, `_sandbox_init.py`,
               `_values.py`: what runs inside them)
  score.py     `python -m restem_jax.score`: scores a samples file against a problem set
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

from restem_jax.rewards.base import Verdict
from restem_jax.rewards.code import CodeReward, JudgeConfig
from restem_jax.rewards.math import MathReward

__all__ = ["ALIASES", "NAMES", "CodeReward", "JudgeConfig", "MathReward", "Reward", "Verdict",
           "get"]


class Reward(Protocol):
  """What every registered reward provides."""

  def __call__(self, problem: dict, completion: str) -> Verdict:
    ...

  def score_batch(self, problems, completions, workers: int | None = None) -> list[Verdict]:
    ...


# "#### N" and "**Answer:** N" endings count for every math data set (the generic JSONL format
# holds GSM8K-style and chat-style solutions too); markdown "#### Step 1" headings do not.
_MATH_EXTRACTORS = ("boxed", "final_answer", "answer_is", "answer_label", "gsm8k")


def _math(**options: Any) -> MathReward:
  return MathReward(**{"extractors": _MATH_EXTRACTORS, **options})


def _gsm8k(**options: Any) -> MathReward:
  # GSM8K prompts end solutions with "#### N"; a MATH-trained model (the paper's transfer
  # evaluation) writes Minerva's "Final Answer" sentence instead: both count.
  return MathReward(**{"extractors": _MATH_EXTRACTORS, **options})


def _code(style: str, **options: Any) -> CodeReward:
  return CodeReward(style, JudgeConfig(**options))


_FACTORIES = {
    "math": _math,
    "gsm8k": _gsm8k,
    "code_apps": functools.partial(_code, "apps"),
    "code_humaneval": functools.partial(_code, "humaneval"),
}
ALIASES = {"apps": "code_apps", "humaneval": "code_humaneval"}
NAMES = tuple(_FACTORIES) + tuple(ALIASES)


def get(name: str, **options: Any) -> Reward:
  """The reward registered under name (see the module docstring), built with options.

  Raises:
    KeyError: unknown name.
    sandbox.SandboxUnavailableError: a code reward on a machine without OS isolation, unless
      allow_unsandboxed=True.
  """
  canonical = ALIASES.get(name, name)
  if canonical not in _FACTORIES:
    raise KeyError(f"unknown reward {name!r}; known: {', '.join(NAMES)}")
  hashable = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
  return _cached(canonical, tuple(sorted(hashable.items())))


@functools.lru_cache(maxsize=None)
def _cached(name: str, options: tuple) -> Reward:
  return _FACTORIES[name](**dict(options))
