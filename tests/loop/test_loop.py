"""The ReST^EM loop end to end on the smoke config: contracts, report, and kill -9 resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, SMOKE_ARGS, smoke_env


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "restem_jax.main", *SMOKE_ARGS, f"--workdir={workdir}", *extra]


def _run(workdir, *extra, timeout=600):
  out = subprocess.run(_cmd(workdir, *extra), cwd=REPO, env=smoke_env(), capture_output=True,
                       text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-4000:]
  return out


def test_summary_contract(smoke_run):
  workdir, out = smoke_run
  summary = json.loads((workdir / "summary.json").read_text())
  assert set(summary) >= {"evaluations", "iterations"}
  models = {e["model"] for e in summary["evaluations"]}
  assert {"base", "sft_human", "iter1"} <= models
  for e in summary["evaluations"]:
    assert e["split"] in ("test", "valid") and e["task"] == "arith"
    assert isinstance(e["num_problems"], int) and 0.0 <= e["accuracy"] <= 1.0
    for k, v in {**e["pass_at_k"], **e["maj_at_k"]}.items():
      assert int(k) >= 1 and 0.0 <= v <= 1.0
    if e["split"] == "test":
      assert set(e["pass_at_k"]) == {"1", "4"}
      # pass@k never decreases with k
      assert e["pass_at_k"]["1"] <= e["pass_at_k"]["4"] + 1e-12
  for it in summary["iterations"]:
    assert it["num_samples"] == 48 * 4  # every train problem, N samples each
    assert 0 <= it["num_kept"] <= it["num_correct"] <= it["num_samples"]
    assert it["num_kept"] <= 48 * 2  # at most K per problem
    assert 0.0 <= it["train_solve_rate"] <= 1.0
  # The table is printed at the end.
  assert "greedy acc" in out.stdout and "sft_human" in out.stdout


def test_report_and_run_directory(smoke_run):
  workdir, _ = smoke_run
  for name in ("report.md", "accuracy.png", "pass_at_k.png", "kept_per_problem.png",
               "config.json", "vocab.model", "log.txt"):
    assert (workdir / name).exists(), name
  assert (workdir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  kept = [json.loads(line) for line in
          (workdir / "iter1" / "kept" / "kept.jsonl").read_text().splitlines()]
  scores = [json.loads(line) for p in sorted((workdir / "iter1" / "scores").glob("*.jsonl"))
            for line in p.read_text().splitlines()]
  passed = {(r["id"], r["sample_index"]) for r in scores if r["passed"]}
  assert all((k["id"], k["sample_index"]) in passed for k in kept)  # only reward-1 samples
  config = json.loads((workdir / "config.json").read_text())
  assert config["restem"]["num_samples"] == 4


def test_rerun_of_a_finished_run_changes_nothing(smoke_run):
  workdir, _ = smoke_run
  before = (workdir / "summary.json").read_text()
  out = _run(workdir)
  assert (workdir / "summary.json").read_text() == before
  assert "stage train_base: start" not in out.stderr  # nothing recomputed


def test_changed_config_is_refused(smoke_run):
  workdir, _ = smoke_run
  out = subprocess.run(_cmd(workdir, "--config.restem.num_samples=8"), cwd=REPO, env=smoke_env(),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "restem.num_samples" in out.stderr and "different config" in out.stderr


def test_unknown_override_is_an_error(tmp_path):
  out = subprocess.run(_cmd(tmp_path / "w", "--config.restem.num_sampels=8"), cwd=REPO,
                       env=smoke_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "num_sampels" in out.stderr


def _kill_when(workdir, predicate, timeout=600):
  """Starts the run, kill -9s it as soon as predicate(workdir) holds; True if it was killed."""
  proc = subprocess.Popen(_cmd(workdir), cwd=REPO, env=smoke_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  deadline = time.time() + timeout
  try:
    while proc.poll() is None and time.time() < deadline:
      if predicate(workdir):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
      time.sleep(0.05)
    return False
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()


def test_kill_minus_nine_anywhere_then_resume_equals_uninterrupted(smoke_run, tmp_path):
  """Killed during training, generation and scoring, the rerun ends with the same summary."""
  reference, _ = smoke_run
  workdir = tmp_path / "killed"
  points = [
      # during the base model's training: a train-state checkpoint exists, no result yet
      lambda w: any((w / "train" / "base" / "checkpoints").glob("*/state"))
      and not (w / "train" / "base" / "train_result.json").exists(),
      # during generation: some sample shard written, not all
      lambda w: any((w / "iter1" / "samples").glob("samples-*.jsonl")),
      # during scoring: some score shard written
      lambda w: any((w / "iter1" / "scores").glob("*.jsonl")),
      # during an iteration's fine-tuning
      lambda w: (w / "train" / "iter1").exists(),
  ]
  killed = [_kill_when(workdir, p) for p in points]
  assert any(killed), "the run finished before any kill point"
  _run(workdir)
  got = json.loads((workdir / "summary.json").read_text())
  want = json.loads((reference / "summary.json").read_text())
  assert got == want


def test_code_demo_smoke_trains_on_samples_that_pass_sandboxed_tests(tmp_path):
  """`configs/demo_code.py:smoke`: the loop on the code task, its programs judged in the sandbox."""
  workdir = tmp_path / "code"
  out = subprocess.run([sys.executable, "-m", "restem_jax.main",
                        "--config=configs/demo_code.py:smoke", "--config.progress_bar=False",
                        f"--workdir={workdir}"], cwd=REPO, env=smoke_env(), capture_output=True,
                       text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert {(e["model"], e["task"]) for e in summary["evaluations"]} >= {
      ("base", "prog"), ("sft_human", "prog"), ("iter1", "prog")}
  (it,) = summary["iterations"]
  assert it["num_samples"] == 32 * 4 and 0 < it["num_kept"] <= 32 * 2
  scores = [json.loads(line) for p in sorted((workdir / "iter1" / "scores").glob("*.jsonl"))
            for line in p.read_text().splitlines()]
  assert len(scores) == 32 * 4
  # Verdicts come from running the unit tests: failures say why (an assertion, an error).
  assert all(r["reason"] == "passed" for r in scores if r["passed"])
  assert all(r["reason"].startswith(("failed", "error", "timeout")) for r in scores
             if not r["passed"])
  passed = {(r["id"], r["sample_index"]) for r in scores if r["passed"]}
  kept = [json.loads(line) for line in
          (workdir / "iter1" / "kept" / "kept.jsonl").read_text().splitlines()]
  assert kept and all((k["id"], k["sample_index"]) in passed for k in kept)
  assert (workdir / "train" / "iter1").is_dir()  # the iteration fine-tuned on them


def test_multi_process_flags_reach_jax_distributed(tmp_path, monkeypatch):
  from absl import app
  from restem_jax import config_lib, loop, main as main_lib
  from restem_jax.model import partitioning
  assert main_lib.distributed_options(None, None, None) == {}
  options = main_lib.distributed_options("10.0.0.2:1234", 4, 3)
  assert options == {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 3}
  for bad, message in [(("10.0.0.2:1234", 4, None), "missing --process_id"),
                       (("10.0.0.2", 4, 0), "HOST:PORT"), (("h:1", 2, 2), "process_id <")]:
    with pytest.raises(app.UsageError, match=message):
      main_lib.distributed_options(*bad)
  seen = []

  def fake_initialize(**kwargs):
    seen.append(kwargs)
    raise RuntimeError("initialized")
  monkeypatch.setattr(partitioning.jax.distributed, "initialize", fake_initialize)
  config = config_lib.base_config()
  assert not config.distributed  # the flags alone turn it on
  with pytest.raises(RuntimeError, match="initialized"):
    loop.run(config, tmp_path, distributed_options=options)
  assert seen == [options]


def test_console_is_quiet(smoke_run):
  """No SentencePiece, TensorFlow or absl chatter on the console; the log file keeps it."""
  workdir, out = smoke_run
  for noise in ("precompiled_charsmap", "cudart_stub", "oneDNN", "absl::InitializeLog",
                "Traceback"):
    assert noise not in out.stderr, noise
  assert "stage train_base: start" in out.stderr  # the run's own log lines are there


def test_finished_run_rerun_reports_and_a_progress_bar_does_not_lock(smoke_run):
  workdir, _ = smoke_run
  before = (workdir / "summary.json").read_text()
  out = _run(workdir, "--config.progress_bar=True")  # presentation only: not a new config
  assert "this run is finished" in out.stdout and "greedy acc" in out.stdout
  assert "stage " not in out.stderr  # no stage ran, none was even looked at
  assert (workdir / "summary.json").read_text() == before


def test_loop_scalars_in_tensorboard(smoke_run):
  from restem_jax.training import metric_writer
  workdir, _ = smoke_run
  summary = json.loads((workdir / "summary.json").read_text())
  restem = metric_writer.read_scalars(workdir / "tensorboard" / "restem")
  acc = {e["model"]: e["accuracy"] for e in summary["evaluations"] if e["split"] == "test"}
  greedy = dict(restem["test/arith/greedy_accuracy"])
  assert sorted(greedy) == [0, 1, 2]  # base, iter1, iter2
  assert greedy[0] == pytest.approx(acc["base"]) and greedy[2] == pytest.approx(acc["iter2"])
  assert {"test/arith/pass@4", "test/arith/maj@4", "valid/arith/greedy_accuracy"} <= set(restem)
  for it in summary["iterations"]:
    step = it["iteration"]
    assert dict(restem["iteration/kept"])[step] == it["num_kept"]
    assert dict(restem["iteration/samples"])[step] == it["num_samples"]
    assert dict(restem["iteration/correct"])[step] == it["num_correct"]
    assert dict(restem["iteration/train_solve_rate"])[step] == pytest.approx(
        it["train_solve_rate"])
  sft = metric_writer.read_scalars(workdir / "tensorboard" / "sft_human")
  assert dict(sft["test/arith/greedy_accuracy"])[0] == pytest.approx(acc["sft_human"])


def test_eval_records_carry_the_prompt_and_the_reference_answer(smoke_run):
  workdir, _ = smoke_run
  greedy = [json.loads(line) for line in
            (workdir / "eval" / "iter1" / "arith-test-greedy.jsonl").read_text().splitlines()]
  sampled = [json.loads(line) for line in
             (workdir / "eval" / "iter1" / "arith-test-sampled.jsonl").read_text().splitlines()]
  assert greedy and sampled
  for r in greedy:
    assert r["question"] and r["answer"] and r["question"] in r["prompt"]
  assert all(r["question"] and r["answer"] for r in sampled)
  # The reference answer is the one the reward checks against: a passing sample's key is it.
  assert all(r["key"] == r["answer"] for r in greedy + sampled if r["passed"])
