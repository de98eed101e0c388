"""One adaptive iteration with dedup end to end from the CLI, from the smoke run's base model."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SMOKE_ARGS, smoke_env


@pytest.fixture(scope="module")
def adaptive_run(smoke_run, tmp_path_factory):
  """configs/demo.py:smoke's base model, one adaptive iteration with dedup, from the CLI."""
  base = json.loads((smoke_run[0] / "stages" / "train_base.json").read_text())["model_dir"]
  workdir = tmp_path_factory.mktemp("adaptive") / "run"
  args = [f"--config.base_checkpoint={base}", "--config.baselines.base=False",
          "--config.baselines.sft_human=False", "--config.restem.num_iterations=1",
          "--config.restem.budget=adaptive", "--config.restem.dedup=True",
          "--config.restem.round_samples=2", "--config.restem.max_samples_per_problem=8",
          "--config.eval.splits=test"]
  out = subprocess.run([sys.executable, "-m", "restem_jax.main", *SMOKE_ARGS, *args,
                        f"--workdir={workdir}"], cwd=REPO, env=smoke_env(),
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  return workdir


def test_adaptive_iteration_end_to_end(adaptive_run):
  workdir = adaptive_run
  summary = json.loads((workdir / "summary.json").read_text())
  (it,) = summary["iterations"]
  problems = 48  # demo.py:smoke's training problems, N = 4 samples each
  spread = {int(k): v for k, v in it["samples_per_problem_histogram"].items()}
  assert sum(spread.values()) == problems and max(spread) <= 8
  assert it["num_samples"] == sum(k * v for k, v in spread.items()) <= 4 * problems
  assert it["rounds"][0] == {"round": 1, "problems": problems, "samples": 2 * problems}
  assert sum(r["samples"] for r in it["rounds"]) == it["num_samples"]
  assert it["problems_with_kept"] == problems - it["kept_per_problem_histogram"].get("0", 0)
  assert it["duplicates_dropped"] >= 0 and it["num_kept"] <= 2 * problems
  scores = [json.loads(line) for p in sorted((workdir / "iter1" / "scores").glob("round-*/*"))
            for line in p.read_text().splitlines()]
  assert len(scores) == it["num_samples"]
  kept = [json.loads(line) for line in
          (workdir / "iter1" / "kept" / "kept.jsonl").read_text().splitlines()]
  passed = {(r["id"], r["sample_index"]) for r in scores if r["passed"]}
  assert kept and all((k["id"], k["sample_index"]) in passed for k in kept)
  report = (workdir / "report.md").read_text()
  assert "problems with kept" in report and "Adaptive E-step" in report
  assert (workdir / "stages" / "estep_iter1.json").exists()
