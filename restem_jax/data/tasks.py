"""seqio Tasks for every data set, registered for the paths a config gives.

    name = tasks.register_task("math", vocab="vocab.model", data_dir="gs://bucket/tfds")
    ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 1024, "targets": 512}, "test")

Each Task has the splits train / valid / test (HumanEval: test only) and examples

  id                      str    the problem id (DESIGN.md "Scoring CLI")
  inputs                  int32  prompt tokens: few-shot examples + the question, no EOS
  targets                 int32  the human solution's tokens + EOS (just EOS where none exists)
  inputs_pretokenized, targets_pretokenized   str
  answer, tests, level, subject, ...          str  `records.FIELDS`: what the reward needs
                                                   (gold answer / unit tests) and breakdowns

Registration is idempotent: registering a name again replaces the Task (so a config's paths, not
import-time globals, decide what a name reads). Inputs are read and validated when the Task is
registered (JSONL files, generated tasks) or checked to be prepared (TFDS), before any compute.
Prompts longer than `sequence_length["inputs"]` lose their *first* tokens (the oldest few-shot
example), never the question at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import string
from collections.abc import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf
from etils import epath

from restem_jax.data import fewshot
from restem_jax.data import records
from restem_jax.data import sources
from restem_jax.data import vocab as vocab_lib
from restem_jax.loop import metrics
from restem_jax import rewards


@dataclasses.dataclass(frozen=True)
class Kind:
  """Defaults of a data set kind.

  Attributes:
    reward: the reward registry name that scores a completion (`restem_jax.rewards`).
    prompt: the default few-shot prompt set (`fewshot.BUILTIN`).
    num_shots: default number of few-shot examples.
    options: the keyword options `register_task` accepts for this kind.
  """
  reward: str
  prompt: str
  num_shots: int
  options: tuple[str, ...]


KINDS = {
    "math": Kind("math", "math_minerva_4shot", 4, ("data_dir", "valid_size")),
    "gsm8k": Kind("gsm8k", "gsm8k_cot_8shot", 8, ("data_dir", "manual_dir", "valid_size")),
    "apps": Kind("apps", "apps_3shot", 3, ("data_dir", "valid_size", "difficulties")),
    "humaneval": Kind("humaneval", "humaneval_0shot", 0, ("data_dir",)),
    "jsonl": Kind("math", "qa_0shot", 0, ("train_path", "valid_path", "test_path",
                                           "valid_size")),
    # Generic code problems (HumanEval or MBPP style, `records.read_code_file`); the default
    # prompt follows the files' style (`default_prompt`).
    "jsonl_code": Kind("humaneval", "humaneval_0shot", 0, ("train_path", "valid_path",
                                                           "test_path", "valid_size")),
    "mbpp": Kind("humaneval", "mbpp_0shot", 0, ("data_dir",)),
    # The embedded tasks train from-scratch models, so their default prompt is the bare
    # template: few-shot examples would only lengthen every sequence.
    "arith": Kind("math", "arith_3shot", 0, ("seed", "sizes", "knobs")),
    "prog": Kind("humaneval", "prog_2shot", 0, ("seed", "sizes", "knobs")),
}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """A registered Task's settings (the loop reads the reward name and the stop strings)."""
  kind: str
  reward: str
  prompt: fewshot.PromptSet
  num_shots: int

  @property
  def stop(self) -> tuple[str, ...]:
    """Where a completion ends when a model runs on into a new example."""
    return self.prompt.stop


_INFO: dict[str, TaskInfo] = {}  # filled by register_task
# Prompt sets shipped beside this module that `fewshot.BUILTIN` does not list.
_EXTRA_PROMPTS = {"mbpp_0shot": epath.Path(__file__).parent / "mbpp_0shot.json"}


def load_prompt(name_or_path: str) -> fewshot.PromptSet:
  """`fewshot.load`, also knowing the prompt sets in `_EXTRA_PROMPTS` by name."""
  return fewshot.load(str(_EXTRA_PROMPTS.get(name_or_path, name_or_path)))


def default_prompt(kind: str, options: Mapping) -> str:
  """The kind's default prompt set; jsonl_code: by its files' style (MBPP programs are whole
  programs, so they end at other places than HumanEval function bodies)."""
  if kind == "jsonl_code" and sources.code_style(options) == "mbpp":
    return "mbpp_0shot"
  return KINDS[kind].prompt


