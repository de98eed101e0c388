"""Every reference solution we ship or generate passes its own check through the rewards."""

import json

import pytest
import seqio

from restem_jax.data import arith, fewshot, prog, tasks
from restem_jax.data import vocab as vocab_lib
from restem_jax import rewards


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  texts = tasks.training_texts("arith", sizes={"train": 30, "valid": 3, "test": 3})
  path = vocab_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("v") / "v.model", 500)
  return vocab_lib.load_vocab(path)


def test_arith_solutions_earn_the_math_reward_and_wrong_answers_do_not():
  problems = arith.generate({"test": 60}, seed=7, config=arith.ArithConfig(
      ops=("+", "-", "*", "/"), max_steps=4))["test"]
  reward = rewards.get(tasks.reward_name("arith"))
  verdicts = reward.score_batch(problems, [p["solution"] for p in problems])
  assert all(v.passed for v in verdicts), [v.reason for v in verdicts if not v.passed]
  off_by_one = [p["solution"].replace(f"is {p['answer']}.", f"is {int(p['answer']) + 1}.")
                for p in problems]
  assert not any(v.passed for v in reward.score_batch(problems, off_by_one))


def test_prog_reference_solutions_pass_the_humaneval_and_apps_judges():
  problems = prog.generate({"test": 40}, seed=3)["test"]
  humaneval = rewards.get(tasks.reward_name("prog"))
  verdicts = humaneval.score_batch([prog.to_humaneval(p) for p in problems],
                                   [p["canonical_solution"] for p in problems])
  assert all(v.passed for v in verdicts), [v.reason for v in verdicts if not v.passed]
  apps = [prog.to_apps(p) for p in problems]
  verdicts = rewards.get("apps").score_batch(apps, [json.loads(a["solutions"])[0] for a in apps])
  assert all(v.passed for v in verdicts), [v.reason for v in verdicts if not v.passed]
  # A body that ignores the input fails (the tests are not vacuous).
  wrong = humaneval.score_batch([prog.to_humaneval(p) for p in problems],
                                ["    return xs\n" if p["arg"] == "xs" else "    return s\n"
                                 for p in problems])
  assert sum(v.passed for v in wrong) <= 2


def test_prog_task_problems_are_what_the_reward_takes(vocab):
  name = tasks.register_task("prog", vocab, sizes={"train": 10, "valid": 2, "test": 8},
                             num_shots=2)
  problems = tasks.load_problems(name, "test")
  assert all(p["prompt"].count("def transform(") == 3 for p in problems)  # 2 shots + problem
  verdicts = rewards.get("humaneval").score_batch(problems, [p["solution"] for p in problems])
  assert all(v.passed for v in verdicts), [v.reason for v in verdicts if not v.passed]


def test_few_shot_code_examples_pass_their_tests():
  for ex in fewshot.load("apps_3shot").examples:
    verdict = rewards.get("apps")({"input_output": ex["input_output"]}, ex["solution"])
    assert verdict.passed, (ex["question"][:40], verdict.reason)
  for ex in fewshot.load("prog_2shot").examples:
    verdict = rewards.get("humaneval")({"prompt": ex["question"], "test": ex["test"],
                                        "entry_point": ex["entry_point"]}, ex["solution"])
    assert verdict.passed, verdict.reason


def test_few_shot_math_examples_earn_their_rewards():
  for name, reward in (("math_minerva_4shot", "math"), ("gsm8k_cot_8shot", "gsm8k"),
                       ("arith_3shot", "math")):
    for ex in fewshot.load(name).examples:
      assert rewards.get(reward)({"answer": ex["answer"]}, ex["solution"]).passed, ex


def test_seqio_metric_scores_with_the_reward(vocab):
  name = tasks.register_task("arith", vocab, sizes={"train": 10, "valid": 2, "test": 6})
  task = seqio.get_mixture_or_task(name)
  examples = list(task.get_dataset(None, "test", shuffle=False).as_numpy_iterator())
  targets = [task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)
             for ex in examples]
  right = [task.postprocess_fn(ex["solution"] + b"\n\nQuestion: junk", example=ex)
           for ex in examples]
  wrong = [f"The final answer is {int(t['answer']) + 1}." for t in targets]
  (metric,) = task.metric_fns
  assert metric(targets, right) == {"accuracy": 1.0}
  assert metric(targets, right[:3] + wrong[3:]) == {"accuracy": 0.5}
