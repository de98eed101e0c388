"""When to stop iterating: the paper's guard against overfitting (APPS, Figure 6).

On APPS the paper saw test accuracy fall after the first iteration and watched a validation set
for it. With `restem.stop_when_valid_drops`, the loop stops at the first iteration whose greedy
validation accuracy is below the best of the iterations before it (the base is not counted: an
iteration is compared with iterations). The rule holds no files: a resumed run replays the
summary's evaluations into it (`observe` is called for every iteration again, in order).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ValidationStop:
  """`observe(it, accuracy)` after each iteration's evaluation; returns why to stop, or None."""

  enabled: bool
  best: float | None = None

  def observe(self, it: int, accuracy: float | None) -> str | None:
    """Records iteration `it`'s validation accuracy (None: no validation split evaluated)."""
    if not self.enabled or accuracy is None:
      return None
    if self.best is not None and accuracy < self.best:
      return (f"iter{it}: validation accuracy fell ({accuracy:.3f} < {self.best:.3f}): stopping "
              "(the paper's APPS overfitting)")
    self.best = accuracy if self.best is None else max(self.best, accuracy)
    return None
