"""Fine-tuning data: a directory of kept samples -> a seqio Task -> decoder rows for the trainer.

ReST^EM's M-step trains on the samples that earned reward 1: inputs = the prompt the sample was
drawn with (few-shot prompt + question), targets = the sampled solution, loss on the targets
only. The filter step writes them as JSONL files in one directory:

  DIR/*.jsonl   one object a line: {"id": str (problem id), "prompt": str, "text": str
                (the sampled solution), "sample_index": int (optional)}

`sample_index`, when present, makes (id, sample_index) a key that must be unique; without it a
problem may list the same solution twice (two samples can coincide, and the paper keeps both).

`decoder_examples` turns any Task with "inputs"/"targets" (this one, or a problem Task's human
solutions for the SFT baseline) into decoder rows with loss weights on the target tokens only,
optionally packed, as numpy arrays `batches.ShuffledExamples` takes. The rows are built by
`batches.decoder_rows` from the examples' lengths, not by seqio's feature converters, which
take every token 0 for padding (a real token, "!", in Llama 3's and Qwen2's vocabularies).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import seqio
import tensorflow as tf
from etils import epath

from restem_jax.data import tasks
from restem_jax.data import vocab as vocab_lib
from restem_jax import file_io
from restem_jax.training import batches

SAMPLE_FIELDS = ("id", "prompt", "text")


def read_kept_samples(directory: epath.PathLike) -> list[dict[str, str]]:
  """Reads and validates a directory of kept samples.

  Args:
    directory: holds one or more *.jsonl files (read in sorted order).

  Returns:
    [{"id", "prompt", "text"}] in file order.

  Raises:
    FileNotFoundError: the directory is missing or holds no *.jsonl file.
    file_io.FormatError (a ValueError), naming the file and line: bad encoding, malformed JSON,
      a missing/empty/non-string field, or a duplicate (id, sample_index).
  """
  directory = epath.Path(directory)
  files = sorted(directory.glob("*.jsonl")) if directory.is_dir() else []
  if not files:
    raise FileNotFoundError(f"no kept samples: expected *.jsonl files of "
                            f"{{'id', 'prompt', 'text'}} lines in {directory}")
  samples, seen = [], set()
  for path in files:
    for line, row in file_io.iter_jsonl(path):
      for field in SAMPLE_FIELDS:
        if not isinstance(row.get(field), str) or not row[field].strip():
          raise file_io.FormatError(path, line,
                                    f"field {field!r} is missing, empty or not a string")
      if "sample_index" in row:
        key = (row["id"], row["sample_index"])
        if key in seen:
          raise file_io.FormatError(
              path, line, f"duplicate sample (id={key[0]!r}, sample_index={key[1]})")
        seen.add(key)
      samples.append({f: row[f] for f in SAMPLE_FIELDS})
  return samples


def register_finetune_task(name: str, samples_dir: epath.PathLike, vocab) -> str:
  """Registers (or replaces) a Task over kept samples: inputs = prompt, targets = text + EOS.

  Prompts start with the vocabulary's `prompt_prefix` (its BOS, if any), as the problem Tasks'
  prompts that the samples were drawn from do.

  Args:
    name: the Task name (e.g. "restem_kept_iter1").
    samples_dir: the directory of kept samples (read and validated now).
    vocab: a `seqio.Vocabulary` or the path of a SentencePiece model.

  Returns:
    The Task name; its only split is "train".
  """
  samples = read_kept_samples(samples_dir)
  columns = {f: [s[f] for s in samples] for f in SAMPLE_FIELDS}

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(columns)

  def to_features(dataset):
    return dataset.map(lambda ex: {"id": ex["id"], "inputs": ex["prompt"],
                                   "targets": ex["text"]})

  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  vocab = tasks.as_vocab(vocab)
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=["train"],
                                      num_input_examples={"train": len(samples)}),
      output_features=tasks.output_features(vocab),
      preprocessors=[to_features, seqio.preprocessors.tokenize,
                     functools.partial(tasks.trim_inputs_left,
                                       prefix=vocab_lib.prompt_prefix(vocab)),
                     seqio.preprocessors.append_eos_after_trim])
  return name


def _with_solution(ds: tf.data.Dataset) -> tf.data.Dataset:
  # Targets that are only EOS (no human solution, e.g. test problems) are not training examples.
  return ds.filter(lambda ex: tf.size(ex["targets"]) > 1)


def overlong_examples(task: seqio.Task, sequence_length: dict[str, int], split: str
                      ) -> dict[str, tuple[int, int, int]]:
  """How many examples with a solution seqio would truncate to `sequence_length`.

  Args:
    task: a Task with "inputs" and "targets" (targets end in EOS).
    sequence_length: {"inputs": ..., "targets": ...} token limits.
    split: the split to read.

  Returns:
    {feature: (examples longer than its limit, longest length, examples with a solution)}.
  """
  ds = _with_solution(task.get_dataset(None, split=split, shuffle=False, use_cached=False,
                                       trim_output_features=False))
  lengths = np.array(list(ds.map(lambda ex: (tf.size(ex["inputs"]), tf.size(ex["targets"])))
                          .as_numpy_iterator()), np.int64).reshape(-1, 2)
  return {k: (int((lengths[:, i] > sequence_length[k]).sum()),
              int(lengths[:, i].max(initial=0)), len(lengths))
          for i, k in enumerate(("inputs", "targets"))}


def warn_if_truncated(task: seqio.Task, sequence_length: dict[str, int], split: str) -> None:
  """Logs a warning when rows would cut prompts or solutions (a cut solution loses its end)."""
  for feature, (over, longest, total) in overlong_examples(task, sequence_length, split).items():
    if over:
      logging.warning(
          "%d of %d %s examples of %s have %s longer than %d tokens (longest %d) and are "
          "truncated; raise data.%s_length", over, total, split, task.name, feature,
          sequence_length[feature], longest, feature)


def decoder_examples(task_name: str, sequence_length: dict[str, int], split: str = "train",
                     pack: bool = False) -> dict[str, np.ndarray]:
  """A Task's examples as decoder rows for the trainer.

  Examples without a solution (targets that are only EOS, e.g. test problems with no human
  solution) are dropped: they would train the model to stop at once.

  Args:
    task_name: a registered Task with "inputs" and "targets".
    sequence_length: {"inputs": max prompt tokens, "targets": max solution tokens}; rows are
      inputs + targets long.
    split: the split to read.
    pack: pack several examples into a row (adds segment ids and positions).

  Returns:
    {feature: [N, L] array}: `batches.decoder_rows` over (inputs, targets), L = inputs +
    targets length, laid out for the Task's vocabulary (`vocab.decoder_start_id`).

  Raises:
    ValueError: the split has no example with a solution.
  """
  task = seqio.get_mixture_or_task(task_name)
  warn_if_truncated(task, sequence_length, split)
  ds = _with_solution(task.get_dataset(sequence_length, split=split, shuffle=False,
                                       use_cached=False))
  examples = list(ds.map(lambda ex: (ex["inputs"], ex["targets"])).as_numpy_iterator())
  if not examples:
    raise ValueError(f"task {task_name!r} split {split!r} has no example with a solution")
  vocab = task.output_features["targets"].vocabulary
  return batches.decoder_rows(examples, sequence_length["inputs"] + sequence_length["targets"],
                                 pack=pack, start_id=vocab_lib.decoder_start_id(vocab))

