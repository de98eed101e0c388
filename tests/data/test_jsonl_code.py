"""Your own code problems: the generic JSONL code formats (HumanEval and MBPP style) as seqio
Tasks, MBPP prepared from a hub snapshot, and `configs/jsonl_code.py:smoke` end to end."""

import json
import re
import subprocess
import sys

import pytest

from tests import hub_snapshots
from tests.conftest import REPO, smoke_env
from restem_jax.data import prog, records, tasks, tfds_builders
from restem_jax.data import vocab as vocab_lib
from restem_jax import rewards


def _prog_problems(sizes, seed=0):
  """Generated list/string transforms in HumanEval form (prog's own data, with reference code)."""
  splits = prog.generate(sizes, seed, prog.ProgConfig(min_stages=1, max_stages=2))
  return {split: [prog.to_humaneval(p) for p in ps] for split, ps in splits.items()}


def _as_mbpp(p: dict) -> dict:
  """A HumanEval-form problem rewritten as an MBPP row: description, whole program, asserts."""
  name = p["entry_point"]
  description = p["prompt"].split('"""')[1].strip().splitlines()[0]
  tests = [re.sub(r"\bcandidate\(", f"{name}(", line.strip())
           for line in p["test"].splitlines() if line.strip().startswith("assert ")]
  signature = p["prompt"].splitlines()[0]
  return {"task_id": p["task_id"], "text": description,
          "code": signature + "\n" + p["canonical_solution"], "test_list": tests,
          "test_setup_code": ""}


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  out = tmp_path_factory.mktemp("code")
  splits = _prog_problems({"train": 6, "valid": 2, "test": 3})
  paths = {}
  for split, problems in splits.items():
    paths[("humaneval", split)] = _write(out / f"{split}.humaneval.jsonl", problems)
    paths[("mbpp", split)] = _write(out / f"{split}.mbpp.jsonl", [_as_mbpp(p) for p in problems])
  return paths


@pytest.fixture(scope="module")
def vocab(files, tmp_path_factory):
  texts = [p.read_text() for p in files.values()]
  path = vocab_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("v") / "v.model", 400)
  return vocab_lib.load_vocab(path)


@pytest.mark.parametrize("style", ["humaneval", "mbpp"])
def test_jsonl_code_task_in_both_styles_judges_reference_and_wrong_programs(files, vocab, style):
  name = tasks.register_task("jsonl_code", vocab, name=f"code_{style}",
                             **{f"{s}_path": files[(style, s)] for s in ("train", "valid", "test")})
  info = tasks.task_info(name)
  assert info.reward == "humaneval"
  assert info.prompt.name == ("mbpp_0shot" if style == "mbpp" else "humaneval_0shot")
  test = tasks.load_problems(name, "test")
  assert len(test) == 3 and len(tasks.load_problems(name, "train")) == 6
  p = test[0]
  if style == "mbpp":
    assert p["prompt"].startswith("# Task: Given ") and "\n# Example: assert transform(" in \
        p["prompt"]
    assert p["solution"].startswith("def transform(")  # the whole reference program
    assert "\ndef " not in info.stop  # helpers after the function are part of a program
  else:
    assert p["prompt"].startswith("def transform(") and p["solution"].startswith("    ")
  assert vocab.decode(p["prompt_ids"]) == p["prompt"]
  wrong = "def transform(x):\n    return None\n" if style == "mbpp" else "    return None\n"
  verdicts = rewards.get("humaneval").score_batch(test * 2, [q["solution"] for q in test]
                                                  + [wrong] * len(test))
  assert [v.passed for v in verdicts] == [True] * 3 + [False] * 3, verdicts


def test_mixed_styles_and_missing_files_are_clear_errors(files, vocab, tmp_path):
  with pytest.raises(ValueError, match="mix HumanEval and MBPP style"):
    tasks.register_task("jsonl_code", vocab, train_path=files[("mbpp", "train")],
                        test_path=files[("humaneval", "test")])
  with pytest.raises(FileNotFoundError, match=r"nope.jsonl"):
    tasks.register_task("jsonl_code", vocab, train_path=tmp_path / "nope.jsonl",
                        test_path=files[("mbpp", "test")])
  math_file = _write(tmp_path / "math.jsonl", [{"id": "a", "question": "q", "answer": "1"}])
  with pytest.raises(ValueError, match=r"math.jsonl holds jsonl problems, not HumanEval"):
    tasks.register_task("jsonl_code", vocab, train_path=math_file, test_path=math_file)


def test_mbpp_prepared_from_a_hub_snapshot(vocab, tmp_path):
  snapshot = hub_snapshots.write_mbpp(tmp_path / "mbpp")
  from restem_jax.data import __main__ as cli
  assert cli.main(["prepare", f"--manual_dir={snapshot}", f"--data_dir={tmp_path / 'tfds'}"]) == 0
  name = tasks.register_task("mbpp", vocab, data_dir=tmp_path / "tfds")
  splits = {s: tasks.load_problems(name, s) for s in ("train", "valid", "test")}
  assert {s: sorted(p["id"] for p in ps) for s, ps in splits.items()} == {
      "train": ["601"], "valid": ["511"], "test": ["11", "12"]}
  verdicts = rewards.get("humaneval").score_batch(splits["test"],
                                                  [p["solution"] for p in splits["test"]])
  assert all(v.passed for v in verdicts), verdicts
  # A snapshot of another data set, or of none, is refused with the path named.
  other = hub_snapshots.write_gsm8k(tmp_path / "gsm8k")
  with pytest.raises(ValueError, match=r"gsm8k holds gsm8k problems .*--dataset=gsm8k"):
    tfds_builders.prepare("mbpp", other, tmp_path / "tfds2")
  assert records.detect_kind(other) == "gsm8k"


def test_smoke_config_runs_on_mbpp_style_files(tmp_path):
  """`configs/jsonl_code.py:smoke` with only the data paths: sizes derived, loop to the end."""
  splits = _prog_problems({"train": 16, "valid": 2, "test": 4}, seed=1)
  paths = {s: _write(tmp_path / f"{s}.jsonl", [_as_mbpp(p) for p in ps])
           for s, ps in splits.items()}
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "restem_jax.main", "--config=configs/jsonl_code.py:smoke",
       "--config.progress_bar=False", f"--workdir={workdir}",
       f"--config.data.train_path={paths['train']}", f"--config.data.valid_path={paths['valid']}",
       f"--config.data.test_path={paths['test']}"],
      cwd=REPO, env=smoke_env(), capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  summary = json.loads((workdir / "summary.json").read_text())
  models = {e["model"] for e in summary["evaluations"]}
  assert "base" in models
  assert all(e["task"] == "jsonl_code" for e in summary["evaluations"])
  iteration = summary["iterations"][0]
  assert iteration["num_samples"] == 16 * 2  # every train problem, N = 2
  # The base memorised most reference programs, so its samples pass their asserts in the
  # sandbox (25 of 32 when measured); the kept ones trained iter1, which was evaluated.
  assert iteration["num_correct"] > 0 and iteration["num_kept"] > 0 and "iter1" in models
