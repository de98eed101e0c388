"""The adaptive E-step: the allocator's invariants, and the rounds on disk with a tiny model
(the first round is the uniform budget's first samples; batch size and device count change
nothing; a kill in the middle of a round resumes to the same files)."""

import random
import zlib

import jax
import pytest

from restem_jax.data import vocab
from restem_jax import file_io, sampling
from restem_jax.loop import adaptive, estep
from restem_jax.model import partitioning
from restem_jax.sampling import shards as sample_shards

# The sampler tests' tiny model, vocabulary and prompts (module fixtures).
from tests.sampling.test_sampling import IDS, T
from tests.sampling.test_sampling import cfg, params, prompts, spm  # noqa: F401  (pytest fixtures)


# --- the allocator: a pure function, checked on many random runs ---------------------------------


def _simulate(rng, num_problems, n, k, cap, per_round, solve):
  """Runs the allocator to the end, drawing correct samples with probability solve[i]; checks
  every round's invariants; returns (drawn, counted, rounds)."""
  drawn, counted = [0] * num_problems, [0] * num_problems
  budget = n * num_problems
  rounds = []
  while True:
    left = budget - sum(drawn)
    got = estep.allocate(drawn, counted, max_per_problem=k, max_samples_per_problem=cap,
                         budget_left=left, round_samples=per_round)
    assert len(got) == num_problems and all(c >= 0 for c in got)
    assert sum(got) <= left  # never past the budget
    if not any(got):
      break
    open_ = [i for i in range(num_problems) if counted[i] < k and drawn[i] < cap]
    level = min(counted[i] for i in open_)
    for i, c in enumerate(got):
      if c:
        assert i in open_ and counted[i] == level  # only open problems, the fewest first
        assert c <= per_round and drawn[i] + c <= cap  # never past the cap
    # A problem at the level that got nothing only lost to the budget, after those that had
    # drawn fewer (or as many, earlier in order).
    skipped = [i for i in open_ if counted[i] == level and not got[i]]
    if skipped:
      assert sum(got) == left
      given = [i for i in range(num_problems) if got[i]]
      assert max((drawn[i], i) for i in given) < min((drawn[i], i) for i in skipped)
    if not rounds:
      assert got == [min(per_round, cap, left)] * num_problems or sum(got) == left
    for i, c in enumerate(got):
      correct = sum(rng.random() < solve[i] for _ in range(c))
      drawn[i] += c
      counted[i] = min(k, counted[i] + correct)
    rounds.append(got)
  # It stops only when the budget is spent or every problem has K or its cap.
  assert sum(drawn) == budget or all(counted[i] >= k or drawn[i] >= cap
                                     for i in range(num_problems))
  return drawn, counted, rounds


def test_allocator_never_exceeds_budget_or_cap_on_random_runs():
  rng = random.Random(18)
  for _ in range(400):
    num_problems = rng.randint(1, 40)
    n = rng.randint(1, 12)
    per_round = rng.randint(1, n)
    cap = rng.randint(1, 5 * n)
    k = rng.randint(1, 6)
    solve = [rng.choice([0.0, 0.0, 0.05, 0.3, 0.9, 1.0]) for _ in range(num_problems)]
    drawn, _, rounds = _simulate(rng, num_problems, n, k, cap, per_round, solve)
    assert all(d <= cap for d in drawn) and sum(drawn) <= n * num_problems
    assert len(rounds) <= n * num_problems


def test_allocator_first_round_is_every_problem_and_unsolved_come_first():
  first = estep.allocate([0] * 5, [0] * 5, max_per_problem=2, max_samples_per_problem=8,
                         budget_left=20, round_samples=2)
  assert first == [2] * 5
  # After it: problems 1 and 3 have nothing kept: they alone get the next round.
  nxt = estep.allocate([2] * 5, [1, 0, 2, 0, 1], max_per_problem=2, max_samples_per_problem=8,
                       budget_left=10, round_samples=2)
  assert nxt == [0, 2, 0, 2, 0]
  # The budget runs short: the one that drew fewer first, then by position.
  short = estep.allocate([6, 4, 2, 4], [0, 0, 0, 0], max_per_problem=1,
                         max_samples_per_problem=8, budget_left=3, round_samples=2)
  assert short == [0, 1, 2, 0]
  # At the cap, a problem is closed even with nothing kept; then the next level is served.
  capped = estep.allocate([8, 3, 3], [0, 1, 2], max_per_problem=3, max_samples_per_problem=8,
                          budget_left=10, round_samples=4)
  assert capped == [0, 4, 0]
  assert not any(estep.allocate([4, 4], [2, 2], max_per_problem=2, max_samples_per_problem=8,
                                budget_left=10, round_samples=2))


