"""`python -m restem_jax.convert`: Hugging Face checkpoints <-> our model checkpoints.

The command lives in `restem_jax.model.convert`; this module keeps its path.
"""

from restem_jax.model import convert as _command

__doc__ = _command.__doc__  # the command's usage (`--help`)

if __name__ == "__main__":
  _command.main()
