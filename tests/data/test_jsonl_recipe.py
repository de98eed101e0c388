"""configs/jsonl_math.py on data of one's own: sizes derived from the data or checked, before
any training; the word-problem generator used to measure the recipe."""

import json
import re

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from restem_jax.data import fit
from restem_jax.data import synthetic_math
from restem_jax.data import variants
from restem_jax import loop
from restem_jax.loop import estep
from restem_jax.loop import stages
from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax import sampling

from tests.test_configs import REPO, _load


def _write(tmp_path, sizes, solution_fraction=0.25):
  paths = {}
  for split, problems in synthetic_math.generate(sizes, seed=1,
                                                 solution_fraction=solution_fraction).items():
    paths[split] = tmp_path / f"{split}.jsonl"
    paths[split].write_text("".join(json.dumps(p) + "\n" for p in problems))
  return paths


def _config(paths, variant=None, **overrides):
  c = _load(f"{REPO}/configs/jsonl_math.py", variant)
  for split, path in paths.items():
    c.data[f"{split}_path"] = str(path)
  for key, value in overrides.items():
    *parents, last = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[last] = value
  return c


def test_generator_problems_are_right_and_disjoint():
  out = synthetic_math.generate({"train": 200, "test": 50}, seed=3, solution_fraction=0.2)
  train, test = out["train"], out["test"]
  assert len(train) == 200 and len(test) == 50
  assert not {p["question"] for p in train} & {p["question"] for p in test}
  assert sum("solution" in p for p in train) == 40 and not any("solution" in p for p in test)
  assert synthetic_math.generate({"train": 200, "test": 50}, seed=3,
                                 solution_fraction=0.2) == out  # deterministic
  for p in train:
    if "solution" not in p:
      continue
    *steps, last = p["solution"].split(". ")
    assert last == f"The final answer is {p['answer']}."
    for step in steps:  # every step's arithmetic holds; the last one gives the answer
      a, op, b, c = re.fullmatch(r"(\d+) ([-+*/]) (\d+) = (\d+)", step).groups()
      a, b, c = int(a), int(b), int(c)
      assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op] == c
      assert op != "/" or a % b == 0
    assert int(p["answer"]) == c and 1 <= c <= 999
  answers = {p["answer"] for p in train}
  assert len(answers) > 100  # not guessable


