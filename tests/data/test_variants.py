"""restem_jax.data.variants: worked solutions read as equation chains, and their number variants."""

import fractions
import logging
import random
import re

import pytest

from restem_jax.data import fit
from restem_jax.data import variants

from tests.test_configs import REPO, _load

Q = ("Ava has 47 stamps. She buys 6 packs with 8 stamps in each. She shares them among 5 "
     "friends and keeps one share. Her 2 cats watch. How many stamps does Ava have now?")
S = "6 x 8 = 48. 47 + 48 = 95. 95 ÷ 5 = 19. She has 19 stamps. The final answer is 19."


def _equations_hold(solution):
  eqs = re.findall(r"([\d.]+) ([-+*/x÷]) ([\d.]+) = (-?[\d.]+)", solution)
  for a, op, b, c in eqs:
    a, b, c = (fractions.Fraction(v) for v in (a, b, c))
    got = {"+": a + b, "-": a - b, "*": a * b, "x": a * b, "/": a / b, "÷": a / b}[op]
    assert got == c, solution
  return len(eqs)


def test_a_chain_is_parsed_and_its_variants_are_exact_and_consistent():
  chain = variants.parse(Q, S, "19")
  assert chain is not None and chain.variables == ("6", "8", "47", "5")
  rng = random.Random(0)
  seen = set()
  for _ in range(50):
    question, solution, answer = variants.variant(chain, rng)
    assert _equations_hold(solution) == 3
    nums = [int(n) for n in re.findall(r"\d+", question)]
    a, packs, each, friends, cats = nums
    assert cats == 2  # a question number no equation uses stays
    assert 10 <= a <= 99 and 2 <= packs <= 9 and 2 <= friends <= 9
    assert int(answer) == (a + packs * each) // friends
    assert (a + packs * each) % friends == 0  # an exact division stays exact
    # the prose repeats the new results, and the final answer is the last result
    assert solution.endswith(f"She has {answer} stamps. The final answer is {answer}.")
    assert variants.parse(question, solution, answer) is not None
    seen.add(answer)
  assert len(seen) > 10


def test_multi_operator_and_decimal_equations():
  q = "A pen costs 2.50 dollars. Tom buys 4 pens and 3 pads at 1.25 dollars. What does he pay?"
  s = "(4 * 2.50) + (3 * 1.25) = 13.75. The final answer is 13.75."
  chain = variants.parse(q, s, "13.75")
  assert chain is not None
  rng = random.Random(1)
  for _ in range(20):
    question, solution, answer = variants.variant(chain, rng)
    price, pens, pads, pad_price = re.findall(r"\d+(?:\.\d+)?", question)
    assert len(price.split(".")[1]) == 2
    want = (int(pens) * fractions.Fraction(price) + int(pads) * fractions.Fraction(pad_price))
    assert fractions.Fraction(answer) == want
    assert solution.endswith(f"The final answer is {answer}.")


@pytest.mark.parametrize("solution, answer", [
    ("6 * 8 = 49. 47 + 49 = 96. The final answer is 96.", "96"),  # a wrong equation
    ("6 * 8 = 48. 47 + 48 = 95. The final answer is 95.", "94"),  # not the answer
    (r"We have $\frac{6}{2} = 3$, so the answer is $\boxed{3}$.", "3"),  # LaTeX
    ("Six packs of eight make forty-eight; plus 47 is 95.", "95"),  # no equation
    ("2 + 3 = 5. 5 + 2 = 7. The final answer is 7.", "7"),  # 5 is a result and a question number
])
def test_solutions_that_are_not_exact_chains_are_not_used(solution, answer):
  q = "Ava has 47 stamps. She buys 6 packs with 8 each, then 2 and 3 and 5 more."
  assert variants.parse(q, solution, answer) is None


class _ByteVocab:
  eos_id = 1

  def encode(self, text):
    return [b + 2 for b in text.encode()]


def _problems(solution_fn, n=20):
  out = []
  for i in range(n):
    a, b = 10 + i, 3 + i % 5
    q = f"Mo has {a} pens and buys {b} more. How many pens?"
    out.append({"question": q, "prompt": f"Question: {q}\nAnswer: ", "answer": str(a + b),
                "solution": solution_fn(a, b)})
  return out