def test_plan_from_config_defaults_and_errors():
  from restem_jax import config_lib
  c = config_lib.base_config().restem
  plan = estep.Plan.from_config(c)
  assert (plan.budget, plan.num_samples, plan.max_samples_per_problem, plan.round_samples) == (
      "uniform", 32, 128, 16)
  assert plan.total(10) == 320
  for key, value, message in [("budget", "greedy", "restem.budget"),
                              ("round_samples", 64, "at most restem.num_samples"),
                              ("max_per_problem", 0, "restem.max_per_problem")]:
    bad = c.to_dict()
    bad[key] = value
    with pytest.raises(ValueError, match=message):
      estep.Plan.from_config(bad)


# --- the rounds on disk -------------------------------------------------------------------------

N, K, CAP, ROUND = 4, 2, 6, 2
# Problem i passes a sample when crc32(text) % HARD[i] == 0: always, often, rarely, never.
HARD = dict(zip(IDS, [1, 2, 3, 5, 7, 50, 10**9, 10**9]))
PROBLEMS = [{"id": pid, "prompt": ""} for pid in IDS]
KWARGS = dict(strategy=sampling.TopK(5, 1.0), max_new_tokens=T, stop_strings=(),
              problems_per_shard=2, progress=False)


def _passed(rec):
  return zlib.crc32(rec["text"].encode()) % HARD[rec["id"]] == 0


def _score(sample_dir, score_dir):
  """A stand-in reward, scored shard by shard like the loop's (existing files kept)."""
  out = []
  for path in sorted(sample_dir.glob("samples-*.jsonl")):
    target = score_dir / path.name
    if not target.exists():
      file_io.write_jsonl(target, [{**{k: v for k, v in r.items() if k != "tokens"},
                                    "passed": bool(_passed(r))}
                                   for r in file_io.read_jsonl(path)])
    out.append(target)
  return out


def _sampler(params, cfg, spm, devices):
  mesh = partitioning.make_mesh((devices, 1, 1), jax.devices()[:devices])
  return sampling.Sampler(params, cfg, mesh=mesh, vocab=vocab.load_vocab(spm), eos_id=None)


def _run(workdir, sampler, prompts, batch_size=4, plan=None):
  plan = plan or estep.Plan(budget="adaptive", num_samples=N, max_per_problem=K,
                            max_samples_per_problem=CAP, round_samples=ROUND)
  draw = lambda out, ranges: sample_shards.write_ranges(out, sampler, ranges,
                                                        batch_size=batch_size, **KWARGS)
  return adaptive.run_rounds(workdir, PROBLEMS, dict(zip(IDS, prompts)), plan, draw=draw,
                             score=_score)


def _files(root):
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


def _scored(result):
  """(id, sample_index, text, passed) of every sample, by problem then index."""
  recs = [r for p in result.score_paths for r in file_io.read_jsonl(p)]
  return sorted((r["id"], r["sample_index"], r["text"], r["passed"]) for r in recs)


@pytest.fixture(scope="module")
def sampler1(params, cfg, spm):
  """One device; batch size 4 (the engine's rows) keeps the compiled shapes few."""
  return _sampler(params, cfg, spm, 1)


