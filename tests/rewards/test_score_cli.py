"""The scoring CLI and the published-format readers, on small fixture files in each format."""

import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from restem_jax.data import formats
from restem_jax import file_io
from restem_jax.rewards import score

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures"
HUMANEVAL = FIXTURES / "humaneval_mini.jsonl"
APPS = FIXTURES / "apps_mini.jsonl"
MATH = FIXTURES / "math_mini"
GSM8K = FIXTURES / "gsm8k_mini.jsonl"
GENERIC = FIXTURES / "jsonl_math_mini.jsonl"


def _write_samples(path, samples):
  with open(path, "w") as f:
    for sample in samples:
      f.write(json.dumps(sample) + "\n")
  return path


def _run(capsys, problems, samples_path, *extra):
  status = score.main(["--problems", str(problems), "--samples", str(samples_path), *extra])
  out, err = capsys.readouterr()
  return status, out, err


def _results(samples_path):
  with open(f"{samples_path}_results.jsonl") as f:
    return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("path, fmt, ids", [
    (HUMANEVAL, "humaneval", ["Mini/0", "Mini/1"]),
    (APPS, "apps", ["4001", "4002"]),  # 4003 has no tests: skipped
    (MATH, "math", ["test/algebra/1", "test/algebra/12", "test/number_theory/3",
                    "train/prealgebra/7"]),  # natural order: 1 before 12
    (GSM8K, "gsm8k", ["0", "1", "2"]),
    (GENERIC, "jsonl", ["q1", "q2", "q3"]),
])
def test_readers_detect_format_and_ids(path, fmt, ids):
  assert formats.detect_format(path) == fmt
  got_fmt, problems = formats.read_problems(path)
  assert got_fmt == fmt
  assert [p["id"] for p in problems] == ids


def test_reader_fields():
  math = {p["id"]: p for p in formats.read_math(MATH)}
  assert math["test/algebra/12"]["answer"] == r"2\sqrt{2}"
  assert math["test/algebra/1"]["type"] == "Algebra"
  gsm = formats.read_gsm8k(GSM8K)
  assert gsm[1]["answer"] == "27" and "<<2*12=24>>" in gsm[1]["solution"]
  apps = formats.read_apps(APPS)
  assert json.loads(apps[1]["input_output"])["fn_name"] == "halve"
  generic = formats.read_generic(GENERIC)
  assert generic[1]["solution"] == ""


def test_humaneval_gz(tmp_path):
  gz = tmp_path / "HumanEval.jsonl.gz"
  with gzip.open(gz, "wt") as f:
    f.write(HUMANEVAL.read_text())
  assert [p["id"] for p in formats.read_humaneval(gz)] == ["Mini/0", "Mini/1"]


@pytest.mark.parametrize("reader, content, message", [
    (formats.read_generic, '{"id": "a", "question": "q", "answer": "1"}\n{"id": "a", "question"',
     ":2: malformed JSON"),
    (formats.read_generic, '{"id": "a", "question": "q"}\n', ":1: field 'answer' must be a string"),
    (formats.read_generic, '{"id": "a", "question": "q", "answer": "1"}\n'
                         '{"id": "a", "question": "r", "answer": "2"}\n', ":2: duplicate id 'a'"),
    (formats.read_generic, '[1, 2]\n', ":1: expected a JSON object"),
    (formats.read_gsm8k, '{"question": "q", "answer": "no final answer"}\n',
     ":1: the answer has no"),
    (formats.read_humaneval, '{"task_id": "x", "prompt": "p", "test": "t"}\n',
     ":1: field 'entry_point'"),
    (formats.read_apps, '{"problem_id": 1, "question": "q", "input_output": "{bad"}\n',
     ":1: input_output is not valid JSON"),
    (formats.read_apps, '{"problem_id": 1, "question": "q", '
                        '"input_output": {"inputs": ["1"], "outputs": []}}\n', ":1: input_output"),
])
def test_readers_name_file_and_line(tmp_path, reader, content, message):
  path = tmp_path / "bad.jsonl"
  path.write_text(content)
  with pytest.raises(file_io.FormatError) as info:
    reader(path)
  assert str(path) in str(info.value) and message in str(info.value)


