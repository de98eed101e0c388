"""`python -m restem_jax.bench NAME [args]`: runs one benchmark.

Each benchmark runs its peer in the same process, alternating with ours on the same shapes and
thread count, prints a readable table, and prints one JSON object with the figures as its last
line (results go into BENCHMARKS.md).
"""

import importlib
import sys

BENCHMARKS = {
    "sampling": "restem_jax.bench.sampling",
    "training": "restem_jax.bench.training",
    "rewards": "restem_jax.bench.rewards",
    "rollout": "restem_jax.bench.rollout",
    "calculator": "restem_jax.bench.calculator",
}


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[1] not in BENCHMARKS:
    print(f"usage: python -m restem_jax.bench {{{','.join(BENCHMARKS)}}} [args]", file=sys.stderr)
    return 2
  module = importlib.import_module(BENCHMARKS[argv[1]])
  return module.main(argv[2:]) or 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
