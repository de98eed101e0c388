"""Checks of a run's inputs before any stage runs: each failure is one `UserError` line.

`check_run` looks at what the config points to, without JAX work: the data files and
directories of the task and of each transfer task (given, present, not empty), the data
source's own validation (malformed lines, duplicate ids: `file_io.FormatError` with FILE:LINE),
empty splits, and the checkpoint and vocabulary paths. So a run with a bad input stops in
seconds instead of after the base model's training, and leaves no finished stage behind (the
corrected command then runs in the same workdir).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
from etils import epath

from restem_jax.cli import check_checkpoint
from restem_jax.cli import UserError
from restem_jax import file_io

DIR_OPTIONS = ("data_dir", "manual_dir")
# Compressed or columnar files: emptiness shows as zero rows, which the split check catches.
_BINARY_SUFFIXES = (".gz", ".parquet", ".arrow", ".zip", ".bz2", ".xz", ".zst")


def _has_text(path: epath.Path) -> bool:
  """True when the file holds anything but whitespace (read in chunks: files may be large)."""
  with path.open("rb") as f:
    while chunk := f.read(1 << 16):
      if chunk.strip():
        return True
  return False


def check_paths(options: Mapping[str, Any], prefix: str) -> None:
  """Files (`*_path`) must exist and hold something; directories (`data_dir`, `manual_dir`)
  must exist.

  Args:
    options: a data set's options (the config's `data` group or a transfer task's).
    prefix: their config path for messages, e.g. "data" or "transfer.gsm8k".
  """
  for key, value in options.items():
    if not isinstance(value, str) or not value:
      continue
    flag = f"--config.{prefix}.{key}"
    path = epath.Path(value)
    if key.endswith("_path"):
      if not path.exists():
        raise UserError(f"{flag}: {value} does not exist")
      if path.is_dir():
        raise UserError(f"{flag}: {value} is a directory; give a file")
      if not value.endswith(_BINARY_SUFFIXES) and not _has_text(path):
        raise UserError(f"{flag}: {value} is empty: it holds no problems")
    elif key in DIR_OPTIONS and not path.exists():
      raise UserError(f"{flag}: {value} does not exist")


def _where(options: Mapping[str, Any], split: str) -> str:
  """The file a split comes from, for messages ("" when the options do not name one)."""
  for key in (f"{split}_path", "train_path" if split == "valid" else ""):
    if key and options.get(key):
      return f" ({options[key]})"
  return ""


def check_source(kind: str, options: Mapping[str, Any], prefix: str,
                 splits: tuple[str, ...]) -> None:
  """Builds the data set's seqio source (which reads and validates its files) and checks that
  each of `splits` has problems.

  Args:
    kind: the data set kind (`tasks.KINDS`).
    options: the kind's options that are set (as `register_task` takes them).
    prefix: the options' config path, for messages.
    splits: the splits the run needs.
  """
  from restem_jax.data import sources  # pylint: disable=g-import-not-at-top: TF is heavy
  try:
    source, _ = sources.source_and_preprocessors(kind, options)
  except (UserError, file_io.FormatError, FileNotFoundError):
    raise
  except ValueError as e:  # the data layer's "invalid input data" (see register_task)
    given = ", ".join(f"{k}={v}" for k, v in options.items() if isinstance(v, str) and v)
    raise UserError(f"--config.{prefix}" + (f" ({given})" if given else "") + f": {e}") from e
  for split in splits:
    if split not in source.splits:
      raise UserError(f"--config.{prefix}: the {kind} data set has no {split} split")
    count = source.num_input_examples(split)
    if count == 0:
      raise UserError(f"--config.{prefix}: the {split} split is empty{_where(options, split)}; "
                      f"a run needs train and test problems")


def task_options(kind: str, options: ml_collections.ConfigDict) -> dict[str, Any]:
  """The options of `options` that data set `kind` takes and that are set."""
  from restem_jax.data import tasks  # pylint: disable=g-import-not-at-top
  if kind not in tasks.KINDS:
    raise UserError(f"--config.data.kind: unknown data set kind {kind!r}; known: "
                    f"{', '.join(sorted(tasks.KINDS))}")
  out = {}
  for key in tasks.KINDS[kind].options:
    value = options[key] if key in options else None
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    if value not in (None, "", {}):
      out[key] = value
  return out


def check_inputs(config: ml_collections.ConfigDict) -> None:
  """The checks that need neither JAX nor TensorFlow (seconds): checkpoints, vocabulary, data
  files present and not empty; generic JSONL files parsed (FILE:LINE errors)."""
  for key, value in (("base_checkpoint", config.base_checkpoint),
                     ("restem.generator_checkpoint", config.restem.generator_checkpoint)):
    if value:
      check_checkpoint(str(value), f"--config.{key}")
  if config.vocab.path and not epath.Path(config.vocab.path).exists():
    raise UserError(f"--config.vocab.path: {config.vocab.path} does not exist")
  # A vocabulary trained here has at most vocab.size pieces; a from-scratch model must embed
  # them all (0 is AUTO: data.fit derives it and checks the trained vocabulary).
  vocab_size, model_vocab = config.vocab.size, config.model.vocab_size
  if (not config.base_checkpoint and not config.vocab.path and vocab_size and model_vocab
      and vocab_size > model_vocab):
    raise UserError(f"--config.vocab.size {vocab_size} is larger than --config.model.vocab_size "
                    f"{model_vocab}: set them equal, or model.vocab_size to 0 to derive it")
  check_paths(config.data, "data")
  for kind in config.eval.transfer_tasks:
    if kind not in config.transfer:
      raise UserError(f"--config.eval.transfer_tasks names {kind!r}, but --config.transfer has "
                      f"no options for it")
    check_paths(config.transfer[kind], f"transfer.{kind}")
  if config.data.kind == "jsonl":
    from restem_jax.data import records  # pylint: disable=g-import-not-at-top: light
    counts = {}
    for split in ("train", "valid", "test"):
      path = config.data[f"{split}_path"]
      if path:
        counts[split] = len(records.read_generic_file(path))
    if counts.get("train") == 1 and not config.data.valid_path:
      raise UserError(f"--config.data.train_path: {config.data.train_path} holds 1 problem; a "
                      f"validation slice is held out of train, so give more problems or a "
                      f"--config.data.valid_path")


def check_model(config: ml_collections.ConfigDict) -> None:
  """`--config.model`'s fields make a model (`ModelConfig`'s own checks, AUTO sizes aside)."""
  from restem_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top: JAX
  fields = config.model.to_dict()
  auto = {k: 1 for k in ("vocab_size", "max_len") if not fields.get(k)}  # derived later
  try:
    ModelConfig.from_dict({**fields, **auto})
  except (ValueError, ZeroDivisionError) as e:
    raise UserError(f"--config.model: {e}") from e


def check_run(config: ml_collections.ConfigDict) -> None:
  """`check_inputs` and `check_model`, then each data set's source built and its splits counted
  (TensorFlow)."""
  check_inputs(config)
  check_model(config)
  data = config.data
  main_splits = ("test",) if data.kind == "humaneval" else ("train", "test")
  check_source(data.kind, task_options(data.kind, data), "data", main_splits)
  for kind in config.eval.transfer_tasks:
    check_source(kind, task_options(kind, config.transfer[kind]), f"transfer.{kind}", ("test",))


def check_problems(problems: Mapping[str, list], kind: str) -> None:
  """The loaded problems: the splits a run trains and tests on are not empty."""
  for split in ("train", "test"):
    if split in problems and not problems[split] and not (kind == "humaneval"
                                                           and split == "train"):
      raise UserError(f"the {kind} data set's {split} split has no problems; a run needs train "
                      f"and test problems")
