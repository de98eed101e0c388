"""`python -m restem_jax.score`: scores samples against a problem set.

The command lives in `restem_jax.rewards.score`; this module keeps its path.
"""

from restem_jax.rewards import score as _command

__doc__ = _command.__doc__  # the command's usage (`--help`)

if __name__ == "__main__":
  _command.run()
