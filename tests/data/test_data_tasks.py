"""seqio Tasks: registration for a config's paths, features, splits, prompts, trimming."""

import json

import pytest
import seqio

from restem_jax.data import fewshot, tasks
from restem_jax.data import vocab as vocab_lib

SIZES = {"train": 40, "valid": 8, "test": 12}


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  texts = tasks.training_texts("arith", sizes=SIZES) + tasks.training_texts("prog", sizes=SIZES)
  path = vocab_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("vocab") / "v.model", 600)
  return vocab_lib.load_vocab(path)


def _examples(name, split, sequence_length=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length, split=split, shuffle=False,
                                                   use_cached=False)
  return list(ds.as_numpy_iterator())


def test_arith_task_features_and_splits(vocab):
  name = tasks.register_task("arith", vocab, sizes=SIZES, seed=1)
  assert name == "restem_arith"
  ids = {}
  for split, n in SIZES.items():
    examples = _examples(name, split)
    assert len(examples) == n
    ids[split] = {ex["id"].decode() for ex in examples}
  assert not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
  ex = _examples(name, "test")[0]
  question = ex["question"].decode()
  prompt = ex["inputs_pretokenized"].decode()
  assert prompt == f"Question: {question}\nAnswer: "  # 0-shot by default for arith
  assert vocab.decode(ex["inputs"].tolist()) == prompt
  assert ex["inputs"][-1] != vocab.eos_id  # the model continues the prompt
  assert ex["targets"][-1] == vocab.eos_id  # the solution ends
  assert vocab.decode(ex["targets"].tolist()) == ex["solution"].decode()
  assert ex["answer"].decode() in ex["solution"].decode()
  assert ex["tests"] == b""


def test_registration_is_idempotent_and_follows_the_latest_options(vocab):
  tasks.register_task("arith", vocab, sizes=SIZES)
  tasks.register_task("arith", vocab, sizes=SIZES)  # same again: no error
  name = tasks.register_task("arith", vocab, sizes={"train": 5, "valid": 2, "test": 3})
  assert len(tasks.load_problems(name, "train")) == 5
  # Several registrations side by side under their own names.
  other = tasks.register_task("arith", vocab, name="restem_arith_hard", sizes=SIZES,
                              knobs={"min_steps": 4, "max_steps": 4})
  assert len(tasks.load_problems(other, "train")) == SIZES["train"]
  assert all(p["solution"].count("=") == 4 for p in tasks.load_problems(other, "test"))
  assert len(tasks.load_problems(name, "train")) == 5


def test_few_shot_prompt_and_left_trimming(vocab):
  name = tasks.register_task("arith", vocab, sizes=SIZES, num_shots=3)
  prompt_set = fewshot.load("arith_3shot")
  ex = _examples(name, "test")[0]
  prompt = ex["inputs_pretokenized"].decode()
  assert prompt == prompt_set.format({"question": ex["question"].decode()}, 3)
  assert prompt.count("Question: ") == 4
  # Too long for the inputs length: the oldest tokens go, the question stays.
  full = vocab.encode(prompt)
  trimmed = _examples(name, "test", {"inputs": 30, "targets": 64})[0]["inputs"].tolist()
  assert len(full) > 30 and trimmed == full[-30:]


def test_prog_task_carries_tests_for_the_humaneval_reward(vocab):
  name = tasks.register_task("prog", vocab, sizes=SIZES)
  info = tasks.task_info(name)
  assert info.kind == "prog" and info.reward == "humaneval" and info.stop
  problems = tasks.load_problems(name, "test")
  assert len(problems) == SIZES["test"]
  for p in problems:
    assert p["prompt"] == p["question"] and p["prompt"].startswith("def transform(")
    assert p["test"].startswith("def check(candidate):") and p["entry_point"] == "transform"
    assert vocab.decode(p["prompt_ids"]) == p["prompt"]
    # prompt + solution is the reference program; run it on the tests (trusted generator code).
    namespace = {}
    exec(p["prompt"] + p["solution"] + "\n" + p["test"], namespace)
    namespace["check"](namespace["transform"])


def test_postprocess_cuts_at_stop_and_targets_become_reward_problems(vocab):
  name = tasks.register_task("arith", vocab, sizes=SIZES)
  task = seqio.get_mixture_or_task(name)
  ex = _examples(name, "test")[0]
  text = "1 + 1 = 2. The final answer is 2.\n\nQuestion: Start with 3."
  assert task.postprocess_fn(text, example=ex, is_target=False) == \
      "1 + 1 = 2. The final answer is 2."
  target = task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
  assert target["answer"] == ex["answer"].decode()
  assert target["prompt"] == ex["inputs_pretokenized"].decode()


def test_bad_options_and_kinds_are_errors(vocab):
  with pytest.raises(ValueError, match="unknown data set kind"):
    tasks.register_task("mnist", vocab)
  with pytest.raises(ValueError, match=r"options \['data_dir'\] do not apply to 'arith'"):
    tasks.register_task("arith", vocab, data_dir="/tmp")
  with pytest.raises(ValueError, match="unknown arith knobs"):
    tasks.register_task("arith", vocab, knobs={"digits": 3})
  with pytest.raises(KeyError, match="not registered"):
    tasks.task_info("restem_never_registered")


def test_training_texts_cover_prompt_and_problems():
  texts = tasks.training_texts("arith", sizes=SIZES, seed=1)
  assert texts[0].startswith("Question: ") and "The final answer is" in texts[0]
  assert len(texts) == 1 + 2 * SIZES["train"]
  assert json.dumps(texts) == json.dumps(tasks.training_texts("arith", sizes=SIZES, seed=1))


def test_embedded_sizes_not_given_take_the_defaults(vocab):
  from restem_jax.data import sources
  name = tasks.register_task("arith", vocab, name="arith_partial", sizes={"train": 7})
  assert len(tasks.load_problems(name, "train")) == 7
  assert len(tasks.load_problems(name, "valid")) == sources.DEFAULT_SIZES["valid"]
