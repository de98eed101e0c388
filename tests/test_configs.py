"""Every config file loads, is locked, and describes a model that builds (abstractly)."""

import glob
import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
import seqio

from restem_jax import model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


def _load(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_locked_with_paper_sampling(path):
  c = _load(path)
  with pytest.raises(AttributeError):
    c.restem.num_sampels = 3  # a typo is an error, not a new key
  assert c.restem.top_k == 40 and c.restem.temperature == 0.7  # the paper's sampling
  assert c.restem.max_per_problem == 10
  cfg = model_lib.ModelConfig.from_dict(c.model.to_dict())
  abstract = jax.eval_shape(lambda k: model_lib.Decoder(cfg).init(k, jnp.zeros((1, 1),
                                                                               jnp.int32)),
                            jax.random.key(0))
  assert model_lib.count_params(nn.unbox(abstract)) > 0
  # A full prompt and a full sample fit in the model's length.
  assert cfg.max_len >= c.data.inputs_length + c.sampling.max_new_tokens


def test_paper_settings():
  math = _load(os.path.join(REPO, "configs", "math_palm.py"))
  apps = _load(os.path.join(REPO, "configs", "apps_palm.py"))
  assert math.restem.num_samples == 32 and math.restem.num_iterations == 3
  assert apps.restem.num_samples == 64 and apps.restem.stop_when_valid_drops
  assert math.eval.transfer_tasks == ("gsm8k",) and apps.eval.transfer_tasks == ("humaneval",)
  demo = _load(os.path.join(REPO, "configs", "demo.py"))
  assert demo.restem.num_samples == 32 and demo.restem.num_iterations == 3
  assert demo.data.sizes["test"] >= 500


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="unknown variant"):
    _load(os.path.join(REPO, "configs", "demo.py"), "smok")


@pytest.mark.parametrize("name, variant", [("demo.py", None), ("demo.py", "smoke"),
                                           ("demo_code.py", None), ("demo_code.py", "smoke")])
def test_embedded_demos_fit_their_rows(name, variant, tmp_path):
  """No prompt or human solution of a demo is cut by its row lengths (the loop's vocabulary)."""
  from restem_jax.data import vocab as vocab_lib
  from restem_jax.data import finetune, tasks
  from restem_jax.loop import inputs
  c = _load(os.path.join(REPO, "configs", name), variant)
  options = inputs.task_options(c.data.kind, c.data)
  vocab_path = vocab_lib.train_sentencepiece(tasks.training_texts(c.data.kind, **options),
                                             tmp_path / "v.model", c.vocab.size)
  task_name = tasks.register_task(c.data.kind, vocab_lib.load_vocab(vocab_path),
                                  name=f"fit_{name[:-3]}_{variant}", **options)
  lengths = {"inputs": c.data.inputs_length, "targets": c.data.targets_length}
  for split in c.data.sizes:
    over = finetune.overlong_examples(seqio.get_mixture_or_task(task_name), lengths, split)
    assert over["inputs"][0] == 0 and over["targets"][0] == 0, (split, over)
    assert over["targets"][1] <= c.sampling.max_new_tokens  # a sample can be as long


def _make_target_config(target):
  """The config file and workdir a Makefile target runs."""
  import re
  text = open(os.path.join(REPO, "Makefile")).read()
  body = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M).group(1)
  config = re.search(r"--config=(\S+)", body).group(1)
  workdir = re.search(r"--workdir=(\S+)", body).group(1)
  return os.path.join(REPO, config), workdir


@pytest.mark.parametrize("target", ["demo", "demo-math"])
def test_make_demos_compare_with_both_baselines_on_500_test_problems(target):
  """What the README claims of `make demo` / `make demo-math` needs: every test problem of 500 or
  more evaluated greedily, base and sft_human beside the iterations, one fine-tuning recipe."""
  path, workdir = _make_target_config(target)
  c = _load(path)
  assert workdir.startswith("runs/")
  assert c.data.sizes["test"] >= 500 and c.eval.max_problems == 0
  assert "test" in c.eval.splits and c.baselines.base and c.baselines.sft_human
  assert c.data.kind in ("arith", "prog") and c.restem.num_iterations >= 1
  assert not c.base_checkpoint and not c.restem.generator_checkpoint
  assert _make_target_config("demo")[1] == "runs/demo"  # DESIGN.md's contract