def _prepared_run(tmp_path, config):
  """The run's inputs (`loop.prepare`): vocabulary, problems and the derived sizes."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  return loop.prepare(config, workdir)


def test_auto_sizes_are_derived_from_the_data(tmp_path):
  paths = _write(tmp_path, {"train": 60, "test": 20})
  config = _config(paths, "smoke")
  run = _prepared_run(tmp_path, config)  # the RunData
  c = config  # `prepare` writes the derived sizes into it
  prompts = [len(p["prompt_ids"]) for s in ("train", "valid") for p in run.problems[s]]
  solutions = [len(run.vocab.encode(p["solution"])) + 1 for s in ("train", "valid")
               for p in run.problems[s] if p["solution"]]
  assert c.data.inputs_length == max(prompts)  # no prompt is cut, none is padded for nothing
  assert c.sampling.max_new_tokens >= 1.1 * max(solutions)
  assert c.data.targets_length == c.sampling.max_new_tokens + 1  # a full sample fits a row
  assert run.vocab.vocab_size <= c.model.vocab_size < run.vocab.vocab_size + 128
  longest = max(len(p["prompt_ids"]) for ps in run.problems.values() for p in ps)
  assert c.model.max_len >= max(longest + c.sampling.max_new_tokens,
                                c.data.inputs_length + c.data.targets_length)
  assert c.base_trainer.num_train_steps == 200  # the smoke variant gives it
  assert run.sizes["longest_solution"][1] == max(solutions)
  # Without number variants the full recipe derives the base's steps from the human
  # solutions (BASE_EPOCHS passes over their rows); with them (the default, as these solutions
  # are equation chains) it spends the whole token budget on variants of them.
  plain = _config(paths, **{"data.solution_variants": -1})
  fit.fit(plain, run.problems, run.vocab)
  assert plain.base_trainer.num_train_steps == fit.MIN_BASE_STEPS  # 15 solutions: the minimum
  full = _config(paths)
  fit.fit(full, run.problems, run.vocab)
  row = full.data.inputs_length + full.data.targets_length
  assert full.base_trainer.num_train_steps == fit.BASE_TOKEN_BUDGET // (32 * row)
  solution_tokens = sum(solutions) + sum(len(p["prompt_ids"]) for s in ("train", "valid")
                                         for p in run.problems[s] if p["solution"])
  tokens = (full.data.solution_variants + 1) * solution_tokens
  budget = full.base_trainer.num_train_steps * 32 * row  # one pass over its steps' rows
  assert 1 <= tokens / (budget * (1 - variants.DRILL_SHARE)) < 1.2
  assert full.model.vocab_size == c.model.vocab_size
  assert full.restem.num_samples == 32  # 54 short problems: the most samples the budget allows


class _WordVocab:
  """One token a word: enough for the size arithmetic, no SentencePiece needed."""
  vocab_size = 400

  @staticmethod
  def encode(text):
    return text.split()


def _problems(num_train, solution_words, prompt_tokens=60):
  def problem(split, i, solved):
    return {"id": f"{split}/{i}", "prompt_ids": [5] * prompt_tokens,
            "solution": " ".join(["w"] * solution_words) if solved else ""}
  return {"train": [problem("train", i, i % 5 == 0) for i in range(num_train)],
          "valid": [problem("valid", i, False) for i in range(100)],
          "test": [problem("test", i, False) for i in range(500)]}


def test_samples_per_problem_and_base_steps_follow_the_data_within_budgets():
  short, long = _config({}), _config({})
  fit.fit(short, _problems(3000, 100), _WordVocab())
  fit.fit(long, _problems(3000, 300), _WordVocab())
  for c in (short, long):  # N: the most samples whose decoding fits the budget, at least 4
    decode_steps = 3000 * c.sampling.max_new_tokens
    assert c.restem.num_samples * decode_steps <= fit.SAMPLE_TOKEN_BUDGET or (
        c.restem.num_samples == 4)
    assert c.restem.num_samples == 32 or 2 * c.restem.num_samples * decode_steps > (
        fit.SAMPLE_TOKEN_BUDGET)
  assert (short.restem.num_samples, long.restem.num_samples) == (8, 4)
  # Base steps: BASE_EPOCHS passes over the human solutions' rows, capped by the token budget.
  row = short.data.inputs_length + short.data.targets_length
  rows = -(-600 * (60 + 101) // row)
  assert short.base_trainer.num_train_steps == -(-fit.BASE_EPOCHS * rows // 32)
  long_row = long.data.inputs_length + long.data.targets_length
  assert long.base_trainer.num_train_steps == fit.BASE_TOKEN_BUDGET // (32 * long_row)
  explicit = _config({}, **{"restem.num_samples": 12})
  fit.fit(explicit, _problems(3000, 300), _WordVocab())
  assert explicit.restem.num_samples == 12  # a given N is kept


def test_vocabulary_size_follows_the_texts():
  few = ["Ava has 3 apples. She buys 4 more apples."] * 10
  many = few + [f"word{chr(97 + i)}{chr(97 + j)} " * 3 for i in range(26) for j in range(26)]
  assert fit.vocab_size(few) == 320  # the floor: bytes, specials and a few words
  assert fit.vocab_size(many) > fit.vocab_size(few)
  assert fit.vocab_size(many, requested=500) == 500  # a given size is kept


@pytest.mark.parametrize("override, key", [
    ({"data.inputs_length": 16}, "data.inputs_length 16 is shorter than the prompt"),
    ({"data.targets_length": 8}, "data.targets_length 8 is shorter than the solution"),
    ({"model.max_len": 64, "sampling.max_new_tokens": 40}, "exceed the max_len 64"),
    ({"model.vocab_size": 128, "vocab.size": 400}, "model.vocab_size 128"),
])
def test_a_size_that_does_not_fit_fails_before_training_in_one_line(tmp_path, override, key):
  paths = _write(tmp_path, {"train": 60, "test": 20})
  config = _config(paths, "smoke", **override)
  with pytest.raises(ValueError) as e:
    loop.run(config, tmp_path / "run")
  message = str(e.value)
  assert key in message and "\n" not in message
  assert "wordmath/" in message or "vocab_size" in key  # names the problem that does not fit
  assert not (tmp_path / "run" / "stages" / "init.json").exists()  # nothing was trained
  assert not (tmp_path / "run" / "train").exists()


def test_the_cli_reports_an_oversized_prompt_in_one_line_before_training(tmp_path):
  """`restem --config=configs/jsonl_math.py` with data.inputs_length below the data's prompts:
  exit 2, one line naming the key and the problem, no traceback, nothing trained."""
  import subprocess
  import sys
  from tests.conftest import smoke_env
  paths = _write(tmp_path, {"train": 30, "test": 10})
  out = subprocess.run(
      [sys.executable, "-m", "restem_jax.main", "--config=configs/jsonl_math.py",
       f"--workdir={tmp_path / 'run'}", f"--config.data.train_path={paths['train']}",
       f"--config.data.test_path={paths['test']}", "--config.data.inputs_length=24",
       "--config.progress_bar=False"],
      cwd=REPO, env=smoke_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if "inputs_length" in line]
  assert len(errors) == 1 and "wordmath/" in errors[0] and "Traceback" not in out.stderr
  assert not (tmp_path / "run" / "train").exists()


def test_a_vocabulary_larger_than_the_model_is_an_error_before_training():
  c = _config({}, **{"vocab.path": "given.model", "model.vocab_size": 256})
  with pytest.raises(ValueError, match="vocabulary has 400 pieces, more than model.vocab_size 256"):
    fit.fit(c, _problems(100, 20), _WordVocab())
  c = _config({}, **{"vocab.path": "given.model", "model.vocab_size": 0})
  fit.fit(c, _problems(100, 20), _WordVocab())
  assert c.model.vocab_size == 512  # AUTO: the vocabulary's 400 pieces, rounded up to 128


def test_a_given_length_that_cuts_a_few_outliers_warns_and_one_that_cuts_many_fails(caplog):
  """A real data set's few longest solutions (MATH's) must not stop a paper-scale run; a length
  that cuts more than the tolerated share does."""
  class Vocab:
    vocab_size = 100

    @staticmethod
    def encode(text):
      return text.split()

  def problems(num_long):
    train = [{"id": f"p{i}", "prompt_ids": [1] * 10,
              "solution": " ".join(["w"] * (60 if i < num_long else 20))} for i in range(200)]
    return {"train": train, "test": train[:5]}

  def config():
    return ml_collections.ConfigDict({
        "data": {"inputs_length": 16, "targets_length": 32, "pack": False},
        "sampling": {"max_new_tokens": 24},
        "model": {"vocab_size": 128, "max_len": 64},
        "vocab": {"size": 100, "path": ""},
        "base_trainer": {"num_train_steps": 10, "batch_size": 4},
        "restem": {"num_samples": 4}})

  with caplog.at_level("WARNING"):
    fit.fit(config(), problems(1), Vocab())
  assert "1 of 200 human solutions are longer than data.targets_length 32" in caplog.text
  with pytest.raises(ValueError, match=r"data.targets_length 32 is shorter .* and 9 more"):
    fit.fit(config(), problems(10), Vocab())


@pytest.mark.parametrize("budget", ["uniform", "adaptive"])
def test_a_derived_number_of_samples_passes_the_checks_before_the_data_is_read(
    tmp_path, monkeypatch, budget):
  """restem.num_samples 0 (the default config's AUTO) is only known after `data.fit`: the E-step
  plan's checks before any stage must not refuse it, and the plan read later has the derived N."""
  paths = _write(tmp_path, {"train": 40, "test": 8})
  config = _config(paths, "smoke", **{"restem.num_samples": 0, "restem.budget": budget})

  class Stop(Exception):
    pass

  def prepare(config, workdir):  # the derivation, then the plan as `Run.plan` reads it
    fit.fit(config, _problems(40, 2, prompt_tokens=8), _WordVocab())
    raise Stop(estep.Plan.from_config(config.restem))

  monkeypatch.setattr(loop.inputs, "prepare", prepare)
  with pytest.raises(Stop) as stopped:
    loop.run(config, tmp_path / "run")
  plan = stopped.value.args[0]
  assert plan.budget == budget and plan.num_samples == config.restem.num_samples >= 4


def test_the_calculator_is_on_for_a_from_scratch_model_of_equation_chains_only(tmp_path, caplog):
  """sampling.calculator AUTO: on where the worked solutions write `A op B = C` and the model is
  trained here; off, in one log line, for prose / LaTeX solutions and for a base checkpoint."""
  paths = _write(tmp_path, {"train": 60, "test": 20})
  config = _config(paths, "smoke")
  run = _prepared_run(tmp_path, config)
  assert config.sampling.calculator == 1 and run.sizes["sampling.calculator"] == 1
  latex = {s: [{**p, "solution": p["solution"] and
                f"We add: $\\frac{{1}}{{2}}$ and get $\\boxed{{{p['answer']}}}$."}
               for p in ps] for s, ps in run.problems.items()}
  prose = _config(paths, "smoke")
  with caplog.at_level("INFO"):
    fit.fit(prose, latex, run.vocab)
  assert prose.sampling.calculator == -1
  assert any("calculator: off: 0 of" in r.getMessage() for r in caplog.records)
  with_base = _config(paths, "smoke")
  base = ml_collections.ConfigDict({"vocab_size": 4096, "max_len": 2048})
  fit.fit(with_base, run.problems, run.vocab, base_model=base)
  assert with_base.sampling.calculator == -1
  given = _config(paths, "smoke", **{"sampling.calculator": -1})
  fit.fit(given, run.problems, run.vocab)
  assert given.sampling.calculator == -1  # an explicit setting stays


def test_the_run_samples_with_the_calculator(tmp_path):
  """The loop's samplers (Generate step, evaluation, the trainer's validation reward) come from
  `Run.sampler`, which turns the calculator on as the fitted config says."""
  paths = _write(tmp_path, {"train": 60, "test": 20})
  config = _config(paths, "smoke")  # sampling.calculator AUTO: on for these solutions
  workdir = tmp_path / "run"
  workdir.mkdir()
  data = loop.prepare(config, workdir)
  cfg = model_lib.ModelConfig.from_dict(config.model.to_dict())
  params = nn.unbox(model_lib.Decoder(cfg).init(jax.random.key(0), np.zeros((1, 1), np.int32)))
  model_dir = checkpoints.save(workdir / "m", params["params"], cfg, vocab_path=data.vocab_path)
  run = stages.Run(config, workdir, data)
  for for_training in (False, True):
    sampler = run.sampler(str(model_dir), for_training=for_training)
    assert sampler.calculator_on
  got = sampler.generate(["a"], [data.problems["test"][0]["prompt_ids"]], num_samples=2,
                         strategy=sampling.Greedy(), max_new_tokens=8)
  assert len(got[0]) == 2
