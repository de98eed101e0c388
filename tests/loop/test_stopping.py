"""The stopping rule: stop at the first iteration whose validation accuracy falls below the best."""

from restem_jax.loop.stopping import ValidationStop


def _first_stop(rule, accuracies):
  for it, accuracy in enumerate(accuracies, 1):
    if rule.observe(it, accuracy):
      return it
  return None


def test_stops_at_the_first_fall_below_the_best_so_far():
  assert _first_stop(ValidationStop(True), [0.5, 0.6, 0.55, 0.7]) == 3
  assert _first_stop(ValidationStop(True), [0.5, 0.5, 0.5]) is None  # equal is not a fall
  assert _first_stop(ValidationStop(True), [0.6, 0.7, 0.65]) == 3  # against the best, not iter 1
  reason = ValidationStop(True, best=0.4).observe(2, 0.3)
  assert reason.startswith("iter2: validation accuracy fell (0.300 < 0.400)")


def test_off_or_without_a_validation_split_never_stops():
  assert _first_stop(ValidationStop(False), [0.9, 0.1, 0.0]) is None
  rule = ValidationStop(True)
  assert _first_stop(rule, [None, 0.5, None, 0.6]) is None and rule.best == 0.6
