"""The rollout engine: token-for-token the static sampler's samples, whatever the capacity.

A tiny random model whose EOS is a frequent token, so samples end at many different lengths and
rows are refilled mid-run; each distinct (capacity, strategy) compiles once.
"""

import jax
import numpy as np
import pytest

from restem_jax.data import vocab
from restem_jax.model import partitioning
from restem_jax import sampling
from restem_jax.sampling import rollout

# The static sampler's tests' model and prompts: the engine must reproduce those samples.
from tests.sampling.test_sampling import IDS, MAX_LEN, VOCAB_SIZE
from tests.sampling.test_sampling import cfg, params, prompts  # noqa: E402,F401  (pytest fixtures)

T = 12


def mesh_of(n):
  return partitioning.make_mesh((n, 1, 1), jax.devices()[:n])


@pytest.fixture(scope="module")
def eos(params, cfg, prompts):
  """The token sampled most often: as EOS, samples end after 1 to T tokens."""
  plain = sampling.Sampler(params, cfg, mesh=mesh_of(1), eos_id=None, batching="static")
  got = plain.generate(IDS, prompts, num_samples=4, strategy=sampling.Temperature(1.0),
                       max_new_tokens=T, batch_size=32)
  counts = np.bincount([t for per in got for s in per for t in s.tokens], minlength=VOCAB_SIZE)
  return int(counts.argmax())


@pytest.fixture(scope="module")
def sampler(params, cfg, eos):
  return sampling.Sampler(params, cfg, mesh=mesh_of(1), eos_id=eos, batching="static")


def assert_identical(got, want):
  for got_p, want_p in zip(got, want, strict=True):
    assert [s.tokens for s in got_p] == [s.tokens for s in want_p]
    assert [s.finish_reason for s in got_p] == [s.finish_reason for s in want_p]
    # Log-probabilities: as the static sampler's across its own batch layouts (last bits).
    np.testing.assert_allclose([s.logprob for s in got_p], [s.logprob for s in want_p],
                               rtol=0, atol=1e-5)


def spread(results):
  return {len(s.tokens) for per in results for s in per}


@pytest.mark.parametrize("strategy,num_samples,capacities", [
    (sampling.TopK(5, 1.0), 4, (3, 8)),  # capacity below N: a prompt's rows are fewer than N
    (sampling.TopP(0.9, 1.0, top_k=0), 2, (4,)),
    (sampling.Greedy(), 1, (2,)),  # one sample a prompt: prompts in the rows' own slots
])
def test_engine_equals_static_sampler(sampler, prompts, strategy, num_samples, capacities):
  want = sampler.generate(IDS, prompts, num_samples=num_samples, strategy=strategy,
                          max_new_tokens=T, seed=3, iteration=1, batch_size=32)
  if num_samples > 1:
    assert len(spread(want)) > 2  # lengths spread: rows are refilled at several points
  for capacity in capacities:
    engine = rollout.RolloutEngine(sampler, capacity=capacity, steps_per_visit=4)
    got = engine.generate(IDS, prompts, num_samples=num_samples, strategy=strategy,
                          max_new_tokens=T, seed=3, iteration=1)
    assert_identical(got, want)
    tokens = sum(len(s.tokens) for per in got for s in per)
    assert engine.stats.tokens == tokens <= engine.stats.row_steps
    assert engine.stats.visits > 1


@pytest.mark.parametrize("first,count", [(3, 2), (5, 1), (1, 4)])
def test_a_later_range_of_sample_indices_equals_those_samples_from_index_zero(
    sampler, prompts, first, count):
  """`first_sample` (the adaptive E-step's later rounds): samples [first, first + count) are
  the same samples a call from index 0 draws there, from the static sampler and the engine."""
  strategy = sampling.TopK(5, 1.0)
  want = [per[first:] for per in sampler.generate(
      IDS, prompts, num_samples=first + count, strategy=strategy, max_new_tokens=T, seed=3,
      iteration=1, batch_size=32)]
  got = sampler.generate(IDS, prompts, num_samples=count, first_sample=first, strategy=strategy,
                         max_new_tokens=T, seed=3, iteration=1, batch_size=32)
  assert_identical(got, want)
  engine = rollout.RolloutEngine(sampler, capacity=8, steps_per_visit=4)
  got = engine.generate(IDS, prompts, num_samples=count, first_sample=first, strategy=strategy,
                        max_new_tokens=T, seed=3, iteration=1)
  assert_identical(got, want)
  with pytest.raises(ValueError, match="first_sample=-1"):
    engine.generate(IDS, prompts, num_samples=1, first_sample=-1, strategy=strategy,
                    max_new_tokens=T)


