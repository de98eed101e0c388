"""Sizes that depend on the data: derived from it, or checked against it, before any training.

A config may set these fields to `AUTO` (0), meaning "derive from the data":

  vocab.size                     from scratch: SentencePiece pieces for the training texts
                                 (`vocab_size`): byte fallback + about two per frequent word
  model.vocab_size               from scratch: the trained vocabulary's size, rounded up to 128
                                 (also when vocab.size is AUTO: the model follows a vocabulary
                                 trained here, whatever vocab_size the config's preset has)
  data.inputs_length             the longest train / valid prompt (few-shot prefix + template +
                                 question), so no fine-tuning row cuts a prompt
  sampling.max_new_tokens        the longest human solution (+ EOS) * 1.1, rounded up to 8: room
                                 for a sample a little longer than any human solution, and no
                                 more (a batch of samples decodes until its longest row ends,
                                 and a weak model's runaway samples run to this limit)
  data.targets_length            max(longest human solution, max_new_tokens) + EOS, so neither a
                                 human solution nor a kept sample is cut
  model.max_len                  from scratch: a fine-tuning row and the longest prompt (any
                                 split) + max_new_tokens, rounded up to 64
  base_trainer.num_train_steps   from scratch: `BASE_EPOCHS` passes over the human solutions'
                                 tokens (with their prompts, in rows of inputs_length +
                                 targets_length), within [`MIN_BASE_STEPS`, the steps of
                                 `BASE_TOKEN_BUDGET` row tokens], so the base's budget follows
                                 the data and a large data set cannot make it run for hours;
                                 with data.solution_variants on (>= 0), the whole budget
  data.solution_variants         (where the config has it) number variants per human solution
                                 (`restem_jax.data.variants`): as many as one pass of the base's
                                 steps takes besides the equation drill; -1 is off
  sampling.calculator            from scratch: on (1) where at least half of the worked solutions
                                 write `A op B = C` equations and the vocabulary writes each digit
                                 as a piece (`sampling.calculator.applies`), else off (-1); with a
                                 base checkpoint off
  restem.num_samples             N: the largest of 4, 8, 16, 32 whose samples (train problems x
                                 N x max_new_tokens decode steps) fit `SAMPLE_TOKEN_BUDGET`, at
                                 least 4: each iteration's Generate step costs about the same on
                                 any data set (a few minutes of a 2-core CPU)

Every value (derived or given) is then checked, and a misfit raises `ValueError` with one line
naming the config key, the sizes, a problem id and the fix, before any training:
  - more than `MAX_OVERLONG_FRACTION` of the train / valid prompts longer than
    data.inputs_length (their fine-tuning rows would lose the prompt's start: a run trained on
    cut prompts samples from uncut ones and scores ~0); fewer is a warning;
  - likewise human solutions (+ EOS) longer than data.targets_length (they would lose their
    answer);
  - a prompt of any split + max_new_tokens beyond the model's max_len (the sampler would refuse
    it after training); a vocabulary larger than a from-scratch model's vocab_size.
With a base checkpoint the model (vocab_size, max_len) and the vocabulary come from it: its
max_len is checked, and AUTO model fields are left alone.
"""

from __future__ import annotations

import collections
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from restem_jax.data import variants
from restem_jax.sampling import calculator

AUTO = 0
_SPECIAL_AND_BYTE_PIECES = 3 + 256  # pad / eos / unk + byte fallback (vocab.train_sentencepiece)
_MAX_VOCAB = 8192
_FREQUENT = 3  # a word seen this often gets pieces of its own
BASE_EPOCHS = 50  # passes over the human solutions when base_trainer.num_train_steps is AUTO
MIN_BASE_STEPS = 200
# Compute budgets of the AUTO counts, sized so that configs/jsonl_math.py's whole run (base,
# 3 iterations, evaluations) fits half an hour of a 2-core CPU on a few thousand problems.
BASE_TOKEN_BUDGET = 5_000_000  # row tokens (padding included) the base trains on, at most
SAMPLE_TOKEN_BUDGET = 3_000_000  # decode steps of one Generate step, at most (N >= 4 aside)
# A given data.inputs_length / targets_length may cut at most this share of the train / valid
# prompts or human solutions (with a warning); more is an error.
MAX_OVERLONG_FRACTION = 0.01
_WORD_RE = re.compile(r"[^\W\d_]+")


def vocab_size(texts: Iterable[str], requested: int = AUTO) -> int:
  """The SentencePiece size for a from-scratch vocabulary trained on `texts`.

  Args:
    texts: the vocabulary's training texts (prompt, questions, solutions).
    requested: the config's `vocab.size`; AUTO derives it.

  Returns:
    `requested`, or for AUTO: the special and byte pieces plus two pieces per word (letter run)
    seen at least 3 times (a word and the merges leading to it; digits are always single
    pieces), within [320, 8192].
  """
  if requested != AUTO:
    return int(requested)
  counts = collections.Counter(w for t in texts for w in _WORD_RE.findall(t))
  frequent = sum(1 for c in counts.values() if c >= _FREQUENT)
  return min(_MAX_VOCAB, max(320, _SPECIAL_AND_BYTE_PIECES + 2 * frequent))


