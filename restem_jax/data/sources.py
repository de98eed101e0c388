"""Where a Task's problems come from: prepared TFDS data sets, JSONL files, the generators.

Every source yields records with `records.FIELDS`. Published data sets prepared with TFDS are
read with `seqio.TfdsDataSource`; JSONL files and the embedded tasks are read (and validated)
into memory when the Task is registered, and served by a `seqio.FunctionDataSource`.

Validation problems: a data set without a validation split holds out part of train, by default
10% (at most 500, at least 1): for TFDS the last slice of the prepared train split (whose order
TFDS fixed when preparing), for files the last problems in id-hash order. MBPP has its own
validation split. A prepared data set without a train split (MATH-500) serves test only.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import seqio
import tensorflow as tf
from etils import epath

from restem_jax.data import arith as arith_lib
from restem_jax.data import prog as prog_lib
from restem_jax.data import records
from restem_jax.data import tfds_builders

DEFAULT_SIZES = {"train": 1000, "valid": 100, "test": 200}  # embedded tasks
_MAX_VALID = 500


def keep_levels(dataset: tf.data.Dataset, levels: Sequence[str]) -> tf.data.Dataset:
  """Keeps records whose "level" is one of `levels` (e.g. APPS "introductory")."""
  allowed = tf.constant(list(levels))
  return dataset.filter(lambda ex: tf.reduce_any(tf.equal(ex["level"], allowed)))


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


def memory_source(by_split: Mapping[str, list[dict[str, str]]]) -> seqio.FunctionDataSource:
  """A seqio source serving in-memory records, one list per split (a split may be empty)."""
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


def hold_out(train: list[dict], valid_size: int | None) -> tuple[list[dict], list[dict]]:
  """Splits off a validation slice from train: the last `valid_size` in id-hash order."""
  n = valid_count(len(train), valid_size)
  ordered = sorted(train, key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())
  return ordered[:len(ordered) - n], ordered[len(ordered) - n:]


def valid_count(num_train: int, valid_size: int | None) -> int:
  """How many train problems to hold out: `valid_size`, or by default 10% in [1, 500]."""
  n = min(_MAX_VALID, max(1, num_train // 10)) if valid_size is None else int(valid_size)
  if not 1 <= n < num_train:
    raise ValueError(f"valid_size {n} must be in [1, {num_train}) for {num_train} train "
                     f"problems: the run selects checkpoints on the validation split")
  return n


def tfds_source(kind: str, data_dir, valid_size: int | None) -> seqio.TfdsDataSource:
  """The prepared TFDS data set `kind` under `data_dir`, with valid held out of train."""
  name = tfds_builders.tfds_name(kind)
  splits = {"test": "test"}
  loader = seqio.utils.LazyTfdsLoader(name, data_dir=str(data_dir))
  prepared = set(loader.info.splits.keys())
  if kind == "mbpp":
    splits.update(train="train", valid="validation")
  elif kind != "humaneval" and "train" in prepared:
    n = valid_count(loader.size("train"), valid_size)
    # A TFDS slice of the prepared train split (whose order TFDS fixes when preparing).
    splits.update(train=f"train[:{loader.size('train') - n}]",
                  valid=f"train[{loader.size('train') - n}:]")
  splits = {k: v for k, v in splits.items() if v.split("[")[0] in prepared}
  return seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=str(data_dir), splits=splits,
                              read_only=True)


def code_style(opts: Mapping[str, Any]) -> str:
  """"humaneval" or "mbpp": the one style of a jsonl_code task's files (prompts differ)."""
  styles = {opts[k]: records.code_style(opts[k]) for k in ("train_path", "valid_path",
                                                            "test_path") if opts.get(k)}
  if len(set(styles.values())) > 1:
    raise ValueError(f"the code problem files mix HumanEval and MBPP style ({styles}): use one "
                     "style for train, valid and test")
  if not styles:
    raise ValueError("the jsonl_code task needs train_path and test_path (valid_path optional)")
  return next(iter(styles.values()))


def source_and_preprocessors(kind: str, opts: Mapping[str, Any]):
  """The seqio source of a data set kind, read and validated (or checked prepared) now.

  Args:
    kind: a data set kind (`tasks.KINDS`).
    opts: the kind's options (see `tasks.register_task`).

  Returns:
    (source, preprocessors that turn its examples into `records.FIELDS` records).
  """
  if kind in ("math", "apps", "humaneval", "mbpp"):
    if not tfds_builders.is_prepared(kind, opts.get("data_dir")):
      raise FileNotFoundError(records.not_prepared_message(kind, opts.get("data_dir")))
    pre = [functools.partial(keep_levels, levels=tuple(opts.get("difficulties") or
                                                      ("introductory",)))] \
        if kind == "apps" else []
    return tfds_source(kind, opts["data_dir"], opts.get("valid_size")), pre
  if kind == "gsm8k":
    if tfds_builders.is_prepared("gsm8k", opts.get("data_dir")):
      return tfds_source("gsm8k", opts["data_dir"], opts.get("valid_size")), [
          gsm8k_catalog_to_records]
    if opts.get("manual_dir") is None:
      raise FileNotFoundError(records.not_prepared_message("gsm8k", opts.get("data_dir")))
    manual_dir = epath.Path(opts["manual_dir"])
    train, valid = hold_out(records.read("gsm8k", manual_dir, "train"), opts.get("valid_size"))
    return memory_source({"train": train, "valid": valid,
                           "test": records.read("gsm8k", manual_dir, "test")}), []
  if kind in ("jsonl", "jsonl_code"):
    if opts.get("train_path") is None or opts.get("test_path") is None:
      raise ValueError(f"the {kind} task needs train_path and test_path (valid_path optional)")
    read = records.read_generic_file if kind == "jsonl" else records.read_code_file
    if kind == "jsonl_code":
      code_style(opts)
    train = read(opts["train_path"])
    if opts.get("valid_path"):
      valid = read(opts["valid_path"])
    else:
      train, valid = hold_out(train, opts.get("valid_size"))
    by_split = {"train": train, "valid": valid, "test": read(opts["test_path"])}
    records.check_disjoint(by_split)
    return memory_source(by_split), []
  sizes = {**DEFAULT_SIZES, **(opts.get("sizes") or {})}
  knobs = dict(opts.get("knobs") or {})
  if kind == "arith":
    problems = arith_lib.generate(sizes, opts.get("seed", 0),
                                  arith_lib.ArithConfig.from_dict(knobs))
    by_split = {s: [records.from_generic(p) for p in ps] for s, ps in problems.items()}
  else:
    problems = prog_lib.generate(sizes, opts.get("seed", 0), prog_lib.ProgConfig.from_dict(knobs))
    by_split = {s: [records.from_prog(p) for p in ps] for s, ps in problems.items()}
  return memory_source(by_split), []
