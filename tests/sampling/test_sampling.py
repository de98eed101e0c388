"""Sampler tests: determinism across layouts and meshes, strategies, stops, resume, the CLI.

One tiny random model serves every test; each distinct (batch shape, strategy) compiles once.
"""

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax.data import vocab
from restem_jax import model, sampling
from restem_jax.model import checkpoints, partitioning
from restem_jax.sampling import shards as sample_shards, stop_strings

VOCAB_SIZE = 360
MAX_LEN = 64
T = 6  # new tokens per sample
# Lengths span two buckets (16, 32), so batches mix padding amounts.
PROMPT_LENS = (1, 3, 6, 9, 13, 16, 19, 27)


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
  texts = [f"Question {i}: what is {i} plus {3 * i}?\nAnswer: {4 * i}. Well done, fox!\n\n"
           for i in range(400)]
  return vocab.train_sentencepiece(texts, tmp_path_factory.mktemp("vocab") / "v.model",
                                   VOCAB_SIZE)


@pytest.fixture(scope="module")
def cfg():
  # Larger embeddings than Llama's 0.02 give a peaked, non-uniform next-token distribution.
  return model.preset("tiny", num_layers=2, d_model=64, num_heads=4, num_kv_heads=1,
                      head_dim=16, d_ff=128, vocab_size=VOCAB_SIZE, max_len=MAX_LEN,
                      parallel_block=False, norm="rmsnorm", scale_tied_logits=False,
                      embed_init_std=0.3)


@pytest.fixture(scope="module")
def params(cfg):
  return nn.unbox(model.Decoder(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
                  ["params"])


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.default_rng(1)
  return [rng.integers(3, VOCAB_SIZE, size=n).tolist() for n in PROMPT_LENS]


IDS = [f"problem-{i}" for i in range(len(PROMPT_LENS))]


def mesh_of(shape):
  n = int(np.prod(shape))
  return partitioning.make_mesh(shape, jax.devices()[:n])


@pytest.fixture(scope="module")
def sampler1(params, cfg):
  return sampling.Sampler(params, cfg, mesh=mesh_of((1, 1, 1)), eos_id=None)


@pytest.fixture(scope="module")
def reference(sampler1, prompts):
  """4 top-k samples per prompt, all 32 rows in one batch on one device."""
  return sampler1.generate(IDS, prompts, num_samples=4, strategy=sampling.TopK(5, 1.0),
                           max_new_tokens=T, batch_size=32)


def assert_same_samples(got, want, logprob_tol=1e-5):
  for got_p, want_p in zip(got, want, strict=True):
    assert [s.tokens for s in got_p] == [s.tokens for s in want_p]
    assert [s.finish_reason for s in got_p] == [s.finish_reason for s in want_p]
    np.testing.assert_allclose([s.logprob for s in got_p], [s.logprob for s in want_p],
                               rtol=0, atol=logprob_tol)


@functools.partial(jax.jit, static_argnames="cfg")
def _forward(params, tokens_BL, cfg):
  return model.Decoder(cfg).apply({"params": params}, tokens_BL)[0]


def full_forward_logits(cfg, params, prompt, tokens):
  """Logits that predicted each of `tokens`, from one forward pass over prompt + tokens."""
  seq = np.zeros((1, MAX_LEN), np.int32)  # right padding cannot change a causal model's logits
  seq[0, :len(prompt) + len(tokens)] = prompt + tokens
  logits = _forward(params, seq, cfg)
  return np.asarray(logits[0, len(prompt) - 1:len(prompt) - 1 + len(tokens)])


# --- strategies -------------------------------------------------------------------------------


def test_strategies_stay_in_their_support():
  logits = jax.random.normal(jax.random.key(0), (64, 50)) * 3
  keys = jax.random.split(jax.random.key(1), 64)
  order = np.argsort(-np.asarray(logits), axis=-1)
  np.testing.assert_array_equal(sampling.Greedy()(logits, keys), order[:, 0])
  for _ in range(5):
    keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 7)
    topk = np.asarray(sampling.TopK(4, temperature=10.0)(logits, keys))
    assert all(t in order[b, :4] for b, t in enumerate(topk))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    nucleus = (np.cumsum(sorted_probs, axis=-1) - sorted_probs) < 0.5
    topp = np.asarray(sampling.TopP(0.5, temperature=1.0)(logits, keys))
    assert all(t in order[b][nucleus[b]] for b, t in enumerate(topp))
  # At a high temperature, plain sampling does leave the top 4 (so the check above has teeth).
  free = np.asarray(sampling.Temperature(10.0)(logits, keys))
  assert any(t not in order[b, :4] for b, t in enumerate(free))


