"""`python -m restem_jax.sample`: samples continuations of prompts from a model checkpoint.

The command lives in `restem_jax.sampling.cli`; this module keeps its path.
"""

from restem_jax.sampling import cli as _command

__doc__ = _command.__doc__  # the command's usage (`--help`)

if __name__ == "__main__":
  _command.run()