def output_features(vocab: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """The tokenized features: a prompt the model continues (no EOS), a target that ends."""
  return {"inputs": seqio.Feature(vocab, add_eos=False, required=True),
          "targets": seqio.Feature(vocab, add_eos=True, required=False)}


def as_vocab(vocab) -> seqio.Vocabulary:
  """A seqio vocabulary, given one or the path of a SentencePiece model."""
  return vocab if isinstance(vocab, seqio.Vocabulary) else vocab_lib.load_vocab(vocab)


# ----------------------------------------------------------------------------- preprocessors


def build_prompt(dataset: tf.data.Dataset, prefix: str, template: str) -> tf.data.Dataset:
  """Adds "inputs" = few-shot prefix + the template filled from the record, "targets" = solution.

  Args:
    dataset: records (`records.FIELDS`, all strings).
    prefix: the few-shot examples (`fewshot.PromptSet.prefix`).
    template: the prompt template with {field} placeholders.

  Returns:
    The records with "inputs" and "targets" text added.
  """
  parts = list(string.Formatter().parse(template))

  def fn(ex):
    pieces = [tf.constant(prefix)]
    for literal, field, _, _ in parts:
      pieces.append(tf.constant(literal))
      if field:
        pieces.append(ex[field])
    return {**ex, "inputs": tf.strings.join(pieces), "targets": ex["solution"]}

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def trim_inputs_left(dataset: tf.data.Dataset, sequence_length=None,
                     prefix: Sequence[int] = ()) -> tf.data.Dataset:
  """Keeps the last prompt tokens (the question is at the end) and puts `prefix` first.

  `prefix` is the vocabulary's BOS (`vocab.prompt_prefix`) and counts among the
  `sequence_length["inputs"]` tokens kept; without a length the whole prompt is kept.
  """
  if not sequence_length or sequence_length.get("inputs") is None:
    if not prefix:
      return dataset
    keep = None
  else:
    keep = max(sequence_length["inputs"] - len(prefix), 0)
  head = tf.constant(list(prefix), tf.int32)

  def fn(ex):
    inputs = ex["inputs"]
    if keep is not None:
      inputs = inputs[tf.maximum(tf.size(inputs) - keep, 0):]
    return {**ex, "inputs": tf.concat([tf.cast(head, inputs.dtype), inputs], 0)}

  return dataset.map(fn)


# ----------------------------------------------------------------------------- postprocess, metrics


def reward_problem(kind: str, record: Mapping[str, str], prompt: str) -> dict[str, str]:
  """The problem dict a reward takes: the record, the prompt, and the code tests unpacked.

  The math rewards read "answer"; the APPS reward reads "tests" (the input_output JSON); the
  HumanEval reward runs "prompt" + completion against "test" / "entry_point". The prompt is the
  one the model continued (with any few-shot examples, which are complete functions too).

  Args:
    kind: the data set kind.
    record: the problem's `records.FIELDS`.
    prompt: the prompt text the completion continues.

  Returns:
    A new dict: the record plus "prompt" (plus "test" and "entry_point" for HumanEval style).
  """
  problem = {**record, "prompt": prompt}
  if KINDS[kind].reward == "humaneval":
    problem.update(json.loads(record["tests"]))
  return problem


def postprocess(output, example=None, is_target=False, *, kind: str, stop: Sequence[str] = ()):
  """seqio postprocess_fn: a completion is cut at the prompt's stop strings; a target becomes
  the problem dict the metric hands to the reward (`reward_problem`)."""
  if is_target:
    record = {f: _to_str(example[f]) for f in records.FIELDS}
    return reward_problem(kind, record, _to_str(example["inputs_pretokenized"]))
  text = _to_str(output)
  cut = min([i for i in (text.find(s) for s in stop) if i >= 0], default=len(text))
  return text[:cut]


def _to_str(x) -> str:
  if isinstance(x, (bytes, np.bytes_)):
    return x.decode("utf-8")
  return str(x)


def reward_accuracy(targets: Sequence[Mapping[str, str]], predictions: Sequence[str], *,
                    reward: str) -> dict[str, float]:
  """seqio metric_fn: the fraction of predictions that the task's reward scores 1.

  Args:
    targets: problem dicts (from `postprocess(..., is_target=True)`).
    predictions: completions (postprocessed).
    reward: the reward registry name (`restem_jax.rewards.get`).

  Returns:
    {"accuracy": fraction correct (greedy decoding makes this the paper's test accuracy)}.
  """
  verdicts = rewards.get(reward).score_batch(list(targets), list(predictions))
  return {"accuracy": metrics.accuracy([v.passed for v in verdicts])}


# ----------------------------------------------------------------------------- registration


def register_task(kind: str, vocab, *, name: str | None = None, prompt: str | None = None,
                  num_shots: int | None = None, **options) -> str:
  """Registers (or re-registers) the seqio Task for a data set kind and a config's paths.

  Args:
    kind: one of `KINDS`: "math", "gsm8k", "apps", "humaneval", "mbpp", "jsonl",
      "jsonl_code", "arith", "prog".
    vocab: a `seqio.Vocabulary` or the path of a SentencePiece model.
    name: the Task name; default "restem_KIND".
    prompt: a few-shot prompt set name or file (default: the kind's).
    num_shots: how many few-shot examples to put before each question (default: the kind's).
    **options: the kind's options (`KINDS[kind].options`):
      data_dir     TFDS data dir where `prepare` wrote the data set (math, apps, humaneval;
                   gsm8k: the catalog `gsm8k` if prepared there)
      manual_dir   gsm8k: directory with train.jsonl / test.jsonl when not prepared
      train_path, valid_path, test_path   jsonl, jsonl_code: generic JSONL files (valid
                   optional); jsonl_code: HumanEval or MBPP style, one style in all three
      valid_size   problems held out of train for validation (default 10%, at most 500)
      difficulties apps: difficulty levels kept (default ("introductory",))
      seed, sizes, knobs   arith/prog: generator seed, {split: count} (splits not given take
                   `sources.DEFAULT_SIZES`), difficulty knobs (`ArithConfig` / `ProgConfig`)

  Returns:
    The registered Task name.

  Raises:
    ValueError: unknown kind or option, or invalid input data (with file:line where it applies).
    FileNotFoundError: a data set is neither prepared nor at the given path (the message names
      the expected files, where they are published, and the prepare command).
  """
  if kind not in KINDS:
    raise ValueError(f"unknown data set kind {kind!r}; known: {sorted(KINDS)}")
  spec = KINDS[kind]
  unknown = set(options) - set(spec.options)
  if unknown:
    raise ValueError(f"options {sorted(unknown)} do not apply to {kind!r}; it takes "
                     f"{list(spec.options)}")
  prompt_set = load_prompt(prompt or default_prompt(kind, options))
  num_shots = spec.num_shots if num_shots is None else num_shots
  source, source_preprocessors = sources.source_and_preprocessors(kind, options)
  name = name or f"restem_{kind}"
  vocab = as_vocab(vocab)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source, output_features=output_features(vocab),
      preprocessors=[
          *source_preprocessors,
          functools.partial(build_prompt, prefix=prompt_set.prefix(num_shots),
                            template=prompt_set.template),
          seqio.preprocessors.tokenize,
          functools.partial(trim_inputs_left, prefix=vocab_lib.prompt_prefix(vocab)),
          seqio.preprocessors.append_eos_after_trim,
      ],
      postprocess_fn=functools.partial(postprocess, kind=kind, stop=prompt_set.stop),
      metric_fns=[functools.partial(reward_accuracy, reward=spec.reward)])
  _INFO[name] = TaskInfo(kind=kind, reward=spec.reward, prompt=prompt_set, num_shots=num_shots)
  return name


