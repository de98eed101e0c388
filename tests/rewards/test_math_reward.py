"""Math reward: answer extraction, normalization, equivalence (both directions of the known
traps), time limits that work off the main thread, and garbage that must score 0."""

import multiprocessing
import threading
import time

import pytest

from restem_jax.rewards import math as math_reward

# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("text, expected", [
    (r"so $\boxed{\frac{1}{2}}$, and finally \boxed{3}.", "3"),  # last occurrence wins
    (r"\boxed{\frac{a}{b^{2}}}", r"\frac{a}{b^{2}}"),  # nested braces
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
    (r"the value is \boxed 5 units", "5"),
    (r"\fbox{7}", "7"),
    ("The answer is 42.", "42"),
    ("The answer is 3.5. Next we check.", "3.5"),
    ("Final Answer: The final answer is $12$. I hope it is correct.", "$12$"),
    ("Final Answer: The final answer is 12", "12"),
    (r"The answer is 5. Wait, no: The final answer is $\boxed{6}$.", "6"),
    ("so the answer is 4", "4"),
])
def test_extract_answer(text, expected):
  assert math_reward.extract_answer(text) == expected


def test_extract_gsm8k_only_when_configured():
  text = "She pays 5 * 200 = 1,000 dollars.\n#### 1,000"
  assert math_reward.extract_answer(text, ("answer_is",)) is None
  assert math_reward.extract_answer(text, ("gsm8k",)) == "1,000"


def test_extract_last_marker_across_kinds():
  both = ("answer_is", "gsm8k")
  assert math_reward.extract_answer("The answer is 5.\n#### 6", both) == "6"
  assert math_reward.extract_answer("#### 6\nThe answer is 5.", both) == "5"


@pytest.mark.parametrize("text", [
    None, 123, "", "no marker here", r"\boxed{unclosed", r"\boxed{}", "The answer is ",
    "#### ", "{" * 10000 + r"\boxed{" + "}" * 5, "\x00\xff" * 1000])
def test_extract_garbage_gives_none(text):
  assert math_reward.extract_answer(text) is None


@pytest.mark.parametrize("text", [
    r"\boxed{" * 20000, "The answer is " * 20000, "#### " * 20000, r"\boxed " * 20000,
    "Final Answer: " * 20000 + r"\boxed{1}"])
def test_extract_degenerate_repetition_is_fast(text):
  # Sampled text can repeat a marker thousands of times; extraction must stay linear.
  start = time.monotonic()
  math_reward.extract_answer(text, math_reward.EXTRACTORS)
  assert time.monotonic() - start < 2.0


def test_extract_rejects_unknown_extractor():
  with pytest.raises(ValueError, match="unknown answer extractors"):
    math_reward.extract_answer("x", ("boxd",))


def test_last_boxed():
  solution = r"So $x=\boxed{2}$ or, simplified, $\boxed{\dfrac{4}{2}}$."
  assert math_reward.last_boxed(solution) == r"\dfrac{4}{2}"
  assert math_reward.last_boxed("no box") is None


# ----------------------------------------------------------------------------- normalization


@pytest.mark.parametrize("raw, normalized", [
    (r"$\dfrac{1}{2}$.", r"\frac{1}{2}"),
    (r"\tfrac12", r"\frac{1}{2}"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"10\text{ cm}", "10"),
    (r"90^\circ", "90"),
    (r"90^{\circ}", "90"),
    (r"50\%", "50"),
    (r"\$1,000", "1000"),
    ("1{,}000", "1000"),
    (r"1,\!000", "1000"),
    ("x = 5", "5"),
    (r"\theta = 30", "30"),
    ("3x-y+13=0", "3x-y+13=0"),  # an equation is not an "x =" prefix
    (r"\pi r^2", r"\pi r^2"),  # the space after a command is kept
    (r"\sqrt2", r"\sqrt{2}"),
    (r"\sqrt[3]{2}", r"\sqrt[3]{2}"),
    (r"\text{(C)}", "C"),
    ("\u22125", "-5"),
    (r"\boxed{7}", "7"),
    (r"\text{ways}", "ways"),  # nothing left without the unit word: keep it
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),  # "\\ " is a row break
])
def test_normalize_answer(raw, normalized):
  assert math_reward.normalize_answer(raw) == normalized


# ----------------------------------------------------------------------------- equivalence

EQUAL = [
    (r"\frac{1}{2}", "0.5"), (r"\frac{1}{2}", r"\dfrac12"), ("0.5", r"\dfrac12"),
    ("18", "18.0"), ("1,000", "1000"), ("x = 5", "5"), ("(1, 2)", "(1,2)"),
    (r"\text{Monday}", "Monday"), ("monday", r"\text{Monday}"), (r"\text{(B)}", "(B)"),
    (r"50\%", "50"), (r"10\text{ cm}", "10"), (r"2^{-99}", r"1/2^{99}"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}"), ("x^2+2x+1", "(x+1)^2"),
    (r"\pi r^2", r"r^2\pi"), (r"2\sqrt{2}", r"\sqrt{8}"),
    ("-5", "\u22125"), (r"\left[ 0, 9 \right)", "[0,9)"),
]
NOT_EQUAL = [
    ("[0,9)", "(0,9)"), (r"\pm 2", "2"), ("1-1/e", "1+1/e"), ("3x-y+13=0", "3x+4y+14=0"),
    (r"4\sqrt{2}", "4"), (r"1/2^{99}", r"1/2^{98}"),
    # math-verify gets these wrong (absolute tolerance): fixed by our relative check.
    (r"\frac{1}{2^{99}}", "0.0"), ("0.0000001", "0.0000002"), (r"1/2^{99}", "1.58e-30"),
    ("1/3", "0.333333"),  # an approximation, unless the question asks for a decimal
    ("Monday", "Mondya"),  # sympy would read both as products of the same letters
    (r"\text{Monday}", r"\text{Tuesday}"), ("1/3", "0.33"), ("2", "2,3"),
    ("1000", "1,001"), ("5", "-5"), ("x+1", "x-1"),
]