def test_refill_after_every_finish_and_long_visits_agree(sampler, prompts):
  args = dict(num_samples=4, strategy=sampling.TopK(5, 1.0), max_new_tokens=T, seed=7)
  want = sampler.generate(IDS, prompts, batch_size=8, **args)
  for steps, refill, slots in ((1, 1, None), (T, 4, 7)):
    engine = rollout.RolloutEngine(sampler, capacity=8, steps_per_visit=steps, refill=refill,
                                   prompt_slots=slots)
    assert_identical(engine.generate(IDS, prompts, **args), want)


def test_shared_prefix_equals_static(sampler, prompts):
  prefix = list(range(40, 52))
  with_prefix = [prefix + p for p in prompts]
  with_prefix[2] = with_prefix[2][5:]  # one prompt without the prefix: its own group
  args = dict(num_samples=3, strategy=sampling.Temperature(1.0), max_new_tokens=T,
              shared_prefix=prefix)
  want = sampler.generate(IDS, with_prefix, batch_size=12, **args)
  got = rollout.RolloutEngine(sampler, capacity=8).generate(IDS, with_prefix, **args)
  assert_identical(got, want)


def test_eight_devices_equal_one(params, cfg, eos, sampler, prompts):
  args = dict(num_samples=4, strategy=sampling.TopK(5, 1.0), max_new_tokens=T, seed=5)
  want = sampler.generate(IDS, prompts, batch_size=32, **args)
  sharded = sampling.Sampler(params, cfg, mesh=mesh_of(8), eos_id=eos)
  engine = rollout.RolloutEngine(sharded, capacity=12)  # rounded up to 16 rows, 2 a device
  got = engine.generate(IDS, prompts, **args)
  assert engine.stats.row_steps % 16 == 0
  assert_identical(got, want)


def test_stop_strings_and_text_equal_static(params, cfg, tmp_path):
  texts = [f"Question {i}: what is {i} plus {3 * i}?\nAnswer: {4 * i}. Well done, fox!\n\n"
           for i in range(300)]
  spm = vocab.train_sentencepiece(texts, tmp_path / "v.model", VOCAB_SIZE)
  vocab_ = vocab.load_vocab(spm)
  sampler = sampling.Sampler(params, cfg, mesh=mesh_of(1), vocab=vocab_, eos_id=1,
                             batching="static")
  prompts = [vocab_.encode(f"Question {i}: what is") for i in range(6)]
  ids = [f"q{i}" for i in range(6)]
  args = dict(num_samples=3, strategy=sampling.Temperature(1.0), max_new_tokens=T,
              stop_strings=("e", "o "))
  want = sampler.generate(ids, prompts, batch_size=18, **args)
  assert {"stop", "length"} <= {s.finish_reason for per in want for s in per}
  got = rollout.RolloutEngine(sampler, capacity=4).generate(ids, prompts, **args)
  assert_identical(got, want)
  assert [[s.text for s in per] for per in got] == [[s.text for s in per] for per in want]


def test_errors_match_the_sampler(sampler, prompts):
  engine = rollout.RolloutEngine(sampler)
  with pytest.raises(ValueError, match="unique"):
    engine.generate(["a", "a"], prompts[:2], num_samples=1, strategy=sampling.Greedy(),
                    max_new_tokens=T)
  with pytest.raises(ValueError, match="'long'"):
    engine.generate(["long"], [[5] * MAX_LEN], num_samples=1, strategy=sampling.Greedy(),
                    max_new_tokens=T)
  with pytest.raises(ValueError, match="capacity"):
    rollout.RolloutEngine(sampler, capacity=0)