def test_reader_rejects_bad_utf8(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_bytes(b'{"id": "a", "question": "q", "answer": "1"}\n{"id": "\xff"}\n')
  with pytest.raises(file_io.FormatError, match=r"bad.jsonl:2: not UTF-8"):
    formats.read_generic(path)


def test_math_reader_requires_boxed_answer(tmp_path):
  root = tmp_path / "MATH"
  shutil.copytree(MATH, root)
  (root / "test" / "algebra" / "5.json").write_text(json.dumps(
      {"problem": "p", "level": "Level 1", "type": "Algebra", "solution": "no box"}))
  with pytest.raises(file_io.FormatError, match=r"5.json: the solution has no \\boxed"):
    formats.read_math(root)


# ----------------------------------------------------------------------------- the CLI


def test_score_humaneval(tmp_path, capsys):
  samples = _write_samples(tmp_path / "samples.jsonl", [
      {"task_id": "Mini/0", "completion": "    return sum(xs)\n"},
      {"task_id": "Mini/0", "completion": "    return 0\n"},
      {"task_id": "Mini/1", "completion": "    return s.upper() + '!'\n"},
      {"task_id": "Mini/1", "completion": "    import os\n    os._exit(0)\n"},
  ])
  status, out, _ = _run(capsys, HUMANEVAL, samples, "--k", "1,2")
  assert status == 0
  # Per problem n=2, c=1: pass@1 = 0.5, pass@2 = 1.
  assert json.loads(out.strip().splitlines()[-1]) == {"pass@1": 0.5, "pass@2": 1.0}
  rows = _results(samples)
  assert [r["passed"] for r in rows] == [True, False, True, False]
  assert all(r["isolation"] in ("bwrap", "unshare") and r["result"] for r in rows)
  assert rows[0]["completion"] == "    return sum(xs)\n"  # each sample is kept as it was


def test_score_apps(tmp_path, capsys):
  samples = _write_samples(tmp_path / "s.jsonl", [
      {"id": 4001, "completion": "a, b = map(int, input().split())\nprint(a + b)\n"},
      {"id": "4001", "completion": "print(3)"},
      {"id": "4002", "completion": "```python\ndef halve(x):\n    return x / 2\n```"},
      {"id": "4002", "completion": "def halve(x):\n    return x // 2\n"},
  ])
  status, out, _ = _run(capsys, APPS, samples, "--k", "1")
  assert status == 0
  assert json.loads(out.strip().splitlines()[-1]) == {"pass@1": 0.5}
  assert [r["passed"] for r in _results(samples)] == [True, False, True, False]


def test_score_math_directory(tmp_path, capsys):
  samples = _write_samples(tmp_path / "s.jsonl", [
      {"id": "test/algebra/1", "completion": "So $x = \\boxed{2.5}$."},
      # An equivalent form in simplest radical form, as the problem asks (sqrt(8) is not one).
      {"id": "test/algebra/12",
       "completion": "Final Answer: The final answer is $\\sqrt{2}\\cdot 2$. "
                     "I hope it is correct."},
      {"id": "test/number_theory/3", "completion": "The answer is 3."},
  ])
  status, out, _ = _run(capsys, MATH, samples, "--k", "1")
  assert status == 0
  assert json.loads(out.strip().splitlines()[-1]) == {"pass@1": pytest.approx(2 / 3)}
  assert "1 problems have no samples" in out
  rows = _results(samples)
  assert [r["passed"] for r in rows] == [True, True, False]
  assert rows[2]["answer"] == "3"


def test_score_gsm8k_with_majority_vote(tmp_path, capsys):
  samples = _write_samples(tmp_path / "s.jsonl", [
      {"id": "0", "completion": "3 * 4 = 12\n#### 12"},
      {"id": "0", "completion": "#### 13"},
      {"id": "0", "completion": "The answer is 12."},
      {"id": "2", "completion": "#### 950"},
      {"id": "2", "completion": "#### 1,450"},
      {"id": "2", "completion": "#### 1450"},
  ])
  status, out, _ = _run(capsys, GSM8K, samples, "--k", "1,3")
  assert status == 0
  lines = out.strip().splitlines()
  # Problem 0: c=2 of 3; problem 2: c=1 of 3. pass@1 = (2/3 + 1/3) / 2; pass@3 = 1.
  assert json.loads(lines[-1]) == {"pass@1": pytest.approx(0.5), "pass@3": 1.0}
  # maj@3: problem 0 votes 12 (right), problem 2 votes 1450 (the two spellings agree: wrong).
  assert json.loads(next(l for l in lines if l.startswith("maj@k"))[len("maj@k "):]) == {
      "maj@1": 1.0, "maj@3": 0.5}


def test_score_generic_jsonl_via_subprocess(tmp_path):
  samples = _write_samples(tmp_path / "s.jsonl", [
      {"id": "q1", "completion": "7 + 5 = 12. The final answer is 12."},
      {"id": "q2", "completion": "The final answer is 4.5."},
      {"id": "q3", "completion": "The final answer is no."},
  ])
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[2])}
  proc = subprocess.run([sys.executable, "-m", "restem_jax.score", "--problems", str(GENERIC),
                         "--samples", str(samples), "--k", "1"], capture_output=True, text=True,
                        env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"pass@1": pytest.approx(2 / 3)}