def _round_up(n: int, multiple: int) -> int:
  return int(math.ceil(n / multiple) * multiple)


def _longest(pairs: Sequence[tuple[str, int]]) -> tuple[str, int]:
  return max(pairs, key=lambda p: p[1], default=("", 0))


def measure(problems: Mapping[str, Sequence[Mapping[str, Any]]], vocab) -> dict[str, Any]:
  """Token lengths of a task's prompts and human solutions.

  Args:
    problems: split -> problems as `tasks.load_problems` returns them (with "prompt_ids").
    vocab: the run's seqio vocabulary (solutions are encoded with it; EOS counted).

  Returns:
    {"prompt": {split: (id, tokens) of the longest prompt}, "solution": (id, tokens + EOS) of
    the longest train / valid human solution, "num_solutions": how many there are,
    "solution_tokens": their total tokens + EOS, "prompt_tokens": the total prompt tokens of
    those problems}.
  """
  prompt = {split: _longest([(p["id"], len(p["prompt_ids"])) for p in ps])
            for split, ps in problems.items()}
  solved = [p for split in ("train", "valid") for p in problems.get(split, ())
            if p.get("solution")]
  lengths = [(p["id"], len(vocab.encode(p["solution"])) + 1) for p in solved]
  return {"prompt": prompt, "solution": _longest(lengths), "num_solutions": len(solved),
          "solution_tokens": sum(n for _, n in lengths),
          "prompt_tokens": sum(len(p["prompt_ids"]) for p in solved),
          "row_prompt_lengths": [len(p["prompt_ids"]) for split in ("train", "valid")
                                 for p in problems.get(split, ())],
          "solution_lengths": [n for _, n in lengths]}


def _too_many(lengths: Sequence[int], limit: int) -> tuple[int, bool]:
  """(how many of `lengths` exceed `limit`, whether that is more than the tolerated share)."""
  over = sum(n > limit for n in lengths)
  return over, over > MAX_OVERLONG_FRACTION * max(1, len(lengths))


