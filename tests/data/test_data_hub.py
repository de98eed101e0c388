"""Hugging Face hub snapshots (tiny, in each repository's layout): detected, read with the right
ids, prepared as TFDS data sets, and scored: reference solutions pass and wrong ones fail."""

import json
import pathlib

import pytest

from tests import hub_snapshots
from restem_jax.data import formats, hub
from restem_jax import file_io
from restem_jax.rewards import score


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
  return hub_snapshots.write_all(tmp_path_factory.mktemp("hub"))


ALGEBRA_TEST = "algebra/test-00000-of-00001"


@pytest.mark.parametrize("name, sub, fmt, ids", [
    ("gsm8k", "", "gsm8k", ["0", "1", "2"]),
    ("gsm8k", "socratic", "gsm8k", ["0", "1", "2"]),
    ("gsm8k", "main/test-00000-of-00001.parquet", "gsm8k", ["0", "1", "2"]),
    ("hendrycks_math", "", "math", [f"{ALGEBRA_TEST}/0", f"{ALGEBRA_TEST}/1",
                                    "prealgebra/test-00000-of-00001/0"]),
    ("hendrycks_math", "algebra", "math", ["0", "1"]),
    ("hendrycks_math", f"{ALGEBRA_TEST}.parquet", "math", ["0", "1"]),
    ("math500", "", "math500", ["test/prealgebra/1.json", "test/algebra/24.json"]),
    ("math500", "test.jsonl", "math500", ["test/prealgebra/1.json", "test/algebra/24.json"]),
    ("apps", "", "apps", ["4000", "4001"]),
    ("humaneval", "", "humaneval", ["HumanEval/0", "HumanEval/1"]),
    ("mbpp", "", "mbpp", ["11", "12"]),
    ("mbpp", "sanitized", "mbpp", ["17", "12"]),
    ("mbpp", "full/validation-00000-of-00001.parquet", "mbpp", ["511"]),
])
def test_layouts_and_ids(snapshots, name, sub, fmt, ids):
  got_fmt, problems = hub.read_problems(snapshots[name] / sub if sub else snapshots[name])
  assert got_fmt == fmt
  assert [p["id"] for p in problems] == ids


def test_fields_follow_the_published_formats(snapshots):
  _, gsm = hub.read_problems(snapshots["gsm8k"] / "socratic")
  assert gsm[2]["answer"] == "1,450" and gsm[0]["solution"].startswith("How? ")
  _, train = hub.read_problems(snapshots["gsm8k"], split="train")
  assert [p["answer"] for p in train] == ["7", "12"]
  _, algebra = hub.read_problems(snapshots["hendrycks_math"] / "algebra")
  assert (algebra[1]["answer"], algebra[1]["level"], algebra[1]["type"]) == (
      "\\frac{3}{2}", "Level 2", "Algebra")
  _, m500 = hub.read_problems(snapshots["math500"])
  assert (m500[1]["answer"], m500[1]["level"], m500[1]["type"]) == (
      "\\frac{1}{2}", "Level 2", "Algebra")
  _, apps = hub.read_problems(snapshots["apps"])
  assert json.loads(apps[1]["input_output"])["fn_name"] == "largest"
  _, mbpp = hub.read_problems(snapshots["mbpp"])
  p = mbpp[0]
  # The prompt: the description and the first test as comments; prompt + program is a program.
  assert p["prompt"] == ("# Task: Write a python function to find the\n"
                         "# square root of a perfect square.\n# Example: assert root(16) == 4\n")
  assert p["entry_point"] == "root" and p["canonical_solution"].startswith("import math\n")
  assert p["test"].startswith("OFFSET = 9\n") and "    assert root(OFFSET) == 3\n" in p["test"]
  compile(p["prompt"] + p["canonical_solution"] + "\n" + p["test"], "<mbpp>", "exec")
  assert mbpp[1]["canonical_solution"] == "def rev(s): \n    return s[::-1] "  # no "\r"
  _, sanitized = hub.read_problems(snapshots["mbpp"] / "sanitized")
  assert sanitized[0]["entry_point"] == "circle_area"  # math.isclose(...) is not the function
  assert sanitized[0]["test"].startswith("import math\n")


@pytest.mark.parametrize("tests, code, setup, want", [
    (["assert set(similar(a, b)) == set(c)"], "", "", "similar"),
    (["assert math.isclose(area(2), 12.5)"], "", "import math", "area"),
    (["assert helper(f(1)) == 2"], "def f(x):\n  return x\n", "def helper(x): return x", "f"),
    (["assert g(1) == h(1)"], "def h(x):\n  pass\n", "", "h"),  # the one the code defines
    (["assert 1 == 1"], "", "", None),
])
def test_mbpp_entry_point(tests, code, setup, want):
  assert formats.mbpp_entry_point(tests, code, setup) == want