def test_top_k_equals_lax_top_k():
  rng = np.random.default_rng(0)
  rows = {"normal": rng.normal(size=(16, 1024)) * 3,
          "ties": rng.integers(0, 4, size=(16, 1024)),  # many equal values around the k-th
          "some -inf": np.where(rng.random((16, 1024)) < 0.9, -np.inf, rng.normal(size=(16, 1024))),
          "narrow": 1e-4 * rng.normal(size=(16, 1024)) + 7.0,
          "few chunks": rng.normal(size=(16, 360)),  # 45 chunks of 8: k = 40 falls back
          "odd width": rng.normal(size=(16, 1021))}
  for name, x in rows.items():
    x = jnp.asarray(x, jnp.float32)
    for k in (1, 5, 40):
      got, want = jax.jit(sampling.top_k, static_argnums=1)(x, k), jax.lax.top_k(x, k)
      np.testing.assert_array_equal(got[0], want[0], err_msg=f"{name}, k={k}")
      np.testing.assert_array_equal(got[1], want[1], err_msg=f"{name}, k={k}")


def test_make_strategy():
  assert sampling.make_strategy(0.0, top_k=40) == sampling.Greedy()
  assert sampling.make_strategy(0.7, top_k=40) == sampling.TopK(40, 0.7)
  assert sampling.make_strategy(1.0, top_p=0.9) == sampling.TopP(0.9, 1.0)
  assert sampling.make_strategy(0.5) == sampling.Temperature(0.5)
  with pytest.raises(ValueError):
    sampling.make_strategy(-1.0)


# --- stop strings -----------------------------------------------------------------------------


def test_stop_table_matches_text_search():
  pieces = [b"", b"a", b"b", b"ab", b"\n", b"x\n", b"\n\nQ", b"Q", b":", "é".encode(),
            b"\xc3", b"\xa9", b" ", b"ba"]
  stops = ["\n\nQ:", "aba", "é"]
  table = stop_strings.StopTable.build(stops, pieces)
  rng = np.random.default_rng(0)
  for _ in range(300):
    seq = rng.integers(0, len(pieces), size=12)
    state = np.zeros(len(stops), np.int64)
    found = None
    for t, v in enumerate(seq):
      state = table.next_state_SQV[np.arange(len(stops)), state, v]
      if np.any(state == table.lengths_S):
        found = t
        break
    text = b"".join(pieces[v] for v in seq)
    want = next((t for t in range(len(seq))
                 if any(s.encode() in b"".join(pieces[v] for v in seq[:t + 1]) for s in stops)),
                None)
    assert found == want, (seq, text)


# --- determinism ------------------------------------------------------------------------------


def test_batch_size_does_not_change_samples(sampler1, prompts, reference):
  # 8 rows: 2 prompts x 4 samples a batch; 2 rows: a problem's 4 samples split over 2 batches.
  for batch_size in (8, 2):
    got = sampler1.generate(IDS, prompts, num_samples=4, strategy=sampling.TopK(5, 1.0),
                            max_new_tokens=T, batch_size=batch_size)
    assert_same_samples(got, reference)
  # Sanity: samples of one problem differ from each other, and the model is not degenerate.
  assert len({tuple(s.tokens) for s in reference[3]}) > 1


def test_data_parallel_mesh_gives_identical_tokens(params, cfg, prompts, reference):
  sampler8 = sampling.Sampler(params, cfg, mesh=mesh_of((8, 1, 1)), eos_id=None)
  got = sampler8.generate(IDS, prompts, num_samples=4, strategy=sampling.TopK(5, 1.0),
                          max_new_tokens=T, batch_size=32)  # 4 rows on each device
  assert_same_samples(got, reference)


