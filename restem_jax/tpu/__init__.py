"""Will it fit? The TPU side of a run, checked on a CPU machine.

  specs.py     TPU chips' peak numbers and topology names (libtpu's `v5e:4x4`, gcloud's `v4-32`)
  programs.py  a run's programs (train and eval steps, the rollout engine's decode and prefill)
               compiled on abstract arguments, with each one's memory and roofline time
  aot.py       the check for a topology (`python -m restem_jax.aot`): the verdict and its table

Import the module you need; this file imports nothing.
"""
