"""`python -m restem_jax.bench calculator`: what the decode-step calculator changes for a model.

    python -m restem_jax.bench calculator --model=W/train/base/best_model \
        --train=D/train.jsonl --test=D/test.jsonl [--train_problems=1000 --rounds=2
        --max_new_tokens=128]

A model of configs/jsonl_math.py (e.g. a run's from-scratch base) samples the same problems
with `sampling.calculator` off and on, alternating in one process: greedy on the test problems
(accuracy), 8 samples at the paper's settings (top-k 40, temperature 0.7) on the first training
problems (per-sample accuracy, problems solved), and the sampler's tokens per second of both.
Answers are checked with the math reward, as the loop does. The last line is the JSON record.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from restem_jax.bench import host


def _problems(path: str, limit: int, prompt_set, vocab) -> tuple[list[dict], list[list[int]]]:
  from restem_jax import file_io  # pylint: disable=g-import-not-at-top
  from restem_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  rows = file_io.read_jsonl(path)[:limit or None]
  prefix = list(vocab_lib.prompt_prefix(vocab))
  return rows, [prefix + list(vocab.encode(prompt_set.format(r, 0))) for r in rows]


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m restem_jax.bench calculator")
  parser.add_argument("--model", required=True, help="checkpoint directory (with its vocabulary)")
  parser.add_argument("--train", required=True, help="generic JSONL: sampled 8 times a problem")
  parser.add_argument("--test", required=True, help="generic JSONL: greedy")
  parser.add_argument("--train_problems", type=int, default=1000)
  parser.add_argument("--test_problems", type=int, default=500)
  parser.add_argument("--max_new_tokens", type=int, default=128,
                      help="the run's sampling.max_new_tokens (its log's fitted sizes)")
  parser.add_argument("--rounds", type=int, default=2, help="rounds of both sides, alternating")
  args = parser.parse_args(argv)
  # pylint: disable=g-import-not-at-top
  from restem_jax import rewards, sampling
  from restem_jax.data import fewshot, tasks
  from restem_jax.data import vocab as vocab_lib
  from restem_jax.model import checkpoints, partitioning

  mesh = partitioning.make_mesh((-1, 1, 1))
  params, cfg = checkpoints.load(args.model, mesh)
  vocab = vocab_lib.load_vocab(checkpoints.vocab_path(args.model))
  prompt_set = fewshot.load(tasks.KINDS["jsonl"].prompt)
  reward = rewards.get("math")
  sets = {"test greedy": (*_problems(args.test, args.test_problems, prompt_set, vocab), 1,
                          sampling.Greedy()),
          "train x8": (*_problems(args.train, args.train_problems, prompt_set, vocab), 8,
                       sampling.make_strategy(0.7, 40, 1.0))}
  samplers = {on: sampling.Sampler(params, cfg, mesh=mesh, vocab=vocab, eos_id=vocab.eos_id,
                                   calculator_on=on) for on in (False, True)}
  load_start = os.getloadavg()[0]
  results: dict[tuple[bool, str], dict] = {}
  print(f"{'round':>5}  {'calculator':<10} {'set':<11} {'accuracy':>8} {'solved':>7} "
        f"{'tokens':>8} {'seconds':>8} {'tok/s':>7}")
  for i in range(args.rounds):
    for on in (False, True):
      for name, (rows, prompts, n, strategy) in sets.items():
        start = time.perf_counter()
        got = samplers[on].generate([r["id"] for r in rows], prompts, num_samples=n,
                                    strategy=strategy, max_new_tokens=args.max_new_tokens, seed=0,
                                    iteration=1, stop_strings=prompt_set.stop, batch_size=256)
        seconds = time.perf_counter() - start
        verdicts = reward.score_batch([r for r, per in zip(rows, got) for _ in per],
                                      [s.text for per in got for s in per])
        passed = [v.passed for v in verdicts]
        tokens = sum(len(s.tokens) for per in got for s in per)
        solved = sum(any(passed[k * n:(k + 1) * n]) for k in range(len(rows))) / len(rows)
        row = {"accuracy": sum(passed) / len(passed), "solved": solved, "tokens": tokens,
               "seconds": seconds}
        if i > 0 or args.rounds == 1:  # the first round compiles
          results[(on, name)] = row
        print(f"{i:>5}  {'on' if on else 'off':<10} {name:<11} {100 * row['accuracy']:>7.1f}% "
              f"{100 * solved:>6.1f}% {tokens:>8} {seconds:>8.1f} {tokens / seconds:>7.0f}")
  load_end = os.getloadavg()[0]
  off, on = results[(False, "train x8")], results[(True, "train x8")]
  record = {"bench": "calculator", "cpu_model": host.cpu_model(),
            "load_avg": [round(load_start, 2), round(load_end, 2)]}
  for key, value in ((False, "off"), (True, "on")):
    record[f"greedy_{value}"] = round(results[(key, "test greedy")]["accuracy"], 4)
    record[f"solved_x8_{value}"] = round(results[(key, "train x8")]["solved"], 4)
    r = results[(key, "train x8")]
    record[f"tok_s_{value}"] = round(r["tokens"] / r["seconds"], 1)
  record["speed_ratio_on_off"] = round((on["tokens"] / on["seconds"])
                                       / (off["tokens"] / off["seconds"]), 3)
  print(json.dumps(record))
  return 0