def test_model_sharded_mesh_within_tolerance(params, cfg, prompts, reference):
  sharded = sampling.Sampler(params, cfg, mesh=mesh_of((2, 1, 4)), eos_id=None)
  assert sharded.params["embedding"].sharding.spec[0] == "model"  # really split over "model"
  got = sharded.generate(IDS, prompts, num_samples=4, strategy=sampling.TopK(5, 1.0),
                         max_new_tokens=T, batch_size=32)
  assert_same_samples(got, reference, logprob_tol=1e-4)


def test_prompt_alone_equals_prompt_in_a_mixed_batch(sampler1, prompts, reference):
  for i in (0, 4, 7):  # lengths 1, 13, 27: alone, each is padded to its own bucket
    alone = sampler1.generate([IDS[i]], [prompts[i]], num_samples=4,
                              strategy=sampling.TopK(5, 1.0), max_new_tokens=T, batch_size=2)
    assert_same_samples(alone, [reference[i]])


def test_seed_iteration_and_id_change_samples(sampler1, prompts, reference):
  def tokens(**kw):
    args = dict(num_samples=4, strategy=sampling.TopK(5, 1.0), max_new_tokens=T,
                batch_size=32)
    args.update(kw)
    ids = args.pop("ids", IDS)
    return [[s.tokens for s in p] for p in sampler1.generate(ids, prompts, **args)]
  want = [[s.tokens for s in p] for p in reference]
  assert tokens(seed=1) != want
  assert tokens(iteration=1) != want
  assert tokens(ids=[i + "x" for i in IDS]) != want


def test_shared_prefix_computed_once_gives_the_same_samples(sampler1, prompts):
  prefix = list(range(100, 120))
  with_prefix = [prefix + p for p in prompts[:6]] + prompts[6:]  # two prompts without it
  args = dict(num_samples=4, strategy=sampling.TopK(5, 1.0), max_new_tokens=T)
  plain = sampler1.generate(IDS, with_prefix, batch_size=32, **args)
  shared = sampler1.generate(IDS, with_prefix, batch_size=32, shared_prefix=prefix, **args)
  # Same samples; the log-probs differ in the last bits (the prefix is a separate product).
  assert_same_samples(shared, plain, logprob_tol=1e-4)


# --- against the full forward pass ------------------------------------------------------------


def test_greedy_is_argmax_and_topk_stays_in_topk(sampler1, params, cfg, prompts):
  greedy = sampler1.generate(IDS, prompts, num_samples=1, strategy=sampling.Greedy(),
                             max_new_tokens=T, batch_size=8)
  topk = sampler1.generate(IDS, prompts, num_samples=2, strategy=sampling.TopK(3, 5.0),
                           max_new_tokens=T, batch_size=16)
  left_top3 = 0
  for i, prompt in enumerate(prompts):
    (sample,) = greedy[i]
    assert sample.finish_reason == "length" and len(sample.tokens) == T
    logits = full_forward_logits(cfg, params, prompt, sample.tokens)
    np.testing.assert_array_equal(sample.tokens, logits.argmax(-1))
    logp = jax.nn.log_softmax(logits, axis=-1)[np.arange(T), sample.tokens]
    np.testing.assert_allclose(sample.logprob, float(np.sum(logp)), rtol=1e-5, atol=1e-4)
    for sample in topk[i]:
      logits = full_forward_logits(cfg, params, prompt, sample.tokens)
      top3 = np.argsort(-logits, axis=-1)[:, :3]
      assert all(tok in top3[t] for t, tok in enumerate(sample.tokens))
      left_top3 += sum(tok != top3[t, 0] for t, tok in enumerate(sample.tokens))
  assert left_top3 > 0  # temperature 5 does sample, not just take the argmax


# --- finish reasons ---------------------------------------------------------------------------


def test_eos_ends_a_sample(params, cfg, prompts):
  free = sampling.Sampler(params, cfg, mesh=mesh_of((1, 1, 1)), eos_id=None)
  ref = free.generate(IDS[:2], prompts[:2], num_samples=1, strategy=sampling.Greedy(),
                      max_new_tokens=T, batch_size=2)[1][0]
  assert ref.finish_reason == "length" and len(ref.tokens) == T
  eos = ref.tokens[2]
  stop_at = ref.tokens.index(eos)
  with_eos = sampling.Sampler(params, cfg, mesh=mesh_of((1, 1, 1)), eos_id=eos)
  got = with_eos.generate(IDS[:2], prompts[:2], num_samples=1, strategy=sampling.Greedy(),
                          max_new_tokens=T, batch_size=2)[1][0]
  assert got.finish_reason == "eos"
  assert got.tokens == ref.tokens[:stop_at + 1]