@pytest.mark.parametrize("a, b", EQUAL)
def test_equal_both_directions(a, b):
  assert math_reward.answers_equal(a, b)
  assert math_reward.answers_equal(b, a)


@pytest.mark.parametrize("a, b", NOT_EQUAL)
def test_not_equal_both_directions(a, b):
  assert not math_reward.answers_equal(a, b)
  assert not math_reward.answers_equal(b, a)


@pytest.mark.parametrize("gold, pred", [
    ("5", None), (None, "5"), ("5", 5), ("", ""), ("}{", r"\frac{"), (r"\sqrt{", r"\sqrt{"),
    ("5", "\x00" * 100), ("5", "(" * 5000), ("5", "x" * 100000), ("1/0", "1/0"),
])
def test_garbage_is_not_equal_and_never_raises(gold, pred):
  if gold == pred and isinstance(gold, str) and gold.strip():
    # The same text is the same answer, even when it is not valid maths.
    assert math_reward.answers_equal(gold, pred)
  else:
    assert not math_reward.answers_equal(gold, pred)


def test_time_limit_works_in_a_thread():
  # 10^{10^{10}} makes sympy compute a ten-billion-digit integer in C: signals cannot stop it.
  results = []
  thread = threading.Thread(
      target=lambda: results.append(math_reward.answers_equal("10^{10^{10}}", "1", timeout_s=1.0)))
  start = time.monotonic()
  thread.start()
  thread.join(timeout=60)
  assert results == [False]
  assert time.monotonic() - start < 30  # 1 s limit + a new worker's imports
  # The checker keeps working after killing the stuck worker.
  assert math_reward.answers_equal("x^2-1", "(x-1)(x+1)")


def _check_in_child(queue):
  queue.put((math_reward.answers_equal(r"\sqrt{8}", r"2\sqrt{2}"),
             math_reward.answers_equal(r"\sqrt{8}", "3")))


def test_works_in_a_forked_process_after_the_parent_used_it():
  assert math_reward.answers_equal(r"\sqrt{12}", r"2\sqrt{3}")  # parent starts its worker
  ctx = multiprocessing.get_context("fork")
  queue = ctx.Queue()
  child = ctx.Process(target=_check_in_child, args=(queue,))
  child.start()
  result = queue.get(timeout=120)
  child.join(timeout=60)
  assert result == (True, False)
  assert math_reward.answers_equal(r"\sqrt{12}", r"2\sqrt{3}")  # the parent's pool still works


def test_answer_key_merges_equal_numbers_and_text_case():
  assert len({math_reward.answer_key(a) for a in ["0.5", r"\frac{1}{2}", "1/2", r"\dfrac12"]}) == 1
  assert math_reward.answer_key(r"\text{Yes}") == math_reward.answer_key("yes")
  assert math_reward.answer_key("2") != math_reward.answer_key("3")
  assert math_reward.answer_key(None) is None
  assert math_reward.answer_key("  ") is None


# ----------------------------------------------------------------------------- the reward


def test_math_reward_scores_completions():
  reward = math_reward.MathReward()
  problem = {"answer": r"\frac{3}{4}"}
  right = reward(problem, r"Add them: $\frac{1}{2}+\frac{1}{4}=\boxed{0.75}$.")
  assert right.passed and right.reward == 1.0 and right.answer == "0.75"
  wrong = reward(problem, r"So the total is $\boxed{\frac{2}{3}}$.")
  assert not wrong.passed and wrong.reward == 0.0 and "wrong answer" in wrong.reason
  none = reward(problem, "I do not know.")
  assert not none.passed and none.answer is None and "no final answer" in none.reason
  assert not reward({"answer": ""}, r"\boxed{1}").passed
  assert not reward({}, r"\boxed{1}").passed
  assert not reward(problem, None).passed


def test_gsm8k_style_reward_and_batch():
  reward = math_reward.MathReward(extractors=("gsm8k", "answer_is"))
  problems = [{"answer": "1000"}, {"answer": "72"}, {"answer": "5"}]
  completions = ["5 * 200 = 1,000\n#### 1,000", "The answer is 71.", r"\boxed{5}"]
  verdicts = reward.score_batch(problems, completions, workers=2)
  assert [v.passed for v in verdicts] == [True, False, False]  # boxed is not a GSM8K marker
  with pytest.raises(ValueError):
    reward.score_batch(problems, completions[:1])
