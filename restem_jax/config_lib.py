"""The run config schema shared by every file in configs/ (ml_collections, locked).

A config file builds on `base_config()` and sets what its run needs; `lock()` then makes a typo
in a `--config.KEY=VALUE` override an error instead of a silent new key.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from restem_jax import model as model_lib
from restem_jax.training import trainer as trainer_lib


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """A named model size (`model.PRESETS`) as a ConfigDict, with overrides."""
  return ml_collections.ConfigDict(model_lib.preset(name, **overrides).to_dict())


def trainer_config(**overrides) -> ml_collections.ConfigDict:
  """The trainer's schema (`trainer.default_config()`) with overrides."""
  c = trainer_lib.default_config()
  c.unlock()
  for k, v in overrides.items():
    if k not in c:
      raise KeyError(f"unknown trainer config key {k!r}")
    c[k] = v
  c.lock()
  return c


def embedded_task_config(kind: str, **overrides) -> ml_collections.ConfigDict:
  """The difficulty knobs of an embedded generator ("arith" or "prog") with their defaults, so
  each can be overridden from the command line (`--config.data.knobs.max_steps=4`)."""
  import dataclasses
  from restem_jax.data import arith, prog
  knobs = dataclasses.asdict({"arith": arith.ArithConfig, "prog": prog.ProgConfig}[kind]())
  # Tuples of single characters as strings ("+-*"): easy to override on a command line.
  knobs = {k: "".join(v) if k == "ops" else v for k, v in knobs.items()}
  unknown = set(overrides) - set(knobs)
  if unknown:
    raise KeyError(f"unknown {kind} knobs {sorted(unknown)}; known: {sorted(knobs)}")
  return ml_collections.ConfigDict({**knobs, **overrides})


# Keys added to the schema after run directories were written: such a run computed what these
# values compute, so its saved config is completed with them (`loop.run`) and it still resumes.
ADDED_DEFAULTS = {"restem": {"budget": "uniform", "max_samples_per_problem": 0,
                             "round_samples": 0, "dedup": False, "finetune_from": "base"},
                  "sampling": {"calculator": -1}}


def base_config() -> ml_collections.ConfigDict:
  """Defaults of a ReST^EM run: the paper's sampling settings, a tiny model, the arith task."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.distributed = False  # jax.distributed.initialize() (multi-host TPU slices)
  c.mesh_shape = (-1, 1, 1)  # (data, fsdp, model)
  c.progress_bar = True

  # The model: its architecture (for a from-scratch base), or a base checkpoint directory
  # (restem_jax.model.checkpoints format, which carries its own config and vocabulary).
  c.model = model_config("tiny")
  c.base_checkpoint = ""
  c.vocab = ml_collections.ConfigDict({"path": "", "size": 1024})

  # The data set (restem_jax.data.tasks.register_task options; "" / None = not set).
  c.data = ml_collections.ConfigDict({
      "kind": "arith",
      "prompt": "",  # few-shot prompt set name or file; "" = the kind's default
      "num_shots": -1,  # -1 = the kind's default
      "inputs_length": 128,  # prompt tokens in fine-tuning rows
      "targets_length": 128,  # solution tokens in fine-tuning rows
      "pack": False,
      "human_solutions": 0,  # train rows whose human solution the base / sft_human use; 0 = all
      "train_path": "", "valid_path": "", "test_path": "",  # jsonl
      "data_dir": "", "manual_dir": "",  # TFDS-prepared data sets
      "valid_size": config_dict.placeholder(int),
      "difficulties": config_dict.placeholder(tuple),
      "seed": config_dict.placeholder(int),
      "sizes": {},  # arith/prog: {split: count}
      "knobs": {},  # arith/prog: the generator's difficulty knobs (see embedded_task_config)
  })
  c.reward = ml_collections.ConfigDict()  # options of the reward (restem_jax.rewards.get)

  # Sampling shared by generation and evaluation.
  c.sampling = ml_collections.ConfigDict({
      "max_new_tokens": 128,
      "batch_size": 64,  # rows decoded together
      "stop_strings": (),
      # The number written right after `A op B =` is the exact value (sampling/calculator.py):
      # 1 on, -1 off, 0 (AUTO, configs/jsonl_math.py) on for a from-scratch model whose worked
      # solutions write such equations (data.fit).
      "calculator": -1,
  })

  # ReST^EM (paper: N = 32 for MATH, 64 for APPS; K = 10; top-k 40, temperature 0.7).
  c.restem = ml_collections.ConfigDict({
      "num_iterations": 3,
      "num_samples": 32,
      "max_per_problem": 10,
      "top_k": 40,
      "top_p": 1.0,
      "temperature": 0.7,
      "shard_problems": 64,  # problems per resumable sample shard
      "stop_when_valid_drops": False,  # stop once validation accuracy falls (APPS overfitting)
      "generator_checkpoint": "",  # distillation: this model generates, the base is trained
      # Beyond the paper (restem_jax/loop/estep.py): how the E-step spends its N x problems samples,
      # "uniform" (N each, the paper) or "adaptive" (rounds to the problems with the fewest of K).
      "budget": "uniform",
      "max_samples_per_problem": 0,  # adaptive: the most one problem draws; 0 = 4 x num_samples
      "round_samples": 0,  # adaptive: samples a problem gets per round; 0 = num_samples // 2
      "dedup": False,  # kept samples equal up to whitespace count once toward max_per_problem
      "finetune_from": "base",  # each iteration fine-tunes "base" (the paper) or "previous"
  })

  # Trainers: the from-scratch base model, and fine-tuning (sft_human and every iteration,
  # from the base checkpoint, or the previous iterate with restem.finetune_from, with a fresh
  # optimizer).
  c.base_trainer = trainer_config(optimizer="adamw", learning_rate=1e-3, schedule="cosine",
                                  warmup_steps=100, num_train_steps=2000, batch_size=32,
                                  eval_every=500)
  c.finetune = trainer_config(num_train_steps=500, batch_size=32, eval_every=100)
  c.trainer_valid_problems = 100  # validation problems for the trainer's reward selection

  c.baselines = ml_collections.ConfigDict({"base": True, "sft_human": True})
  c.eval = ml_collections.ConfigDict({
      "splits": ("test", "valid"),
      "max_problems": 0,  # 0 = all
      "num_samples": 16,  # samples per test problem for pass@k / maj@k
      "sampled_problems": 0,  # test problems sampled for pass@k / maj@k; 0 = all
      "ks": (1, 4, 16),
      "temperature": 0.7,
      "top_k": 40,
      "top_p": 1.0,
      "transfer_tasks": (),  # data set kinds evaluated on their test split (keys of transfer)
  })
  # Options of each transfer task, by kind (register_task options, plus prompt / num_shots),
  # e.g. c.transfer = {"gsm8k": {"manual_dir": "/data/gsm8k"}}.
  c.transfer = ml_collections.ConfigDict()
  return c