@pytest.fixture(scope="module")
def reference(sampler1, prompts, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("adaptive") / "iter1"
  return workdir, _run(workdir, sampler1, prompts)


def test_rounds_spend_the_budget_on_the_unsolved_within_the_cap(reference):
  workdir, result = reference
  drawn = result.samples_per_problem
  assert sum(drawn.values()) <= N * len(IDS) and max(drawn.values()) <= CAP
  assert sum(r["samples"] for r in result.rounds) == sum(drawn.values())
  assert result.rounds[0] == {"round": 1, "problems": len(IDS), "samples": ROUND * len(IDS)}
  assert len(result.rounds) >= 3  # the never-solved problems get rounds beyond the first
  # The never-solved problems drew more than the uniform N, the always-solved only one round.
  assert drawn[IDS[6]] > N and drawn[IDS[7]] > N and drawn[IDS[0]] == ROUND
  scored = _scored(result)
  assert len(scored) == sum(drawn.values())
  # A problem's samples are 0 .. drawn - 1 across rounds: ids and indices as the uniform budget.
  for pid in IDS:
    assert [s[1] for s in scored if s[0] == pid] == list(range(drawn[pid]))
  for r in result.rounds:
    samples_dir, scores_dir = adaptive.round_dirs(workdir, r["round"])
    assert sample_shards.is_complete(samples_dir) and scores_dir.is_dir()


def test_first_round_equals_the_uniform_budgets_first_samples(sampler1, prompts, reference,
                                                              tmp_path):
  workdir, _ = reference
  uniform = tmp_path / "uniform"
  sample_shards.write_samples(uniform, sampler1, [{"id": i, "inputs": p} for i, p in
                                                  zip(IDS, prompts)], num_samples=N,
                              batch_size=4, **KWARGS)
  want = [r for r in sample_shards.read_samples(uniform) if r["sample_index"] < ROUND]
  first = sample_shards.read_samples(adaptive.round_dirs(workdir, 1)[0])
  assert first == want  # ids, indices, tokens, text, logprob


def test_batch_size_and_device_count_change_nothing(params, cfg, spm, prompts, reference,
                                                    tmp_path):
  _, want = reference
  got = _run(tmp_path / "iter1", _sampler(params, cfg, spm, 8), prompts, batch_size=8)
  assert got.rounds == want.rounds and got.samples_per_problem == want.samples_per_problem
  assert _scored(got) == _scored(want)


def test_kill_in_the_middle_of_a_round_resumes_to_the_same_files(sampler1, prompts, reference,
                                                                 tmp_path, monkeypatch):
  ref_dir, want = reference
  sampler = sampler1
  real = sampler.generate
  workdir = tmp_path / "iter1"
  round_two = adaptive.round_dirs(workdir, 2)[0]

  def dies_in_round_two(*args, **kwargs):  # once round 2 has written its first shard
    if any(round_two.glob("samples-*.jsonl")):
      raise KeyboardInterrupt("kill -9")
    return real(*args, **kwargs)

  monkeypatch.setattr(sampler, "generate", dies_in_round_two)
  with pytest.raises(KeyboardInterrupt):
    _run(workdir, sampler, prompts)
  assert len(list(round_two.glob("samples-*.jsonl"))) == 1
  assert not sample_shards.is_complete(round_two)
  monkeypatch.setattr(sampler, "generate", real)
  got = _run(workdir, sampler, prompts)
  assert got.rounds == want.rounds
  assert _files(workdir) == _files(ref_dir)

  # Killed after a later round's first shards were written and scored: the partial round's
  # last shards, markers and everything after are gone (as after kill -9); the rerun redraws
  # exactly those.
  last = len(want.rounds)
  samples_dir, scores_dir = adaptive.round_dirs(workdir, last - 1)
  shards = sorted(samples_dir.glob("samples-*.jsonl"))
  for path in shards[1:] + list(samples_dir.glob("COMPLETE-*")):
    path.unlink()
  for path in sorted(scores_dir.glob("samples-*.jsonl"))[1:]:
    path.unlink()
  for path in adaptive.round_dirs(workdir, last):
    for f in path.iterdir():
      f.unlink()
    path.rmdir()
  got = _run(workdir, sampler, prompts)
  assert _files(workdir) == _files(ref_dir)


def test_changed_files_are_refused(sampler1, prompts, reference, tmp_path):
  import shutil
  ref_dir, _ = reference
  workdir = tmp_path / "iter1"
  shutil.copytree(ref_dir, workdir)
  score = adaptive.round_dirs(workdir, 2)[1] / "samples-00000.jsonl"
  recs = file_io.read_jsonl(score)
  file_io.write_jsonl(score, recs[1:])  # a scored sample lost
  with pytest.raises(ValueError, match="use a new directory"):
    _run(workdir, sampler1, prompts)


def test_dedup_makes_a_problem_with_only_repeats_draw_on(sampler1, prompts, tmp_path):
  """With dedup, K counts distinct texts: problems whose correct samples repeat keep drawing."""
  plan = estep.Plan(budget="adaptive", num_samples=N, max_per_problem=K,
                    max_samples_per_problem=CAP, round_samples=ROUND, dedup=True)
  got = _run(tmp_path / "iter1", sampler1, prompts, plan=plan)
  records = [dict(zip(("id", "sample_index", "text", "passed"), s)) for s in _scored(got)]
  counted = estep.filter_samples(records, PROBLEMS, max_per_problem=K,
                                 dedup=True).kept_per_problem
  for pid in IDS:  # each problem stopped for a reason: K distinct, the cap, or the budget
    assert (counted[pid] >= K or got.samples_per_problem[pid] >= CAP
            or sum(got.samples_per_problem.values()) == N * len(IDS))