@pytest.mark.parametrize("lines, message", [
    (['{"task_id": "Mini/0", "completion": "    return 1\\n"}', '{"task_id": "Mini/0", '],
     ":2: malformed JSON"),
    (['{"task_id": "Mini/9", "completion": "x"}'], ":1: unknown task id 'Mini/9'"),
    (['{"task_id": "Mini/0", "completion": "x"}', '{"task_id": "Mini/1"}'],
     ":2: field 'completion' must be a string"),
    (['{"completion": "x"}'], ":1: a sample needs a string 'task_id' or 'id'"),
    ([], "holds no samples"),
])
def test_bad_samples_exit_nonzero_without_results(tmp_path, capsys, lines, message):
  samples = tmp_path / "samples.jsonl"
  samples.write_text("\n".join(lines) + ("\n" if lines else ""))
  status, out, err = _run(capsys, HUMANEVAL, samples)
  assert status != 0
  assert str(samples) in err and message in err
  assert sorted(os.listdir(tmp_path)) == ["samples.jsonl"]  # no results, no temp file


def test_bad_problems_file_names_file_and_line(tmp_path, capsys):
  problems = tmp_path / "problems.jsonl"
  problems.write_text('{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": 5, '
                      '"answer": "2"}\n')
  samples = _write_samples(tmp_path / "s.jsonl", [{"id": "a", "completion": "The answer is 1."}])
  status, _, err = _run(capsys, problems, samples)
  assert status != 0 and f"{problems}:2: field 'question'" in err
  assert not (tmp_path / "s.jsonl_results.jsonl").exists()


def test_missing_file_exits_nonzero(tmp_path, capsys):
  status, _, err = _run(capsys, tmp_path / "nope.jsonl", tmp_path / "s.jsonl")
  assert status != 0 and "nope.jsonl" in err


def test_results_are_replaced_atomically(tmp_path, capsys):
  samples = _write_samples(tmp_path / "s.jsonl", [{"id": "q1", "completion": "The answer is 12."}])
  (tmp_path / "s.jsonl_results.jsonl").write_text("stale\n")
  status, _, _ = _run(capsys, GENERIC, samples, "--k", "1")
  assert status == 0
  assert [r["passed"] for r in _results(samples)] == [True]
  assert sorted(os.listdir(tmp_path)) == ["s.jsonl", "s.jsonl_results.jsonl"]
