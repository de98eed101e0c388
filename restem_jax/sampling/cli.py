r"""Samples continuations of prompts from a model checkpoint (like T5X's infer).

  python -m restem_jax.sample --checkpoint=DIR --prompts=FILE.jsonl --out=FILE.jsonl \
      [--num_samples=N --temperature=T --top_k=K --top_p=P --max_new_tokens=M --seed=S \
       --stop='\n\n' --batch_size=B --mesh=DATA,FSDP,MODEL]

The checkpoint directory (`checkpoints.save`) carries the model config and the vocabulary. Each
prompt line is {"id": ..., "prompt": "text"} (encoded with the vocabulary's BOS first where its
tokenizer adds one) or {"id": ..., "prompt_ids": [token ids]} (used as they are); a malformed
line is an error naming FILE:LINE. Each output line is a sample record (`file_io`: "id",
"sample_index", "text", "tokens", "finish_reason", "logprob"), in prompt order then sample
order. Temperature 0 is greedy. A prompt that does not fit is an error naming its id and both
lengths; nothing is truncated.
"""

from __future__ import annotations

import logging
import sys

from absl import app
from absl import flags
from etils import epath

from restem_jax import cli
from restem_jax import file_io

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model checkpoint directory.",
                                  required=True)
_PROMPTS = flags.DEFINE_string("prompts", None, "JSONL of {id, prompt | prompt_ids}.",
                               required=True)
_OUT = flags.DEFINE_string("out", None, "Output JSONL.", required=True)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.7, "Softmax temperature; 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 40, "Sample among the k most likely tokens; 0: all.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass; 1: off.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Most tokens per sample.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every sample's key.")
_ITERATION = flags.DEFINE_integer("iteration", 0, "Folded into every sample's key.")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop string (repeatable); Python escapes such "
                                  "as \\n are decoded.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Rows decoded together.")
_MESH = flags.DEFINE_list("mesh", ["-1", "1", "1"], "Mesh shape (data, fsdp, model).")
_CALCULATOR = flags.DEFINE_bool(
    "calculator", False, "The number written right after `A op B =` is the exact value "
    "(restem_jax/sampling/calculator.py), as a run with sampling.calculator on samples.")
cli.define_debug_flag()


def read_prompts(path: epath.PathLike, vocab) -> tuple[list, list[list[int]]]:
  """Reads the prompts file: (ids, token ids), encoding text prompts with `vocab`."""
  from restem_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top (TensorFlow)
  ids, prompts = [], []
  for number, row in file_io.iter_jsonl(path):
    where = f"{path}:{number}"
    if "id" not in row:
      raise ValueError(f"{where}: a prompt line needs an 'id'")
    if ("prompt" in row) == ("prompt_ids" in row):
      raise ValueError(f"{where}: give exactly one of 'prompt' (text) and 'prompt_ids'")
    if "prompt" in row:
      if vocab is None:
        raise ValueError(f"{where}: a text prompt needs a vocabulary, and the checkpoint has "
                         "none; give 'prompt_ids'")
      prompts.append([*vocab_lib.prompt_prefix(vocab), *vocab.encode(row["prompt"])])
    else:
      prompts.append([int(t) for t in row["prompt_ids"]])
    ids.append(row["id"])
  return ids, prompts


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.check_checkpoint(_CHECKPOINT.value, "--checkpoint")
  if not epath.Path(_PROMPTS.value).exists():
    raise cli.UserError(f"--prompts: {_PROMPTS.value} does not exist")
  try:
    _sample()
  except ValueError as e:  # bad input (too-long prompt, malformed line): the message says what
    if isinstance(e, cli.UserError):
      raise
    raise cli.UserError(str(e)) from e


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise cli.UserError(str(e)) from e


def run() -> None:
  """The command line: exit status 0, 2 for bad input (one line), 130 for Ctrl-C."""
  quiet = cli.quiet_native_stderr(sys.argv)
  cli.setup_logging(stderr_filter=quiet)
  sys.exit(cli.run_main(lambda: app.run(main, flags_parser=_parse_flags), sys.argv,
                        on_exit=quiet.close if quiet else None))


def _sample() -> None:
  # Imported here so that --help answers without starting JAX. pylint: disable=g-import-not-at-top
  import jax
  from restem_jax.model import checkpoints, partitioning
  from restem_jax.sampling import shards
  from restem_jax import sampling
  from restem_jax.data import vocab as vocab_lib

  stop = [s.encode("latin-1", "backslashreplace").decode("unicode_escape") for s in _STOP.value]
  mesh = partitioning.make_mesh([int(x) for x in _MESH.value], jax.local_devices())
  params, cfg = checkpoints.load(_CHECKPOINT.value, mesh)
  vocab_file = checkpoints.vocab_path(_CHECKPOINT.value)
  vocab = vocab_lib.load_vocab(vocab_file) if vocab_file is not None else None
  if vocab is None:
    logging.warning("%s has no vocabulary: output 'text' will be null", _CHECKPOINT.value)
  ids, prompts = read_prompts(_PROMPTS.value, vocab)
  if _CALCULATOR.value and vocab is None:
    raise cli.UserError(f"--calculator needs a vocabulary; {_CHECKPOINT.value} has none")
  sampler = sampling.Sampler(params, cfg, mesh=mesh, vocab=vocab,
                             eos_id=vocab.eos_id if vocab is not None else 1,
                             calculator_on=_CALCULATOR.value)
  strategy = sampling.make_strategy(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value)
  logging.info("sampling %d prompts x %d with %s", len(prompts), _NUM_SAMPLES.value, strategy)
  bar, on_batch = shards.progress_bar(len(prompts))
  results = sampler.generate(ids, prompts, num_samples=_NUM_SAMPLES.value, strategy=strategy,
                             max_new_tokens=_MAX_NEW_TOKENS.value, seed=_SEED.value,
                             iteration=_ITERATION.value, stop_strings=stop,
                             batch_size=_BATCH_SIZE.value, on_batch=on_batch)
  bar.close()
  records = [file_io.sample_record(pid, j, s)
             for pid, samples in zip(ids, results) for j, s in enumerate(samples)]
  file_io.write_jsonl(_OUT.value, records)
  logging.info("wrote %d samples to %s", len(records), _OUT.value)


if __name__ == "__main__":
  run()