def test_stop_string_cuts_text_and_tokens(params, cfg, spm):
  vocab_ = vocab.load_vocab(spm)
  sampler = sampling.Sampler(params, cfg, mesh=mesh_of((1, 1, 1)), vocab=vocab_)
  ids = ["a", "b", "c", "d"]
  prompts = [vocab_.encode(q) for q in ("Question 1: what is", "Answer:", "Well", "fox")]
  full = sampler.generate(ids, prompts, num_samples=1, strategy=sampling.Greedy(),
                          max_new_tokens=12, batch_size=4)
  ref = next(p[0] for p in full if p[0].finish_reason == "length" and len(p[0].text) >= 6)
  assert ref.text == vocab_.decode(ref.tokens)
  start = len(ref.text) // 2
  stop = ref.text[start:start + 2]
  cut = ref.text.find(stop)
  got = sampler.generate(ids, prompts, num_samples=1, strategy=sampling.Greedy(),
                         max_new_tokens=12, batch_size=4, stop_strings=[stop])
  got = next(p[0] for p, q in zip(got, full) if q[0] is ref)
  assert got.finish_reason == "stop"
  assert got.text == ref.text[:cut]
  # Tokens end with the one that completes the stop string.
  n = len(got.tokens)
  assert got.tokens == ref.tokens[:n]
  assert stop in vocab_.decode(ref.tokens[:n]) and stop not in vocab_.decode(ref.tokens[:n - 1])


def test_too_long_prompt_is_an_error_naming_id_and_lengths(sampler1):
  with pytest.raises(ValueError, match=r"'long-one'.* 60 tokens.* 54 "):
    sampler1.generate(["ok", "long-one"], [[5, 6], list(range(3, 63))], num_samples=1,
                      strategy=sampling.Greedy(), max_new_tokens=10)


# --- shards on disk: seqio input, resume ------------------------------------------------------


@pytest.fixture(scope="module")
def task_name(spm):
  import seqio
  import tensorflow as tf
  name = "test_sampling_questions"
  questions = [f"Question {i}: what is {i} plus {i + 1}?\nAnswer:" for i in range(7)]

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(
        {"id": [f"q{i}" for i in range(len(questions))], "inputs": questions})

  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize],
        output_features={"inputs": seqio.Feature(vocab.load_vocab(spm), add_eos=False)})
  return name


def test_resume_after_a_kill_equals_an_uninterrupted_run(params, cfg, spm, task_name,
                                                         tmp_path):
  sampler = sampling.Sampler(params, cfg, mesh=mesh_of((1, 1, 1)), vocab=vocab.load_vocab(spm))
  kwargs = dict(num_samples=3, strategy=sampling.TopK(5, 1.0), max_new_tokens=T,
                problems_per_shard=2, batch_size=6, stop_strings=("\n\n",), progress=False)
  whole = tmp_path / "whole"
  sample_shards.write_samples(whole, sampler, task_name, **kwargs)
  assert sample_shards.is_complete(whole)

  calls = []
  real_generate = sampler.generate

  def dies_on_second_shard(*args, **kw):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt("killed")
    return real_generate(*args, **kw)

  resumed = tmp_path / "resumed"
  sampler.generate = dies_on_second_shard
  with pytest.raises(KeyboardInterrupt):
    sample_shards.write_samples(resumed, sampler, task_name, **kwargs)
  assert sorted(p.name for p in resumed.glob("samples-*")) == ["samples-00000.jsonl"]
  assert not sample_shards.is_complete(resumed)

  calls.clear()
  sampler.generate = lambda *a, **kw: (calls.append(1), real_generate(*a, **kw))[1]
  sample_shards.write_samples(resumed, sampler, task_name, **kwargs)
  assert len(calls) == 3  # shards 1..3 of 4 (7 problems, 2 a shard); shard 0 was kept
  names = sorted(p.name for p in whole.glob("samples-*"))
  assert names == sorted(p.name for p in resumed.glob("samples-*")) and len(names) == 4
  for name in names:
    assert (whole / name).read_text() == (resumed / name).read_text()

  records = sample_shards.read_samples(resumed)
  assert [(r["id"], r["sample_index"]) for r in records] == [
      (f"q{i}", j) for i in range(7) for j in range(3)]
  assert {"id", "sample_index", "text", "tokens", "finish_reason", "logprob"} <= set(records[0])

  with pytest.raises(ValueError, match="other settings"):
    sample_shards.write_samples(resumed, sampler, task_name, **{**kwargs, "num_samples": 2})


