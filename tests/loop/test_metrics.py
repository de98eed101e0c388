"""pass@k, maj@k and accuracy against values worked out by hand and the paper's formula."""

import math

import pytest

from restem_jax.loop import metrics


@pytest.mark.parametrize(
  "n, c, k, expected",
  [
    (5, 2, 1, 2 / 5),  # pass@1 is the fraction correct
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (4, 0, 2, 0.0),  # nothing correct
    (4, 3, 2, 1.0),  # n - c < k: every k-subset holds a correct sample
    (4, 4, 4, 1.0),
    (1, 1, 1, 1.0),
  ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
  assert metrics.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_formula():
  # Chen et al. (2021) eq. (1), with exact integer binomials as the reference.
  for n in range(1, 30):
    for c in range(n + 1):
      for k in range(1, n + 1):
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert metrics.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-9), (n, c, k)


def test_pass_at_k_is_not_max_over_first_k():
  # With 1 correct of 4 the biased "any of the first 2" would be 0 or 1 depending on order.
  assert metrics.pass_at_k(4, 1, 2) == pytest.approx(0.5)


def test_pass_at_k_large_n_is_stable():
  assert metrics.pass_at_k(200, 1, 100) == pytest.approx(0.5)
  assert 0.0 < metrics.pass_at_k(1000, 1, 1) < 0.0011


@pytest.mark.parametrize("n, c, k", [(3, 1, 4), (0, 0, 1), (3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
  with pytest.raises(ValueError):
    metrics.pass_at_k(n, c, k)


def test_mean_pass_at_k_skips_k_not_supported_by_all_problems():
  counts = {"a": (4, 1), "b": (2, 2)}
  result = metrics.mean_pass_at_k(counts, [1, 2, 4])
  assert set(result) == {1, 2}  # problem b has only 2 samples
  assert result[1] == pytest.approx((0.25 + 1.0) / 2)
  assert result[2] == pytest.approx((0.5 + 1.0) / 2)  # 1 - C(3,2)/C(4,2) = 0.5


def test_per_problem_pass_at_k():
  table = metrics.per_problem_pass_at_k({"a": (4, 1), "b": (2, 0)}, [1, 4])
  assert table == {"a": {1: 0.25, 4: 1.0}, "b": {1: 0.0}}


def test_majority_index_ties_break_to_earliest_first_occurrence():
  assert metrics.majority_index(["b", "a", "a", "b"]) == 0  # tie 2-2: "b" appeared first
  assert metrics.majority_index(["b", "a", "a"]) == 1
  assert metrics.majority_index([None, None, "x"]) == 2
  assert metrics.majority_index([None, None]) is None
  assert metrics.majority_index([]) is None


def test_maj_at_k_uses_first_k_samples():
  keys = ["7", "5", "5", "7", "7"]
  correct = [True, False, False, True, True]
  assert metrics.maj_at_k(keys, correct, 1) is True
  assert metrics.maj_at_k(keys, correct, 3) is False  # "5" wins 2-1
  assert metrics.maj_at_k(keys, correct, 4) is True  # tie 2-2, "7" seen first
  assert metrics.maj_at_k(keys, correct, 5) is True
  # Unanswered samples do not vote, and nobody answering is wrong.
  assert metrics.maj_at_k([None, "3", None], [False, True, False], 3) is True
  assert metrics.maj_at_k([None, None], [False, False], 2) is False


def test_maj_at_k_rejects_bad_input():
  with pytest.raises(ValueError):
    metrics.maj_at_k(["a"], [True, False], 1)
  with pytest.raises(ValueError):
    metrics.maj_at_k(["a"], [True], 2)


def test_mean_maj_at_k():
  per_problem = {
    "p1": (["1", "2", "2"], [True, False, False]),
    "p2": (["4", "4", "3"], [True, True, False]),
  }
  assert metrics.mean_maj_at_k(per_problem, [1, 3]) == {1: 1.0, 3: 0.5}


def test_accuracy_and_breakdown():
  assert metrics.accuracy([True, False, True, True]) == 0.75
  assert metrics.accuracy([]) == 0.0
  assert metrics.accuracy_by([True, False, True], ["L1", "L2", "L1"]) == {"L1": 1.0, "L2": 0.0}
  with pytest.raises(ValueError):
    metrics.accuracy_by([True], ["a", "b"])
