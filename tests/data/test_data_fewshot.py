"""Few-shot prompt files: stated formats, shot counts, assembly, loading errors."""

import json
import re

import pytest

from restem_jax.data import arith, fewshot

MINERVA_END = re.compile(r"\nFinal Answer: The final answer is \$(.+)\$\. I hope it is correct\.$")


def test_every_builtin_prompt_loads():
  for name in fewshot.BUILTIN:
    prompt = fewshot.load(name)
    assert prompt.fields and prompt.stop
    # The prompt for a problem is the prefix plus the filled template.
    problem = {f: f"<{f}>" for f in prompt.fields}
    text = prompt.format(problem, len(prompt.examples))
    assert text.endswith(prompt.template.format(**problem))


def test_math_prompt_is_4_shot_minerva():
  prompt = fewshot.load("math_minerva_4shot")
  assert len(prompt.examples) == 4
  assert prompt.template == "Problem:\n{question}\n\nSolution:\n"
  for ex in prompt.examples:
    match = MINERVA_END.search(ex["solution"])
    assert match, ex["solution"]
    assert match.group(1) == ex["answer"]
  text = prompt.format({"question": "What is $1+1$?"}, 4)
  assert text.count("Problem:\n") == 5 and text.endswith("What is $1+1$?\n\nSolution:\n")
  assert text.count("I hope it is correct.") == 4


def test_gsm8k_prompt_is_8_shot_chain_of_thought():
  prompt = fewshot.load("gsm8k_cot_8shot")
  assert len(prompt.examples) == 8
  checked = 0
  for ex in prompt.examples:
    lines = ex["solution"].split("\n")
    assert len(lines) >= 2, "chain of thought: reasoning lines before the answer"
    assert lines[-1] == f"#### {ex['answer']}"
    assert "<<" not in ex["solution"]
    # Each reasoning line's arithmetic "a op b = c" is right.
    for expr, result in re.findall(r"([\d.]+(?: [-+*/] [\d.]+)+) = \$?([\d.]+)", ex["solution"]):
      assert abs(eval(expr) - float(result)) < 1e-9, (expr, result)  # our own constant text
      checked += 1
  assert checked >= 15


def test_apps_prompt_uses_the_apps_paper_format():
  prompt = fewshot.load("apps_3shot")
  assert len(prompt.examples) == 3
  text = prompt.format({"question": "Q", "starter_code": "", "format_line":
                        "Use Standard Input format"}, 3)
  assert text.count("\nQUESTION:\n") == 4 and text.endswith("Use Standard Input format\nANSWER:\n")
  formats = {ex["format_line"] for ex in prompt.examples}
  assert formats == {"Use Standard Input format", "Use Call-Based format"}
  for ex in prompt.examples:
    io = json.loads(ex["input_output"])
    assert len(io["inputs"]) == len(io["outputs"]) >= 3
    assert ("fn_name" in io) == (ex["format_line"] == "Use Call-Based format")


def test_arith_prompt_examples_are_right_and_not_generated_problems():
  prompt = fewshot.load("arith_3shot")
  generated = {p["question"] for ps in arith.generate(
      {"train": 2000, "valid": 100, "test": 200}, seed=0).values() for p in ps}
  for ex in prompt.examples:
    assert ex["question"] not in generated
    for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", ex["solution"]):
      assert eval(f"{a} {op} {b}") == int(c)
    assert ex["solution"].endswith(arith.ANSWER_PHRASE.format(answer=ex["answer"]))


def test_zero_shots_is_the_bare_template_and_too_many_is_an_error():
  prompt = fewshot.load("arith_3shot")
  assert prompt.format({"question": "Q?"}, 0) == "Question: Q?\nAnswer: "
  with pytest.raises(ValueError, match="has 3 examples"):
    prompt.prefix(4)


def test_truncate_cuts_at_the_first_stop():
  prompt = fewshot.load("math_minerva_4shot")
  assert prompt.truncate("x = 2.\n\nProblem:\nmore") == "x = 2."
  assert prompt.truncate("no stop") == "no stop"


def test_bad_prompt_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="math_minerva_4shot"):
    fewshot.load("no_such_prompt")
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="bad.json"):
    fewshot.load(str(bad))
  bad.write_text(json.dumps({"template": "Q: {question}", "separator": "\n", "stop": [],
                             "examples": [{"question": "x"}]}))
  with pytest.raises(ValueError, match=r"example 0 lacks .*solution"):
    fewshot.load(str(bad))
  bad.write_bytes(b'{"template": "\xff"}')
  with pytest.raises(ValueError, match="not a UTF-8 JSON"):
    fewshot.load(str(bad))
