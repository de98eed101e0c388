"""Multi-step arithmetic word problems in the generic JSONL format, for measuring a recipe.

    python -m restem_jax.data.synthetic_math --out_dir=/tmp/wordmath [--train=3000 --test=500
        --solution_fraction=0.2 --seed=0]

writes `train.jsonl` (every row has an answer; a `solution_fraction` of them, spread over the
file, also a worked solution) and `test.jsonl` (answers only). It stands in for "your own data":
a data set not shaped like the embedded `arith` task, harder than it, on which
`configs/jsonl_math.py` is measured (README "A laptop recipe for your own math data") and
tested. It is not a task the loop knows by name: the loop reads the files like any other.

A problem is a short story about one person and one kind of item, with two to four events that
change the count: getting or losing some (two-digit numbers), buying boxes of several each (a
product, then a sum), doubling or tripling, sharing equally and keeping one share (an exact
division). Intermediate counts stay in [1, 999], so answers spread over three digits and are
not guessable. Example:

  question: "Ava has 47 stamps. She buys 6 packs with 8 stamps in each. Then she gives away 29
             stamps. How many stamps does Ava have now?"
  solution: "6 * 8 = 48. 47 + 48 = 95. 95 - 29 = 66. The final answer is 66."
  answer:   "66"

The phrasing varies (several sentences per event, names, items, pronouns), so a model has to
read the question rather than match one template. Splits are disjoint by question text and
deterministic in (sizes, seed, solution_fraction).
"""

from __future__ import annotations

import argparse
import random
import sys

from etils import epath

from restem_jax.data import arith
from restem_jax.data import splits
from restem_jax import file_io

_NAMES = (("Ava", "she", "her"), ("Ben", "he", "his"), ("Mia", "she", "her"),
          ("Leo", "he", "his"), ("Zoe", "she", "her"), ("Sam", "he", "his"),
          ("Ivy", "she", "her"), ("Max", "he", "his"), ("Nora", "she", "her"),
          ("Omar", "he", "his"), ("Lily", "she", "her"), ("Jack", "he", "his"))
_ITEMS = (("stamps", "packs"), ("marbles", "bags"), ("apples", "crates"), ("cards", "boxes"),
          ("shells", "jars"), ("pencils", "boxes"), ("stickers", "sheets"), ("beads", "bags"),
          ("coins", "purses"), ("cookies", "tins"))
# Each event: (kind, sentence templates). {N} name, {p} pronoun, {P} capitalised pronoun,
# {q} possessive, {i} item, {c} container, {a} / {b} numbers.
_EVENTS = {
    "add": ("{P} finds {a} more {i}.", "A friend gives {N} {a} {i}.",
            "{P} buys {a} more {i}.", "{N} gets {a} {i} as a gift."),
    "sub": ("{P} gives away {a} {i}.", "{P} loses {a} {i}.", "{N} sells {a} {i}.",
            "{P} uses {a} of {q} {i}."),
    "box": ("{P} buys {a} {c} with {b} {i} in each.", "{N} receives {a} {c} of {b} {i} each."),
    "mul": ("{P} ends up with {a} times as many {i}.", "{N}'s number of {i} grows {a} times."),
    "div": ("{P} shares the {i} equally among {a} friends and keeps one share.",
            "{N} splits the {i} into {a} equal piles and keeps one pile."),
}
_MAX_VALUE = 999


