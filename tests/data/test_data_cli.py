"""`python -m restem_jax.data`: generate, train_vocab, prepare; exit status 2 on bad input."""

import json
import subprocess
import sys

from restem_jax.data import __main__ as cli
from restem_jax.data import formats
from restem_jax.data import vocab as vocab_lib
from restem_jax.rewards import score


def test_generate_arith_writes_generic_jsonl(tmp_path):
  assert cli.main(["generate", "--task=arith", f"--out_dir={tmp_path}", "--seed=4",
                   "--sizes=train=30,valid=5,test=10", '--knobs={"max_steps": 4}']) == 0
  splits = {s: formats.read_generic(tmp_path / f"{s}.jsonl") for s in ("train", "valid", "test")}
  assert {s: len(p) for s, p in splits.items()} == {"train": 30, "valid": 5, "test": 10}
  assert all(p["solution"].endswith(f"The final answer is {p['answer']}.")
             for ps in splits.values() for p in ps)
  again = tmp_path / "again"
  assert cli.main(["generate", "--task=arith", f"--out_dir={again}", "--seed=4",
                   "--sizes=train=30,valid=5,test=10", '--knobs={"max_steps": 4}']) == 0
  assert (again / "test.jsonl").read_text() == (tmp_path / "test.jsonl").read_text()


def test_generate_prog_writes_files_the_scoring_cli_accepts(tmp_path, capsys):
  assert cli.main(["generate", "--task=prog", f"--out_dir={tmp_path}",
                   "--sizes=train=4,test=6"]) == 0
  problems = formats.read_humaneval(tmp_path / "test.humaneval.jsonl")
  assert len(formats.read_apps(tmp_path / "test.apps.jsonl")) == len(problems) == 6
  samples = tmp_path / "samples.jsonl"
  samples.write_text("".join(json.dumps({"task_id": p["task_id"],
                                         "completion": p["canonical_solution"]}) + "\n"
                             for p in problems))
  capsys.readouterr()
  assert score.main(["--problems", str(tmp_path / "test.humaneval.jsonl"),
                     "--samples", str(samples), "--k", "1"]) == 0
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pass@1"] == 1.0


def test_train_vocab_on_a_task(tmp_path):
  out = tmp_path / "arith.model"
  assert cli.main(["train_vocab", "--task=arith", f"--out={out}", "--vocab_size=400",
                   "--sizes=train=50,valid=5,test=5"]) == 0
  vocab = vocab_lib.load_vocab(out)
  assert vocab.vocab_size <= 400
  text = "Question: Start with 12. Add 3. What is the result?\nAnswer: "
  assert vocab.decode(vocab.encode(text)) == text


def test_bad_input_exits_2_with_the_reason(tmp_path, capsys):
  assert cli.main(["prepare", "--dataset=math", f"--manual_dir={tmp_path}",
                   f"--data_dir={tmp_path / 'out'}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "github.com/hendrycks/math" in err
  (tmp_path / "train.jsonl").write_text('{"id": "a", "question": "q", "answer": "1"}\n{oops\n')
  assert cli.main(["train_vocab", "--task=jsonl", f"--out={tmp_path / 'v.model'}",
                   f"--train_path={tmp_path / 'train.jsonl'}",
                   f"--test_path={tmp_path / 'train.jsonl'}"]) == 2
  assert "train.jsonl:2: malformed JSON" in capsys.readouterr().err


def test_module_entry_point_and_usage_errors(tmp_path):
  run = subprocess.run([sys.executable, "-m", "restem_jax.data", "generate", "--task=arith",
                        f"--out_dir={tmp_path}", "--sizes=train=x"], capture_output=True,
                       text=True, check=False)
  assert run.returncode == 2 and "--sizes wants split=N" in run.stderr
