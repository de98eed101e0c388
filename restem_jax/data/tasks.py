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
import hashlib
import json
import string
from collections.abc import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf
from etils import epath

from restem_jax import metrics, rewards
from restem_jax import vocab as vocab_lib
from restem_jax.data import arith as arith_lib
from restem_jax.data import fewshot
from restem_jax.data import prog as prog_lib
from restem_jax.data import records
from restem_jax.data import tfds_builders


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
    # The embedded tasks train from-scratch models, so their default prompt is the bare
    # template: few-shot examples would only lengthen every sequence.
    "arith": Kind("math", "arith_3shot", 0, ("seed", "sizes", "knobs")),
    "prog": Kind("humaneval", "prog_2shot", 0, ("seed", "sizes", "knobs")),
}
DEFAULT_SIZES = {"train": 1000, "valid": 100, "test": 200}


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
_MAX_VALID = 500  # default held-out slice: 10% of train, at most this many


def output_features(vocab: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """The tokenized features: a prompt the model continues (no EOS), a target that ends."""
  return {"inputs": seqio.Feature(vocab, add_eos=False, required=True),
          "targets": seqio.Feature(vocab, add_eos=True, required=False)}


def _as_vocab(vocab) -> seqio.Vocabulary:
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


def keep_levels(dataset: tf.data.Dataset, levels: Sequence[str]) -> tf.data.Dataset:
  """Keeps records whose "level" is one of `levels` (e.g. APPS "introductory")."""
  allowed = tf.constant(list(levels))
  return dataset.filter(lambda ex: tf.reduce_any(tf.equal(ex["level"], allowed)))


def trim_inputs_left(dataset: tf.data.Dataset, sequence_length=None) -> tf.data.Dataset:
  """Keeps the last `sequence_length["inputs"]` prompt tokens: the question is at the end."""
  if not sequence_length or sequence_length.get("inputs") is None:
    return dataset
  n = sequence_length["inputs"]
  return dataset.map(lambda ex: {**ex, "inputs": ex["inputs"][-n:]})


def gsm8k_catalog_to_records(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Maps TFDS catalog `gsm8k` examples to `records.FIELDS`.

  The catalog examples carry no id or line number, so the id is a fingerprint of the question:
  stable for a given data set, though not the line-number id the JSONL files get.
  """
  def fn(ex):
    fingerprint = tf.strings.to_hash_bucket_fast(ex["question"], 2**62)
    record = {f: tf.constant("") for f in records.FIELDS}
    record.update(
        id=tf.strings.join(["gsm8k/", tf.strings.as_string(fingerprint)]),
        question=ex["question"], answer=tf.strings.strip(ex["short_answer"]),
        solution=tf.strings.regex_replace(ex["answer"], records.GSM8K_CALC_RE, ""))
    return record
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


# ----------------------------------------------------------------------------- sources


def _memory_source(by_split: Mapping[str, list[dict[str, str]]]) -> seqio.FunctionDataSource:
  columns = {split: {f: [r[f] for r in recs] for f in records.FIELDS}
             for split, recs in by_split.items()}

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed  # in memory: seqio's shuffle buffer does the shuffling
    cols = columns[split]
    if not cols["id"]:
      return tf.data.Dataset.from_tensor_slices(
          {f: tf.constant([], tf.string) for f in records.FIELDS})
    return tf.data.Dataset.from_tensor_slices(cols)

  return seqio.FunctionDataSource(
      dataset_fn, splits=list(by_split),
      num_input_examples={s: len(r) for s, r in by_split.items()})


def _hold_out(train: list[dict], valid_size: int | None) -> tuple[list[dict], list[dict]]:
  """Splits off a validation slice from train: the last `valid_size` in id-hash order."""
  n = _valid_count(len(train), valid_size)
  ordered = sorted(train, key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())
  return ordered[:len(ordered) - n], ordered[len(ordered) - n:]


def _valid_count(num_train: int, valid_size: int | None) -> int:
  n = min(_MAX_VALID, max(1, num_train // 10)) if valid_size is None else int(valid_size)
  if not 1 <= n < num_train:
    raise ValueError(f"valid_size {n} must be in [1, {num_train}) for {num_train} train "
                     f"problems: the run selects checkpoints on the validation split")
  return n


def _tfds_source(kind: str, data_dir, valid_size: int | None) -> seqio.TfdsDataSource:
  name = tfds_builders.tfds_name(kind)
  splits = {"test": "test"}
  if kind != "humaneval":
    loader = seqio.utils.LazyTfdsLoader(name, data_dir=str(data_dir))
    n = _valid_count(loader.size("train"), valid_size)
    # A TFDS slice of the prepared train split (whose order TFDS fixes when preparing).
    splits.update(train=f"train[:{loader.size('train') - n}]",
                  valid=f"train[{loader.size('train') - n}:]")
  return seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=str(data_dir), splits=splits,
                              read_only=True)


def _source_and_preprocessors(kind: str, opts: dict):
  """(seqio source, preprocessors that produce records.FIELDS) for a kind and its options."""
  if kind in ("math", "apps", "humaneval"):
    if not tfds_builders.is_prepared(kind, opts.get("data_dir")):
      raise FileNotFoundError(records.not_prepared_message(kind, opts.get("data_dir")))
    pre = [functools.partial(keep_levels, levels=tuple(opts.get("difficulties") or
                                                      ("introductory",)))] \
        if kind == "apps" else []
    return _tfds_source(kind, opts["data_dir"], opts.get("valid_size")), pre
  if kind == "gsm8k":
    if tfds_builders.is_prepared("gsm8k", opts.get("data_dir")):
      return _tfds_source("gsm8k", opts["data_dir"], opts.get("valid_size")), [
          gsm8k_catalog_to_records]
    if opts.get("manual_dir") is None:
      raise FileNotFoundError(records.not_prepared_message("gsm8k", opts.get("data_dir")))
    manual_dir = epath.Path(opts["manual_dir"])
    train, valid = _hold_out(records.read("gsm8k", manual_dir, "train"), opts.get("valid_size"))
    return _memory_source({"train": train, "valid": valid,
                           "test": records.read("gsm8k", manual_dir, "test")}), []
  if kind == "jsonl":
    if opts.get("train_path") is None or opts.get("test_path") is None:
      raise ValueError("the jsonl task needs train_path and test_path (valid_path optional)")
    train = records.read_jsonl(opts["train_path"])
    if opts.get("valid_path"):
      valid = records.read_jsonl(opts["valid_path"])
    else:
      train, valid = _hold_out(train, opts.get("valid_size"))
    by_split = {"train": train, "valid": valid, "test": records.read_jsonl(opts["test_path"])}
    records.check_disjoint(by_split)
    return _memory_source(by_split), []
  sizes = dict(opts.get("sizes") or DEFAULT_SIZES)
  knobs = dict(opts.get("knobs") or {})
  if kind == "arith":
    problems = arith_lib.generate(sizes, opts.get("seed", 0),
                                  arith_lib.ArithConfig.from_dict(knobs))
    by_split = {s: [records.from_generic(p) for p in ps] for s, ps in problems.items()}
  else:
    problems = prog_lib.generate(sizes, opts.get("seed", 0), prog_lib.ProgConfig.from_dict(knobs))
    by_split = {s: [records.from_prog(p) for p in ps] for s, ps in problems.items()}
  return _memory_source(by_split), []


# ----------------------------------------------------------------------------- registration


def register_task(kind: str, vocab, *, name: str | None = None, prompt: str | None = None,
                  num_shots: int | None = None, **options) -> str:
  """Registers (or re-registers) the seqio Task for a data set kind and a config's paths.

  Args:
    kind: one of `KINDS`: "math", "gsm8k", "apps", "humaneval", "jsonl", "arith", "prog".
    vocab: a `seqio.Vocabulary` or the path of a SentencePiece model.
    name: the Task name; default "restem_KIND".
    prompt: a few-shot prompt set name or file (default: the kind's).
    num_shots: how many few-shot examples to put before each question (default: the kind's).
    **options: the kind's options (`KINDS[kind].options`):
      data_dir     TFDS data dir where `prepare` wrote the data set (math, apps, humaneval;
                   gsm8k: the catalog `gsm8k` if prepared there)
      manual_dir   gsm8k: directory with train.jsonl / test.jsonl when not prepared
      train_path, valid_path, test_path   jsonl: generic JSONL files (valid optional)
      valid_size   problems held out of train for validation (default 10%, at most 500)
      difficulties apps: difficulty levels kept (default ("introductory",))
      seed, sizes, knobs   arith/prog: generator seed, {split: count}, difficulty knobs

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
  prompt_set = fewshot.load(prompt or spec.prompt)
  num_shots = spec.num_shots if num_shots is None else num_shots
  source, source_preprocessors = _source_and_preprocessors(kind, options)
  name = name or f"restem_{kind}"
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source, output_features=output_features(_as_vocab(vocab)),
      preprocessors=[
          *source_preprocessors,
          functools.partial(build_prompt, prefix=prompt_set.prefix(num_shots),
                            template=prompt_set.template),
          seqio.preprocessors.tokenize,
          trim_inputs_left,
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


def dump_problems(problems: Sequence[Mapping], path: epath.PathLike) -> epath.Path:
  """Writes problems from `load_problems` as the Sampling CLI's prompts JSONL ({"id","prompt"})."""
  return arith_lib.write_jsonl(
      [{"id": p["id"], "prompt": p["prompt"]} for p in problems], path)



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
  prompt_set = fewshot.load(prompt or KINDS[kind].prompt)
  texts = [prompt_set.prefix(len(prompt_set.examples)) +
           prompt_set.template.format(**{f: "" for f in prompt_set.fields})]
  source, preprocessors = _source_and_preprocessors(kind, options)
  ds = source.get_dataset("test" if kind == "humaneval" else "train", shuffle=False)
  for preprocessor in preprocessors:
    ds = preprocessor(ds)
  for ex in ds.as_numpy_iterator():
    texts.extend(t for t in (_to_str(ex[f]) for f in ("question", "solution", "starter_code"))
                 if t)
  return texts
