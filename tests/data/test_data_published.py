"""Published data sets: TFDS builders from a manual dir, seqio TfdsDataSource, JSONL, errors."""

import gzip
import json
import pathlib
import shutil

import pytest
import seqio
import tensorflow_datasets as tfds

from restem_jax.data import fewshot, records, tasks, tfds_builders
from restem_jax.data import vocab as vocab_lib

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "data"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  texts = [p.read_text() for p in FIXTURES.rglob("*.json*") if p.suffix != ".gz"]
  texts += [fewshot.load(n).prefix(len(fewshot.load(n).examples)) for n in fewshot.BUILTIN]
  path = vocab_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("v") / "v.model", 800)
  return vocab_lib.load_vocab(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Every TFDS data set prepared once from the fixture files."""
  out = tmp_path_factory.mktemp("tfds")
  for kind in ("math", "apps", "humaneval", "gsm8k"):
    tfds_builders.prepare(kind, FIXTURES / kind, out)
  return out


def _ids(problems):
  return sorted(p["id"] for p in problems)


def test_math_from_tfds(vocab, data_dir):
  name = tasks.register_task("math", vocab, data_dir=data_dir, valid_size=2)
  assert isinstance(seqio.get_mixture_or_task(name).source, seqio.TfdsDataSource)
  train, valid, test = (tasks.load_problems(name, s) for s in ("train", "valid", "test"))
  assert (len(train), len(valid)) == (10, 2)
  assert _ids(train + valid) == _ids(
      {"id": str(p.relative_to(FIXTURES / "math"))[:-5]} for p in
      (FIXTURES / "math" / "train").rglob("*.json"))
  assert _ids(test) == ["test/algebra/1", "test/number_theory/3", "test/prealgebra/2"]
  by_id = {p["id"]: p for p in test}
  p = by_id["test/prealgebra/2"]
  assert p["answer"] == "\\frac{5}{6}"  # the solution's last \boxed{}
  assert p["level"] == "Level 2" and p["subject"] == "Prealgebra"
  # 4-shot Minerva prompt, then this problem.
  assert p["prompt"] == fewshot.load("math_minerva_4shot").format({"question": p["question"]}, 4)
  assert p["prompt"].count("I hope it is correct.") == 4
  assert vocab.decode(p["prompt_ids"]) == p["prompt"]


def test_apps_from_tfds_keeps_introductory_problems(vocab, data_dir):
  name = tasks.register_task("apps", vocab, data_dir=data_dir, num_shots=1)
  splits = {s: tasks.load_problems(name, s) for s in ("train", "valid", "test")}
  assert _ids(splits["train"] + splits["valid"]) == ["0", "1", "2"]  # "3" is an interview one
  assert _ids(splits["test"]) == ["4000", "4001"]  # 4002 is a competition problem
  by_id = {p["id"]: p for p in splits["test"]}
  call = by_id["4001"]
  assert call["format_line"] == "Use Call-Based format"
  assert call["starter_code"] == "def largest(xs):\n"
  assert json.loads(call["tests"])["fn_name"] == "largest"
  assert call["prompt"].endswith("\nQUESTION:\n" + call["question"] + "\ndef largest(xs):\n\n"
                                 "Use Call-Based format\nANSWER:\n")
  assert by_id["4000"]["format_line"] == "Use Standard Input format"
  assert by_id["4000"]["solution"] == "a, b = map(int, input().split())\nprint(a * b)\n"
  every = tasks.register_task("apps", vocab, name="apps_all", data_dir=data_dir,
                              difficulties=("introductory", "interview", "competition"))
  assert len(tasks.load_problems(every, "test")) == 3


def test_humaneval_from_tfds(vocab, data_dir):
  name = tasks.register_task("humaneval", vocab, data_dir=data_dir)
  problems = tasks.load_problems(name, "test")
  assert _ids(problems) == ["Fixture/0", "Fixture/1"]
  p = {q["id"]: q for q in problems}["Fixture/0"]
  assert p["prompt"] == p["question"] and p["prompt"].startswith("def add(a, b):")  # 0-shot
  assert p["entry_point"] == "add" and p["test"].startswith("def check(candidate):")
  assert p["solution"] == "    return a + b\n"


def test_humaneval_prepare_defaults_to_the_packaged_file(tmp_path, vocab):
  from restem_jax.data import __main__ as cli
  assert cli.main(["prepare", "--dataset=humaneval", f"--data_dir={tmp_path}"]) == 0
  name = tasks.register_task("humaneval", vocab, name="he_full", data_dir=tmp_path)
  problems = tasks.load_problems(name, "test")
  assert len(problems) == 164 and "HumanEval/0" in {p["id"] for p in problems}


def test_gsm8k_from_the_catalog_builder_and_from_jsonl(vocab, data_dir):
  # Prepared: TFDS's catalog builder reads it (our builder only replaced its download step).
  assert type(tfds.builder("gsm8k", data_dir=str(data_dir))).__module__.startswith(
      "tensorflow_datasets.")
  tfds_name = tasks.register_task("gsm8k", vocab, name="gsm8k_tfds", data_dir=data_dir)
  assert isinstance(seqio.get_mixture_or_task(tfds_name).source, seqio.TfdsDataSource)
  jsonl_name = tasks.register_task("gsm8k", vocab, name="gsm8k_jsonl",
                                   manual_dir=FIXTURES / "gsm8k")
  for split, n in (("train", 5), ("valid", 1), ("test", 3)):
    from_tfds = tasks.load_problems(tfds_name, split)
    from_jsonl = tasks.load_problems(jsonl_name, split)
    assert len(from_tfds) == len(from_jsonl) == n
  test = {p["id"]: p for p in tasks.load_problems(jsonl_name, "test")}
  assert sorted(test) == ["0", "1", "2"]  # line numbers, as the scoring CLI has them
  assert test["2"]["answer"] == "180"
  assert test["2"]["solution"] == "60 * 3 = 180 miles.\n#### 180"  # no <<...>> annotations
  assert test["2"]["prompt"].count("\n#### ") == 8  # 8-shot chain of thought
  catalog = {p["question"]: p for p in tasks.load_problems(tfds_name, "test")}
  assert {q: (p["answer"], p["solution"]) for q, p in catalog.items()} == {
      p["question"]: (p["answer"], p["solution"]) for p in test.values()}


def test_generic_jsonl_with_and_without_valid_file(vocab):
  paths = {k: FIXTURES / "jsonl" / f"{k.split('_')[0]}.jsonl"
           for k in ("train_path", "valid_path", "test_path")}
  name = tasks.register_task("jsonl", vocab, **paths)
  assert _ids(tasks.load_problems(name, "valid")) == ["v0"]
  train = tasks.load_problems(name, "train")
  assert _ids(train) == ["t0", "t1", "t2", "t3", "t4", "t5"]
  assert {p["id"]: p["solution"] for p in train}["t3"] == ""  # no human solution
  held = tasks.register_task("jsonl", vocab, name="jsonl_held", train_path=paths["train_path"],
                             test_path=paths["test_path"], valid_size=2)
  train, valid = (tasks.load_problems(held, s) for s in ("train", "valid"))
  assert len(train) == 4 and len(valid) == 2
  assert not set(_ids(train)) & set(_ids(valid))
  assert tasks.load_problems(held, "test")[0]["prompt"] == "Question: What is 8 - 5?\nAnswer: "


def test_missing_data_names_files_source_and_command(tmp_path, vocab):
  with pytest.raises(FileNotFoundError) as e:
    tasks.register_task("math", vocab, data_dir=tmp_path)
  message = str(e.value)
  assert "prepare --dataset=math" in message and "github.com/hendrycks/math" in message
  assert "train/<subject>/<n>.json" in message
  with pytest.raises(FileNotFoundError, match=r"lacks \['train.jsonl', 'test.jsonl'\].*"
                                              r"codeparrot/apps"):
    tfds_builders.prepare("apps", tmp_path, tmp_path / "out")
  with pytest.raises(FileNotFoundError, match="grade-school-math"):
    tasks.register_task("gsm8k", vocab, data_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match=r"no.jsonl. Expected one JSON object a line"):
    tasks.register_task("jsonl", vocab, train_path=tmp_path / "no.jsonl",
                        test_path=tmp_path / "no.jsonl")


def _bad_jsonl(tmp_path, lines, name="train.jsonl"):
  path = tmp_path / name
  path.write_bytes(b"".join(x if isinstance(x, bytes) else (x + "\n").encode() for x in lines))
  return path


GOOD = json.dumps({"id": "a", "question": "What is 1 + 1?", "answer": "2"})


@pytest.mark.parametrize("lines, message", [
    ([GOOD, '{"id": "b", "question": "q"'], r"train.jsonl:2: malformed JSON"),
    ([GOOD, json.dumps({"id": "b", "question": "q"})], r"train.jsonl:2: field 'answer'"),
    ([json.dumps({"id": "b", "question": " ", "answer": "1"})], r"train.jsonl:1: field "
                                                                  r"'question' is empty"),
    ([GOOD, GOOD], r"train.jsonl:2: duplicate id 'a'"),
    ([GOOD, b'{"id": "\xff\xfe", "question": "q", "answer": "1"}\n'], r"train.jsonl:2: not UTF-8"),
])
def test_invalid_jsonl_is_a_clear_error(tmp_path, vocab, lines, message):
  train = _bad_jsonl(tmp_path, lines)
  test = _bad_jsonl(tmp_path, [json.dumps({"id": "z", "question": "q", "answer": "1"})],
                    "test.jsonl")
  with pytest.raises(ValueError, match=message):
    tasks.register_task("jsonl", vocab, train_path=train, test_path=test)


def test_ids_shared_between_splits_are_an_error(tmp_path, vocab):
  train = _bad_jsonl(tmp_path, [GOOD, json.dumps({"id": "b", "question": "q", "answer": "1"})])
  test = _bad_jsonl(tmp_path, [GOOD], "test.jsonl")
  with pytest.raises(ValueError, match="duplicate id 'a' in the train and test splits"):
    tasks.register_task("jsonl", vocab, train_path=train, test_path=test, valid_size=1)


def test_invalid_published_files_fail_prepare_with_file_and_line(tmp_path):
  math_dir = tmp_path / "math"
  shutil.copytree(FIXTURES / "math", math_dir)
  (math_dir / "train" / "algebra" / "1.json").write_text('{"problem": "x", "level": ')
  with pytest.raises(ValueError, match=r"train/algebra/1.json: malformed JSON"):
    tfds_builders.prepare("math", math_dir, tmp_path / "out")
  gsm = tmp_path / "gsm8k"
  shutil.copytree(FIXTURES / "gsm8k", gsm)
  with open(gsm / "test.jsonl", "a") as f:
    f.write(json.dumps({"question": "q", "answer": "no final answer"}) + "\n")
  with pytest.raises(ValueError, match=r"test.jsonl:4: the answer has no '#### N'"):
    tfds_builders.prepare("gsm8k", gsm, tmp_path / "out")
  he = tmp_path / "he"
  he.mkdir()
  with gzip.open(he / "HumanEval.jsonl.gz", "wt") as f:
    f.write(json.dumps({"task_id": "X/0", "prompt": "def f():\n", "test": "",
                        "entry_point": "f"}) + "\n")
  with pytest.raises(ValueError, match=r"HumanEval.jsonl.gz:1: field 'test' is empty"):
    tfds_builders.prepare("humaneval", he, tmp_path / "out")


def test_apps_solutions_must_be_a_json_list(tmp_path):
  apps = tmp_path / "apps"
  shutil.copytree(FIXTURES / "apps", apps)
  rows = [json.loads(x) for x in (apps / "train.jsonl").read_text().splitlines()]
  rows[1]["solutions"] = "print(1)"
  (apps / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(ValueError, match="APPS problem 1: 'solutions' is not a JSON list"):
    records.read("apps", apps, "train")