def test_non_writing_host_samples_every_shard_and_writes_nothing(sampler1, tmp_path):
  """A mesh over several hosts: all hosts run every shard together, only process 0 writes."""
  problems = [{"id": f"p{i}", "inputs": [5 + i, 6, 7]} for i in range(5)]
  kwargs = dict(num_samples=2, strategy=sampling.Greedy(), max_new_tokens=T,
                problems_per_shard=2, progress=False, process_index=0, process_count=1)
  calls = []
  real_generate = sampler1.generate
  sampler1.generate = lambda *a, **kw: (calls.append(1), real_generate(*a, **kw))[1]
  try:
    out = tmp_path / "other_host"
    mine = sample_shards.write_samples(out, sampler1, problems, write=False, **kwargs)
    assert len(calls) == 3 and len(mine) == 3  # every shard sampled, in step with process 0
    assert not out.exists()
    calls.clear()
    sample_shards.write_samples(tmp_path / "process0", sampler1, problems, **kwargs)
    assert len(calls) == 3 and sample_shards.is_complete(tmp_path / "process0")
  finally:
    sampler1.generate = real_generate


def test_plain_iterable_source_and_duplicate_ids(sampler1, tmp_path):
  problems = [{"id": "x", "inputs": np.array([5, 6, 7, 1])}, {"id": "y", "inputs": [8, 9]}]
  assert list(sample_shards.iter_problems(problems)) == [("x", [5, 6, 7]), ("y", [8, 9])]
  with pytest.raises(ValueError, match="occurs twice"):
    sample_shards.write_samples(tmp_path, sampler1, problems + [{"id": "x", "inputs": [3]}],
                                num_samples=1, strategy=sampling.Greedy(), max_new_tokens=T,
                                progress=False)


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(params, cfg, spm, tmp_path_factory):
  return checkpoints.save(tmp_path_factory.mktemp("ckpt") / "model", params, cfg, spm)


def run_cli(*args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device is enough
  return subprocess.run([sys.executable, "-m", "restem_jax.sample", *args], env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_end_to_end(checkpoint, spm, tmp_path):
  vocab_ = vocab.load_vocab(spm)
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(json.dumps({"id": "t1", "prompt": "Question 2: what is"}) + "\n"
                     + json.dumps({"id": 7, "prompt_ids": vocab_.encode("Answer:")}) + "\n")
  out = tmp_path / "out.jsonl"
  result = run_cli(f"--checkpoint={checkpoint}", f"--prompts={prompts}", f"--out={out}",
                   "--num_samples=3", "--temperature=0", "--max_new_tokens=5")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["id"], r["sample_index"]) for r in rows] == [
      ("t1", 0), ("t1", 1), ("t1", 2), (7, 0), (7, 1), (7, 2)]
  for r in rows:
    assert set(r) == {"id", "sample_index", "text", "tokens", "finish_reason", "logprob"}
    assert r["finish_reason"] in ("eos", "stop", "length")
    body = r["tokens"][:-1] if r["finish_reason"] == "eos" else r["tokens"]
    assert r["text"] == vocab_.decode(body)
  # Temperature 0 is greedy: every sample of a prompt is the same.
  assert rows[0]["tokens"] == rows[1]["tokens"] == rows[2]["tokens"]


def test_cli_too_long_prompt(checkpoint, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(json.dumps({"id": "huge", "prompt_ids": [5] * 70}) + "\n")
  result = run_cli(f"--checkpoint={checkpoint}", f"--prompts={prompts}",
                   f"--out={tmp_path / 'out.jsonl'}", "--max_new_tokens=8")
  assert result.returncode != 0
  assert "'huge'" in result.stderr and "70 tokens" in result.stderr and "56" in result.stderr
  assert not (tmp_path / "out.jsonl").exists()
