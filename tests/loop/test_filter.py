"""The E-step filter (`estep.filter_samples`): the paper's rule, dedup, and today's output."""

import json
import os
import random

import pytest

from restem_jax.loop import estep

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")


def _rec(pid, j, text, passed):
  return {"id": pid, "sample_index": j, "text": text, "passed": passed}


PROBLEMS = [{"id": "a", "prompt": "A?"}, {"id": "b", "prompt": "B?"}, {"id": 7, "prompt": "7?"}]


def test_equals_the_loop_filter_before_the_adaptive_e_step():
  """filter_golden.json: records and the kept list + stats that loop.Run.filter wrote at
  commit fb11021 (the filter inside the loop, before issue 18), K = 3."""
  with open(os.path.join(FIXTURES, "filter_golden.json")) as f:
    golden = json.load(f)
  got = estep.filter_samples(golden["records"], golden["problems"],
                             max_per_problem=golden["max_per_problem"])
  assert got.kept == golden["kept"]
  stats = {k: v for k, v in got.stats.items() if k not in estep.EXTENDED_STATS}
  assert json.dumps({"iteration": 1, **stats}) == json.dumps(golden["stats"])  # order too


def test_keeps_the_first_k_correct_by_sample_index_whatever_the_record_order():
  records = [_rec("a", j, f"t{j}", j % 2 == 0) for j in range(8)]
  records += [_rec("b", j, "same", False) for j in range(3)]
  records += [_rec(7, j, f"s{j}", True) for j in range(5)]
  want = estep.filter_samples(records, PROBLEMS, max_per_problem=2)
  assert [(k["id"], k["sample_index"]) for k in want.kept] == [("a", 0), ("a", 2), (7, 0),
                                                                (7, 1)]
  assert want.kept[0] == {"id": "a", "sample_index": 0, "prompt": "A?", "text": "t0"}
  s = want.stats
  assert (s["num_samples"], s["num_correct"], s["num_kept"]) == (16, 9, 4)
  assert s["train_solve_rate"] == pytest.approx(2 / 3)
  assert s["kept_per_problem_histogram"] == {"0": 1, "2": 2}
  assert s["correct_per_problem_histogram"] == {"0": 1, "4": 1, "5": 1}
  assert s["problems_with_kept"] == 2 and s["duplicates_dropped"] == 0
  assert want.kept_per_problem == {"a": 2, "b": 0, 7: 2}
  assert want.drawn_per_problem == {"a": 8, "b": 3, 7: 5}
  # Rounds arrive problem by problem in any order: a problem's samples are taken by index.
  shuffled = records[:]
  random.Random(0).shuffle(shuffled)
  by_round = sorted(records, key=lambda r: (r["sample_index"] >= 4, r["sample_index"]))
  for order in (shuffled, by_round):
    got = estep.filter_samples(order, PROBLEMS, max_per_problem=2)
    assert sorted((str(k["id"]), k["sample_index"]) for k in got.kept) == sorted(
        (str(k["id"]), k["sample_index"]) for k in want.kept)
    assert got.stats == want.stats


def test_problems_without_records_count_as_unsolved():
  got = estep.filter_samples([_rec("a", 0, "x", True)], PROBLEMS, max_per_problem=1)
  assert got.stats["kept_per_problem_histogram"] == {"0": 2, "1": 1}
  assert got.drawn_per_problem == {"a": 1, "b": 0, 7: 0}


def test_dedup_counts_whitespace_variants_once_and_keeps_the_first():
  texts = ["x = 1\n", "x  =  1", "\tx =\n1  ", "y = 2", "x = 1", "z = 3", "w = 4"]
  records = [_rec("a", j, t, True) for j, t in enumerate(texts)]
  records.append(_rec("a", 7, "never seen", False))
  plain = estep.filter_samples(records, PROBLEMS, max_per_problem=3)
  assert [k["sample_index"] for k in plain.kept] == [0, 1, 2]
  got = estep.filter_samples(records, PROBLEMS, max_per_problem=3, dedup=True)
  # 0 is kept; 1, 2 repeat it; 3 is new; 4 repeats 0; 5 is new (the third): K reached, so 6 is
  # neither kept nor counted as a duplicate.
  assert [k["sample_index"] for k in got.kept] == [0, 3, 5]
  assert got.kept[0]["text"] == "x = 1\n"  # the first, as it was written
  assert got.stats["duplicates_dropped"] == 3
  assert got.stats["num_kept"] == 3 and got.kept_per_problem["a"] == 3
  assert got.stats["num_correct"] == 7  # duplicates are still correct samples
  # Equal texts of different problems are not duplicates of each other.
  two = [_rec("a", 0, "x = 1", True), _rec("b", 0, "x = 1", True)]
  assert estep.filter_samples(two, PROBLEMS, max_per_problem=3, dedup=True).stats[
      "duplicates_dropped"] == 0


def test_normalize():
  assert estep.normalize("  a\t b\n\nc  ") == "a b c"
  assert estep.normalize("ab") != estep.normalize("a b")  # only runs of whitespace collapse


def test_bad_records_are_errors():
  with pytest.raises(ValueError, match="no known problem"):
    estep.filter_samples([_rec("zz", 0, "x", True)], PROBLEMS, max_per_problem=1)
  with pytest.raises(ValueError, match="same sample_index"):
    estep.filter_samples([_rec("a", 0, "x", True), _rec("a", 0, "y", True)], PROBLEMS,
                         max_per_problem=1)