def _event(rng: random.Random, value: int) -> tuple[str, int, int, int] | None:
  """(kind, a, b, new value) for one event applicable to `value`, or None."""
  for _ in range(20):
    kind = rng.choice(("add", "sub", "box", "mul", "div"))
    a, b = rng.randint(11, 99), 0
    if kind == "add":
      new = value + a
    elif kind == "sub":
      new = value - a
    elif kind == "box":
      a, b = rng.randint(2, 9), rng.randint(3, 19)
      new = value + a * b
    elif kind == "mul":
      a = rng.randint(2, 4)
      new = value * a
    else:
      divisors = [d for d in range(2, 10) if value % d == 0 and value // d >= 5]
      if not divisors:
        continue
      a = rng.choice(divisors)
      new = value // a
    if 1 <= new <= _MAX_VALUE:
      return kind, a, b, new
  return None


def make_problem(rng: random.Random, min_events: int = 2, max_events: int = 4
                 ) -> dict[str, str]:
  """Draws one problem: {"question", "answer", "solution"} (no id)."""
  while True:
    name, pronoun, possessive = rng.choice(_NAMES)
    item, container = rng.choice(_ITEMS)
    start = rng.randint(12, 99)
    value, events = start, []
    for _ in range(rng.randint(min_events, max_events)):
      event = _event(rng, value)
      if event is None:
        break
      events.append((value, *event))
      value = event[-1]
    if len(events) >= min_events:
      break
  fields = dict(N=name, p=pronoun, P=pronoun.capitalize(), q=possessive, i=item, c=container)
  sentences, lines = [f"{name} has {start} {item}."], []
  for i, (old, kind, a, b, new) in enumerate(events):
    sentence = rng.choice(_EVENTS[kind]).format(a=a, b=b, **fields)
    if i > 0 and rng.random() < 0.5:  # a name stays capitalised, "She" / "A friend" do not
      sentence = "Then " + (sentence if sentence.startswith(name)
                            else sentence[0].lower() + sentence[1:])
    sentences.append(sentence)
    if kind == "add":
      lines.append(f"{old} + {a} = {new}.")
    elif kind == "sub":
      lines.append(f"{old} - {a} = {new}.")
    elif kind == "box":
      lines += [f"{a} * {b} = {a * b}.", f"{old} + {a * b} = {new}."]
    elif kind == "mul":
      lines.append(f"{old} * {a} = {new}.")
    else:
      lines.append(f"{old} / {a} = {new}.")
  sentences.append(f"How many {item} does {name} have now?")
  solution = " ".join(lines + [arith.ANSWER_PHRASE.format(answer=value)])
  return {"question": " ".join(sentences), "answer": str(value), "solution": solution}


def generate(sizes: dict[str, int], seed: int = 0, solution_fraction: float = 0.2
             ) -> dict[str, list[dict[str, str]]]:
  """Disjoint splits of word problems; a `solution_fraction` of train rows keep a solution.

  Args:
    sizes: problems per split ("train", "valid", "test" or others; test is drawn first).
    seed: the random seed; the output is a pure function of the arguments.
    solution_fraction: the fraction of train rows that keep their worked solution (every
      k-th row, so they are spread over the file); other splits carry answers only.

  Returns:
    split -> [{"id": "wordmath/SPLIT/I", "question", "answer"[, "solution"]}].
  """
  if not 0 <= solution_fraction <= 1:
    raise ValueError(f"solution_fraction must be in [0, 1], got {solution_fraction}")
  out = splits.draw(sizes, random.Random(f"wordmath-{seed}"), make_problem, key="question",
                    id_field="id", name="wordmath", knobs={})
  for split, problems in out.items():
    n = len(problems)
    keep = ({round(k / solution_fraction) for k in range(round(n * solution_fraction))}
            if split == "train" and solution_fraction > 0 else set())
    for i, p in enumerate(problems):
      if i not in keep:
        del p["solution"]
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--train", type=int, default=3000)
  parser.add_argument("--test", type=int, default=500)
  parser.add_argument("--valid", type=int, default=0, help="0: no valid file (held out)")
  parser.add_argument("--solution_fraction", type=float, default=0.2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  sizes = {"train": args.train, "test": args.test}
  if args.valid:
    sizes["valid"] = args.valid
  out = epath.Path(args.out_dir)
  for split, problems in generate(sizes, args.seed, args.solution_fraction).items():
    path = file_io.write_jsonl(out / f"{split}.jsonl", problems, ensure_ascii=False)
    print(f"{path}: {len(problems)} problems, "
          f"{sum('solution' in p for p in problems)} with a solution")
  return 0


if __name__ == "__main__":
  sys.exit(main())