def reward_name(kind: str) -> str:
  """The reward registry name that scores completions of a data set kind."""
  return KINDS[kind].reward


def task_info(name: str) -> TaskInfo:
  """What `register_task` registered under `name`: kind, reward, prompt set (stop strings)."""
  if name not in _INFO:
    raise KeyError(f"{name!r} was not registered by register_task; registered: {sorted(_INFO)}")
  return _INFO[name]


def load_problems(name: str, split: str) -> list[dict]:
  """A Task's problems as Python dicts, in the source's order (no shuffling, no trimming).

  Args:
    name: a registered Task name.
    split: "train", "valid" or "test".

  Returns:
    Problem dicts the task's reward takes (`reward_problem`), plus "prompt_ids" (list[int]):
    [{"id", "prompt", "prompt_ids", "question", "answer", "solution", "tests", ...}].
  """
  kind = task_info(name).kind
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False)
  out = []
  for ex in ds.as_numpy_iterator():
    record = {f: _to_str(ex[f]) for f in records.FIELDS}
    problem = reward_problem(kind, record, _to_str(ex["inputs_pretokenized"]))
    problem["prompt_ids"] = [int(t) for t in ex["inputs"]]
    out.append(problem)
  return out


def training_texts(kind: str, prompt: str | None = None, **options) -> list[str]:
  """Text to train a from-scratch vocabulary on: the task's prompt and its train problems.

  Args:
    kind: a data set kind (see `KINDS`).
    prompt: the prompt set whose template and examples are included (default: the kind's).
    **options: the kind's source options, as for `register_task`.

  Returns:
    Strings: the prompt's examples and template text, then each train problem's question,
    solution and starter code (HumanEval, which has only a test split: its test problems).
  """
  if kind not in KINDS:
    raise ValueError(f"unknown data set kind {kind!r}; known: {sorted(KINDS)}")
  prompt_set = load_prompt(prompt or default_prompt(kind, options))
  texts = [prompt_set.prefix(len(prompt_set.examples)) +
           prompt_set.template.format(**{f: "" for f in prompt_set.fields})]
  source, preprocessors = sources.source_and_preprocessors(kind, options)
  ds = source.get_dataset("test" if kind == "humaneval" else "train", shuffle=False)
  for preprocessor in preprocessors:
    ds = preprocessor(ds)
  for ex in ds.as_numpy_iterator():
    texts.extend(t for t in (_to_str(ex[f]) for f in ("question", "solution", "starter_code"))
                 if t)
  return texts
