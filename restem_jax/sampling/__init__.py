"""Generate: N samples per problem from a model, resumable on disk.

  strategies.py    greedy, temperature, top-k, top-p (static, hashable) and one step's token choice
  sampler.py       `Sampler`: each prompt prefilled once, its N samples decoded in a jitted loop
  rollout.py       the rollout engine: continuous batching, finished rows take new work at once
  stop_strings.py  stop strings matched exactly on device by a byte-level automaton
  calculator.py    the exact value after `A op B =`, written in the decode step (sampling.calculator)
  shards.py        the Generate step on disk: sample shards written atomically, resumed by index
  cli.py           `python -m restem_jax.sample`: samples from a checkpoint for a prompts file

`from restem_jax import sampling` gives the names below; the other modules are imported by path.
"""

from restem_jax.sampling.sampler import Sample, Sampler, problem_hash
from restem_jax.sampling.strategies import (FINISH_REASONS, Greedy, Strategy, Temperature, TopK,
                                            TopP, choose_token, make_strategy, top_k)

__all__ = ["Sample", "Sampler", "problem_hash", "FINISH_REASONS", "Greedy", "Strategy",
           "Temperature", "TopK", "TopP", "choose_token", "make_strategy", "top_k"]
