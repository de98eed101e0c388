"""A run's inputs, prepared once before any training: vocabulary, tasks, problems and sizes.

`prepare(config, workdir)` returns them as one `RunData` value; every stage after it reads that
value (`Run.data`). The vocabulary is a stage of its own (trained on the data, or copied from the
base checkpoint or `vocab.path`, into workdir/vocab.model); registering the seqio tasks and
loading their problems take seconds and are redone on every start. Sizes left at 0 in the
config (`data.fit.AUTO`) are derived from the data here and every size is checked against it, so
a size that does not fit fails before any training.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import ml_collections
from etils import epath

from restem_jax.data import fit
from restem_jax.data import hf_tokenizer
from restem_jax.data import tasks
from restem_jax.data import vocab as vocab_lib
from restem_jax.loop import preflight
from restem_jax.loop import run_dir
from restem_jax.model import checkpoints
from restem_jax import rewards as rewards_lib


@dataclasses.dataclass
class EvalTask:
  """A registered task with its problems, reward and stop strings."""

  kind: str
  name: str
  problems: dict[str, list[dict[str, Any]]]
  reward: Any
  stop_strings: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RunData:
  """What `prepare` returns: the run's own task, its transfer tasks, vocabulary and sizes."""

  vocab_path: str
  vocab: Any  # a seqio vocabulary (SentencePiece or a Hugging Face tokenizer.json)
  main: EvalTask  # the run's task: its train problems are the ones ReST^EM improves on
  transfer: tuple[EvalTask, ...]  # test-only evaluations (MATH -> GSM8K, APPS -> HumanEval)
  sizes: dict[str, Any]  # `fit.fit`'s record of what it derived and from what

  @property
  def task_name(self) -> str:
    return self.main.name

  @property
  def problems(self) -> dict[str, list[dict[str, Any]]]:
    return self.main.problems

  @property
  def reward(self) -> Any:
    return self.main.reward

  @property
  def stop_strings(self) -> tuple[str, ...]:
    return self.main.stop_strings


def task_options(kind: str, options) -> dict[str, Any]:
  """The options of `options` (a ConfigDict) that data set `kind` takes and that are set."""
  opts = {}
  for key in tasks.KINDS[kind].options:
    value = options[key] if key in options else None
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    if value not in (None, "", {}):
      opts[key] = value
  return opts


def eval_task(config: ml_collections.ConfigDict, vocab, kind: str, name: str, options,
              prompt: str = "", num_shots: int = -1,
              splits=("train", "valid", "test")) -> EvalTask:
  """Registers data set `kind` as seqio task `name` and loads the problems of `splits`."""
  task_name = tasks.register_task(kind, vocab, name=name, prompt=prompt or None,
                                  num_shots=None if num_shots < 0 else num_shots,
                                  **task_options(kind, options))
  reward = rewards_lib.get(tasks.reward_name(kind), **config.reward.to_dict())
  # A base model runs on into a new few-shot example: the prompt's own stop strings end it.
  stops = tuple(config.sampling.stop_strings) or tuple(tasks.task_info(task_name).stop)
  problems = {split: tasks.load_problems(task_name, split) for split in splits}
  return EvalTask(kind, task_name, problems, reward, stops)


def _make_vocab(config: ml_collections.ConfigDict, workdir: epath.Path) -> dict[str, str]:
  """The vocabulary stage: copies the given one (with a tokenizer.json's special tokens) or
  trains a SentencePiece model on the data's training texts."""
  out = workdir / "vocab.model"
  source = config.vocab.path or (
      config.base_checkpoint and checkpoints.vocab_path(config.base_checkpoint))
  if source:
    source = epath.Path(source)
    source.copy(out, overwrite=True)
    # The special tokens' roles (EOS, add_bos_token) travel with a tokenizer.json.
    config_file = source.parent / hf_tokenizer.CONFIG_FILE
    if config_file.exists():
      config_file.copy(workdir / hf_tokenizer.CONFIG_FILE, overwrite=True)
  else:
    data = config.data
    texts = tasks.training_texts(data.kind, prompt=data.prompt or None,
                                 **task_options(data.kind, data))
    vocab_lib.train_sentencepiece(texts, out, fit.vocab_size(texts, config.vocab.size))
  return {"path": str(out)}


def prepare(config: ml_collections.ConfigDict, workdir: epath.Path) -> RunData:
  """Trains (or copies) the vocabulary, registers the tasks, loads their problems, fits sizes.

  Derived sizes are written into `config` (its AUTO fields). Raises `cli.UserError` or
  ValueError (invalid input data) before any training.
  """
  data = config.data
  vocab_path = run_dir.stage(workdir, "vocab", lambda: _make_vocab(config, workdir),
                             write=jax.process_index() == 0)["path"]
  vocab = vocab_lib.load_vocab(vocab_path)
  main = eval_task(config, vocab, data.kind, f"restem_run_{data.kind}", data, data.prompt,
                   data.num_shots)
  preflight.check_problems(main.problems, data.kind)
  # AUTO (0) sizes are derived from the data, and all are checked, before any training.
  sizes = fit.fit(config, main.problems, vocab, base_model=(
      checkpoints.load_config(config.base_checkpoint) if config.base_checkpoint else None))
  # Transfer evaluations (the paper: MATH -> GSM8K, APPS -> HumanEval): test split only.
  transfer = tuple(
      eval_task(config, vocab, kind, f"restem_run_transfer_{kind}", config.transfer[kind],
                config.transfer[kind].get("prompt", ""),
                config.transfer[kind].get("num_shots", -1), splits=("test",))
      for kind in config.eval.transfer_tasks)
  logging.info("task %s: %s%s", data.kind,
               ", ".join(f"{len(v)} {k}" for k, v in main.problems.items()),
               "".join(f"; transfer {t.kind}: {len(t.problems['test'])} test" for t in transfer))
  return RunData(vocab_path, vocab, main, transfer, sizes)