@pytest.mark.parametrize("row, message", [
    ({"task_id": 1, "text": "t", "test_list": []}, "test_list' must hold at least one"),
    ({"task_id": 1, "text": "t", "test_list": ["assert 1 == 1"]}, "cannot tell which function"),
    ({"task_id": 1, "text": "t", "test_list": "assert f(1)"}, "must be a list of strings"),
    ({"task_id": None, "text": "t", "test_list": ["assert f(1)"]}, "'task_id' must be"),
])
def test_bad_mbpp_rows_name_file_and_line(tmp_path, row, message):
  path = tmp_path / "code.jsonl"
  path.write_text(json.dumps({"task_id": 0, "text": "ok", "test_list": ["assert f(1) == 1"]})
                  + "\n" + json.dumps(row) + "\n")
  with pytest.raises(file_io.FormatError, match=f"code.jsonl:2: .*{message}"):
    formats.read_mbpp(path)


def test_bad_parquet_row_names_file_and_row(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  path = tmp_path / "test-00000-of-00001.parquet"
  pq.write_table(pa.table({"question": ["q", "r"], "answer": ["#### 1", "no answer"]}), path)
  with pytest.raises(file_io.FormatError, match=r"parquet: row 1: the answer has no"):
    hub.read_problems(path)


# ----------------------------------------------------------------------------- scoring


def _completions(name: str, problem: dict) -> tuple[str, str]:
  """(reference solution, a wrong one) for a problem of snapshot `name`."""
  if name in ("gsm8k", "hendrycks_math", "math500"):
    wrong = "#### 999" if name == "gsm8k" else "So the answer is $\\boxed{999}$."
    return problem["solution"], wrong
  if name == "apps":
    return json.loads(problem["solutions"])[0], "print(0)\n"
  if name == "humaneval":
    return problem["canonical_solution"], "    return None\n"
  return problem["canonical_solution"], hub_snapshots.MBPP_WRONG[int(problem["id"])]


@pytest.mark.parametrize("name, sub", [
    ("gsm8k", ""), ("hendrycks_math", ""), ("math500", ""), ("apps", ""), ("humaneval", ""),
    ("mbpp", ""), ("mbpp", "sanitized")])
def test_reference_solutions_pass_and_wrong_ones_fail(snapshots, tmp_path, capsys, name, sub):
  root = snapshots[name] / sub if sub else snapshots[name]
  _, problems = hub.read_problems(root)
  samples = tmp_path / "samples.jsonl"
  with samples.open("w") as f:
    for p in problems:
      for completion in _completions(name, p):
        f.write(json.dumps({"task_id": p["id"], "completion": completion}) + "\n")
  status = score.main(["--problems", str(root), "--samples", str(samples), "--k", "1"])
  out, err = capsys.readouterr()
  assert status == 0, err
  rows = [json.loads(l) for l in pathlib.Path(f"{samples}_results.jsonl").read_text().splitlines()]
  assert [r["passed"] for r in rows] == [True, False] * len(problems), rows
  assert json.loads(out.strip().splitlines()[-1]) == {"pass@1": 0.5}


def test_score_split_flag_and_unrecognised_paths(snapshots, tmp_path, capsys):
  samples = tmp_path / "s.jsonl"
  samples.write_text(json.dumps({"id": "0", "completion": "#### 7"}) + "\n")
  assert score.main(["--problems", str(snapshots["gsm8k"]), "--samples", str(samples),
                     "--split", "train", "--k", "1"]) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"pass@1": 1.0}
  assert score.main(["--problems", str(snapshots["gsm8k"]), "--samples", str(samples),
                     "--split", "validation"]) == 2
  assert "no 'validation' split here (splits: ['test', 'train'])" in capsys.readouterr().err
  odd = tmp_path / "odd"
  odd.mkdir()
  (odd / "test.jsonl").write_text(json.dumps({"a": 1}) + "\n")
  assert score.main(["--problems", str(odd), "--samples", str(samples)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and str(odd) in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- prepare


PREPARED = {  # snapshot -> (TFDS kind, {split: ids})
    "gsm8k": ("gsm8k", {"train": 2, "test": 3}),
    "hendrycks_math": ("math", {"train": ["algebra/train-00000-of-00001/0",
                                          "prealgebra/train-00000-of-00001/0"],
                                "test": [f"{ALGEBRA_TEST}/0", f"{ALGEBRA_TEST}/1",
                                         "prealgebra/test-00000-of-00001/0"]}),
    "math500": ("math", {"test": ["test/algebra/24.json", "test/prealgebra/1.json"]}),
    "apps": ("apps", {"train": ["0"], "test": ["4000", "4001"]}),
    "humaneval": ("humaneval", {"test": ["HumanEval/0", "HumanEval/1"]}),
    "mbpp": ("mbpp", {"train": ["601"], "validation": ["511"], "test": ["11", "12"]}),
}


def test_prepare_reads_every_snapshot_layout(snapshots, tmp_path, capsys):
  import tensorflow_datasets as tfds
  from restem_jax.data import __main__ as cli
  for name, (kind, splits) in PREPARED.items():
    data_dir = tmp_path / name
    assert cli.main(["prepare", f"--manual_dir={snapshots[name]}",
                     f"--data_dir={data_dir}"]) == 0, capsys.readouterr().err
    builder = tfds.builder_from_directory(capsys.readouterr().out.strip().splitlines()[-1])
    assert builder.name == ("gsm8k" if kind == "gsm8k" else f"restem_{kind}")
    for split, want in splits.items():
      examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
      if isinstance(want, int):  # the catalog gsm8k keeps no ids
        assert len(examples) == want
        continue
      assert sorted(e["id"].decode() for e in examples) == want, (name, split)
    assert set(builder.info.splits.keys()) == set(splits), name


def test_prepare_errors_are_one_line_with_exit_2(snapshots, tmp_path, capsys):
  from restem_jax.data import __main__ as cli
  odd = tmp_path / "odd"
  odd.mkdir()
  (odd / "notes.txt").write_text("nothing here")
  cases = [([f"--manual_dir={odd}"], f"{odd}: no data set layout recognised"),
           (["--dataset=math", f"--manual_dir={snapshots['gsm8k']}"],
            "holds gsm8k problems (config main/), not the math data set; prepare it with "
            "--dataset=gsm8k"),
           ([f"--manual_dir={tmp_path / 'missing'}"], "missing does not exist")]
  for args, message in cases:
    assert cli.main(["prepare", *args, f"--data_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_format_flag_is_checked_against_a_snapshot(snapshots):
  with pytest.raises(file_io.FormatError, match=r"holds gsm8k problems \(config main/\), not math"):
    hub.read_problems(snapshots["gsm8k"], fmt="math")
  assert hub.read_problems(snapshots["math500"] / "test.jsonl", fmt="math500")[0] == "math500"
  with pytest.raises(FileNotFoundError, match="no such file or directory"):
    hub.read_problems(snapshots["gsm8k"] / "nope")


def test_prepare_from_one_file_or_config_directory(snapshots, tmp_path):
  import tensorflow_datasets as tfds
  from restem_jax.data import tfds_builders
  one_file = snapshots["humaneval"] / "openai_humaneval" / "test-00000-of-00001.parquet"
  built = tfds_builders.prepare("humaneval", one_file, tmp_path / "he")
  assert tfds.builder_from_directory(str(built)).info.splits["test"].num_examples == 2
  built = tfds_builders.prepare("mbpp", snapshots["mbpp"] / "sanitized", tmp_path / "mbpp")
  ids = [e["id"].decode() for e in tfds.as_numpy(
      tfds.builder_from_directory(str(built)).as_dataset(split="test"))]
  assert sorted(ids) == ["12", "17"]


def test_hugging_face_cache_entry_and_unknown_directories(snapshots, tmp_path):
  """A cache entry (datasets--ORG--NAME: refs/main names a snapshot whose files link to blobs)
  reads as its snapshot; a directory of nothing known is a one-line error naming it."""
  import os
  entry = tmp_path / "datasets--openai--gsm8k"
  snap = entry / "snapshots" / "abc123"
  for src in sorted(snapshots["gsm8k"].rglob("*.parquet")):
    rel = src.relative_to(snapshots["gsm8k"])
    blob = entry / "blobs" / rel.as_posix().replace("/", "_")
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(src.read_bytes())
    (snap / rel).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, (snap / rel).parent), snap / rel)
  (entry / "refs").mkdir()
  (entry / "refs" / "main").write_text("abc123")
  (entry / "snapshots" / "old999").mkdir()
  fmt, problems = hub.read_problems(entry)
  assert fmt == "gsm8k" and [p["answer"] for p in problems] == ["15", "6", "1,450"]
  empty = tmp_path / "empty"
  (empty / "sub").mkdir(parents=True)
  with pytest.raises(file_io.FormatError, match=r"empty: no known layout here: expected a "
                                                r"Hugging Face hub snapshot"):
    hub.read_problems(empty)
