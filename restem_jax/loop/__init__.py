"""The ReST^EM loop: generate -> score -> filter -> improve -> evaluate, as stages on disk.

  inputs.py      `prepare`: the vocabulary, tasks, problems and derived sizes, as one value
  stages.py      `run(config, workdir)` and `Run`: the stages, resumable, one marker each
  estep.py       the E-step's decisions as pure functions of records: the filter (at most K
                 correct samples per problem), the adaptive allocation, `Plan`
  adaptive.py    the adaptive E-step's rounds on disk
  stopping.py    when to stop iterating: the validation set's accuracy falls (APPS overfitting)
  evaluation.py  sample-and-score on problem sets (the Generate step's core and evaluation's)
  metrics.py     pass@k (unbiased), maj@k, accuracy
  report.py      summary.json, report.md and the plots
  run_dir.py     the run directory's bookkeeping: config lock, finished marker, ownership
  preflight.py   the inputs' checks before any stage

`from restem_jax import loop` gives `run`, `Run`, `prepare`, `RunData` and `EvalTask`; the other
modules are imported by path.
"""

import importlib

# `Run` and `run` import every stage's modules (JAX, seqio, TensorFlow); they load on first use,
# so that `from restem_jax.loop import metrics` (the scoring CLI, the notebooks) stays light.
_LAZY = {"EvalTask": "inputs", "RunData": "inputs", "prepare": "inputs", "Run": "stages",
         "check_and_save_config": "stages", "complete_saved_config": "stages", "run": "stages"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
  try:  # a submodule not imported yet (e.g. `loop.report` after `from restem_jax import loop`)
    return importlib.import_module(f"{__name__}.{name}")
  except ModuleNotFoundError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