def fit(config: ml_collections.ConfigDict, problems: Mapping[str, Sequence[Mapping[str, Any]]],
        vocab, base_model=None) -> dict[str, Any]:
  """Fills the AUTO sizes of `config` in place from the data, then checks every size.

  Args:
    config: the run config (locked is fine: only existing fields are set).
    problems: split -> problems of the run's task (`tasks.load_problems`, with "prompt_ids").
    vocab: the run's seqio vocabulary.
    base_model: the base checkpoint's `ModelConfig`, or None for a from-scratch model.

  Returns:
    The sizes in effect, by config key, and the measured lengths (logged; the loop stores it).

  Raises:
    ValueError: a size does not fit the data (one line: key, sizes, problem id, fix).
  """
  m = measure(problems, vocab)
  sol_id, sol_len = m["solution"]
  row_id, row_prompt = _longest([m["prompt"][s] for s in ("train", "valid") if s in m["prompt"]])
  any_id, any_prompt = _longest(list(m["prompt"].values()))
  d, s, mc = config.data, config.sampling, config.model

  if s.max_new_tokens == AUTO:
    if not sol_len:
      raise ValueError("sampling.max_new_tokens is 0 (derive from the data) but no train or "
                       "valid problem has a solution to measure: set "
                       "--config.sampling.max_new_tokens")
    s.max_new_tokens = _round_up(int(sol_len * 1.1) + 1, 8)
  if d.inputs_length == AUTO:
    d.inputs_length = row_prompt
  if d.targets_length == AUTO:
    d.targets_length = max(sol_len, s.max_new_tokens + 1)
  if base_model is None:
    if mc.vocab_size == AUTO or (config.vocab.size == AUTO and not config.vocab.path):
      mc.vocab_size = _round_up(vocab.vocab_size, 128)
    if mc.max_len == AUTO:
      mc.max_len = _round_up(max(d.inputs_length + d.targets_length,
                                 any_prompt + s.max_new_tokens), 64)
    trainer = config.base_trainer
    if d.get("solution_variants") == AUTO and not variants.applies(
        [p for split in ("train", "valid") for p in problems.get(split, ())]):
      d.solution_variants = -1  # not equation chains (applies() logged why)
    if trainer.num_train_steps == AUTO:
      row_len = d.inputs_length + d.targets_length
      tokens = m["solution_tokens"] + m["prompt_tokens"]
      num_rows = math.ceil(tokens / row_len) if d.pack else m["num_solutions"]
      steps = math.ceil(BASE_EPOCHS * num_rows / trainer.batch_size)
      budget = BASE_TOKEN_BUDGET // (trainer.batch_size * row_len)
      # Number variants make the solutions as many as the budget can use: it is all spent.
      trainer.num_train_steps = max(MIN_BASE_STEPS, budget if d.get("solution_variants", -1)
                                    >= 0 else min(steps, budget))
    if d.get("solution_variants") == AUTO:
      # Enough variants for one pass of the base's steps, besides the equation drill's share.
      rows_tokens = config.base_trainer.num_train_steps * config.base_trainer.batch_size * (
          d.inputs_length + d.targets_length) * (1 - variants.DRILL_SHARE)
      d.solution_variants = max(1, math.ceil(
          rows_tokens / (m["solution_tokens"] + m["prompt_tokens"])) - 1)
    if s.get("calculator") == AUTO:
      s.calculator = 1 if calculator.applies(problems, vocab, mc.vocab_size) else -1
    model_vocab, max_len, where = mc.vocab_size, mc.max_len, "model"
  else:
    if s.get("calculator") == AUTO:
      logging.info("calculator: off (a base checkpoint writes its own arithmetic)")
      s.calculator = -1
    model_vocab, max_len, where = base_model.vocab_size, base_model.max_len, "the base checkpoint"

  r = config.restem
  if r.num_samples == AUTO:
    decode_steps = max(1, len(problems.get("train", ()))) * s.max_new_tokens
    r.num_samples = max([4] + [n for n in (8, 16, 32) if n * decode_steps <= SAMPLE_TOKEN_BUDGET])

  fix = "or set it to 0 to derive it from the data"
  # A given length that cuts a few outliers of a real data set (MATH's longest solutions) costs
  # those examples a cut, said in a warning; one that cuts more ruins the run and stops it.
  over, fatal = _too_many(m["row_prompt_lengths"], d.inputs_length)
  if fatal:
    raise ValueError(f"data.inputs_length {d.inputs_length} is shorter than the prompt of "
                     f"problem {row_id!r} ({row_prompt} tokens, few-shot examples included) "
                     f"and {over - 1} more: raise --config.data.inputs_length, lower "
                     f"data.num_shots, {fix}")
  if over:
    logging.warning("%d of %d train/valid prompts are longer than data.inputs_length %d (longest "
                    "%r: %d tokens): their fine-tuning rows lose the prompt's start", over,
                    len(m["row_prompt_lengths"]), d.inputs_length, row_id, row_prompt)
  over, fatal = _too_many(m["solution_lengths"], d.targets_length)
  if fatal:
    raise ValueError(f"data.targets_length {d.targets_length} is shorter than the solution of "
                     f"problem {sol_id!r} ({sol_len} tokens with EOS) and {over - 1} more: raise "
                     f"--config.data.targets_length {fix}")
  if over:
    logging.warning("%d of %d human solutions are longer than data.targets_length %d (longest "
                    "%r: %d tokens): they are cut at that length", over,
                    len(m["solution_lengths"]), d.targets_length, sol_id, sol_len)
  if any_prompt + s.max_new_tokens > max_len:
    raise ValueError(f"the prompt of problem {any_id!r} ({any_prompt} tokens) + "
                     f"sampling.max_new_tokens {s.max_new_tokens} exceed the max_len {max_len} "
                     f"of {where}: lower max_new_tokens or data.num_shots"
                     + (f", raise --config.model.max_len {fix}" if base_model is None else ""))
  if s.get("calculator", -1) > 0:
    calculator.table(vocab, model_vocab)  # a vocabulary it cannot read: one line, now
  if vocab.vocab_size > model_vocab:
    raise ValueError(f"the vocabulary has {vocab.vocab_size} pieces, more than "
                     f"{where}.vocab_size {model_vocab}: raise --config.model.vocab_size {fix}")
  if base_model is None and model_vocab > 2 * _round_up(vocab.vocab_size, 128):
    logging.warning("model.vocab_size %d is over twice the vocabulary's %d pieces: the extra "
                    "rows are never used (model.vocab_size=0 derives it)", model_vocab,
                    vocab.vocab_size)
  sizes = {"vocab.pieces": int(vocab.vocab_size), "model.vocab_size": int(model_vocab),
           "model.max_len": int(max_len), "data.inputs_length": int(d.inputs_length),
           "data.targets_length": int(d.targets_length),
           "sampling.max_new_tokens": int(s.max_new_tokens),
           "base_trainer.num_train_steps": int(config.base_trainer.num_train_steps),
           "restem.num_samples": int(r.num_samples),
           "data.solution_variants": int(d.get("solution_variants", -1)),
           "sampling.calculator": int(s.get("calculator", -1)),
           "longest_prompt": [any_id, any_prompt], "longest_solution": [sol_id, sol_len],
           "num_solutions": m["num_solutions"]}
  logging.info("sizes fitted to the data: %s", sizes)
  return sizes