def test_variant_rows_train_on_every_variant_token():
  problems = _problems(lambda a, b: f"{a} + {b} = {a + b}. The final answer is {a + b}.")
  rows = variants.variant_rows(problems, _ByteVocab(), per_solution=3, inputs_length=80,
                               targets_length=48, pack=False, drill_share=0)
  assert rows["decoder_target_tokens"].shape == (60, 128)
  text = bytes(t - 2 for t, w in zip(rows["decoder_target_tokens"][0],
                                     rows["decoder_loss_weights"][0]) if w and t > 1).decode()
  a, b, c, d = map(int, re.findall(r"\d+", text))
  assert a + b == c == d
  with_drill = variants.variant_rows(problems, _ByteVocab(), per_solution=3, inputs_length=80,
                                     targets_length=48, pack=True)
  weights, tokens = with_drill["decoder_loss_weights"], with_drill["decoder_target_tokens"]
  prompt = weights.size - weights.sum() - (tokens == 0).sum()  # unweighted non-padding
  drill = (weights * (tokens > 1)).sum() - 60 * len(problems[0]["solution"])
  assert prompt > 0 and drill > 0.3 * weights.sum()


def test_variants_switch_off_with_one_log_line_where_solutions_are_not_chains(caplog):
  problems = _problems(lambda a, b: rf"$\boxed{{{a + b}}}$")
  with caplog.at_level(logging.INFO):
    assert variants.variant_rows(problems, _ByteVocab(), per_solution=3, inputs_length=64,
                                 targets_length=48, pack=True) is None
  lines = [r.getMessage() for r in caplog.records if "solution variants" in r.getMessage()]
  assert len(lines) == 1 and "off" in lines[0] and "0 of 20" in lines[0]


def test_the_equation_drill_is_exact_and_keeps_the_solutions_format():
  chain = variants.parse(Q, S, "19")
  rng = random.Random(2)
  texts = [t for k in range(3) for _ in range(30) if (t := variants.equation(chain, k, rng))]
  assert len(texts) > 40
  for t in texts:
    assert _equations_hold(t) == 1 and t.endswith(".")
  assert {t.split()[1] for t in texts} == {"x", "+", "÷"}
  ex = variants.equation_examples([chain], _ByteVocab(), num_tokens=500, length=100, rng=rng)
  assert sum(len(b) for _, b in ex) >= 500 and all(a == [] and len(b) <= 100 for a, b in ex)
  text = bytes(t - 2 for t in ex[0][1]).decode()
  assert _equations_hold(text) == len(re.findall("=", text)) > 3


class _WordVocab:
  vocab_size = 400

  @staticmethod
  def encode(text):
    return text.split()


@pytest.mark.parametrize("latex", [False, True])
def test_fit_turns_variants_on_for_equation_chains_and_off_for_latex(caplog, latex):
  problems = {"train": [], "valid": [], "test": []}
  for i, p in enumerate(_problems(
      (lambda a, b: rf"$a = {a}$, so $\boxed{{{a + b}}}$") if latex else
      (lambda a, b: f"{a} + {b} = {a + b}. The final answer is {a + b}."), n=200)):
    p.update(id=f"train/{i}", prompt_ids=[5] * 20, solution=p["solution"] if i % 5 == 0 else "")
    problems["train"].append(p)
  config = _load(f"{REPO}/configs/jsonl_math.py", None)
  config.sampling.calculator = -1  # it reads token pieces, which _WordVocab has not (tested in
  # test_jsonl_recipe.py)
  with caplog.at_level(logging.INFO):
    fit.fit(config, problems, _WordVocab())
  off = [r.getMessage() for r in caplog.records if "solution variants: off" in r.getMessage()]
  row = config.data.inputs_length + config.data.targets_length
  if latex:
    assert config.data.solution_variants == -1 and len(off) == 1 and "0 of 40" in off[0]
    assert config.base_trainer.num_train_steps == fit.MIN_BASE_STEPS  # epochs, not the budget
  else:
    assert config.data.solution_variants > 1 and not off
    assert config.base_trainer.num_train_steps == fit.BASE_TOKEN_BUDGET // (32 * row)
