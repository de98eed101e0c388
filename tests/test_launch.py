"""The Cloud TPU launcher: its dry run, and a real run against a fake gcloud that records calls;
the fit check it runs first (restem_jax.aot) refuses a run too big for the slice."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch", "tpu.py")
ARGS = ["--config=configs/demo.py", "--workdir=gs://bucket/runs/x", "--tpu=t1",
        "--accelerator=v4-32", "--zone=us-central2-b", "--skip_fit_check"]

FAKE_GCLOUD = """#!/usr/bin/env python3
import json, os, sys
log = os.environ["FAKE_GCLOUD_LOG"]
with open(log, "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
state = os.environ.get("FAKE_GCLOUD_STATE", "")
calls = [json.loads(l) for l in open(log)]
if "ssh" in sys.argv and any("restem_jax.main" in a for a in sys.argv):
  runs = sum(1 for c in calls if "ssh" in c and any("restem_jax.main" in a for a in c))
  sys.exit(1 if runs <= int(os.environ.get("FAKE_GCLOUD_FAIL_RUNS", "0")) else 0)
if "describe" in sys.argv:
  print(state)
sys.exit(0)
"""


def _launch(args, env=None, timeout=60):
  return subprocess.run([sys.executable, LAUNCH, *args], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=timeout)


def test_dry_run_prints_each_gcloud_command():
  out = _launch(ARGS + ["--dry-run", "--spot", "--config.restem.num_iterations=2"])
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert all(line.startswith("gcloud compute tpus tpu-vm ") for line in lines)
  verbs = [line.split()[4] for line in lines]
  assert verbs == ["create", "scp", "ssh", "ssh", "ssh", "delete"]
  assert "--accelerator-type=v4-32" in lines[0] and "--spot" in lines[0]
  run = lines[4]
  assert "--worker=all" in run and "python3 -m restem_jax.main" in run
  assert "--workdir=gs://bucket/runs/x" in run
  assert "--config.distributed=True" in run  # v4-32 is 4 hosts
  assert "--config.restem.num_iterations=2" in run


def test_single_host_slice_does_not_initialise_distributed():
  out = _launch([a.replace("v4-32", "v4-8") for a in ARGS] + ["--dry-run", "--keep"])
  assert "--config.distributed" not in out.stdout
  assert " delete " not in out.stdout


@pytest.mark.parametrize("state,fails,expected_rc,expected_creates", [
    ("READY", 0, 0, 1),        # a clean run
    ("PREEMPTED", 1, 0, 2),    # preempted once: recreated and resumed
    ("READY", 1, 1, 1),        # a real failure: not retried
])
def test_real_run_with_fake_gcloud(tmp_path, state, fails, expected_rc, expected_creates):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  fake = bin_dir / "gcloud"
  fake.write_text(FAKE_GCLOUD)
  fake.chmod(0o755)
  log = tmp_path / "calls.jsonl"
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_GCLOUD_LOG=str(log),
             FAKE_GCLOUD_STATE=state, FAKE_GCLOUD_FAIL_RUNS=str(fails))
  out = _launch(ARGS + ["--max_restarts=2"], env=env)
  assert out.returncode == expected_rc, out.stderr
  import json
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  verbs = [c[3] for c in calls]
  assert verbs.count("create") == expected_creates
  assert verbs[-1] == "delete"
  runs = [c for c in calls if c[3] == "ssh" and any("restem_jax.main" in a for a in c)]
  assert len(runs) == fails + 1 if expected_rc == 0 else len(runs) == 1
  # The same command every time: the run resumes from its workdir.
  assert all(r == runs[0] for r in runs)


def _launcher():
  spec = importlib.util.spec_from_file_location("launch_tpu", LAUNCH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_fit_check_runs_first_for_the_accelerator_with_the_overrides(monkeypatch, capsys):
  launch = _launcher()
  calls = []
  verdict = {"fits": True, "too_big": [], "programs": {}, "topology": "v4:2x2x4"}

  def fake_run(cmd, **kwargs):
    calls.append(cmd)
    return subprocess.CompletedProcess(cmd, 0, stdout="table\n" + json.dumps(verdict) + "\n",
                                       stderr="")
  monkeypatch.setattr(launch.subprocess, "run", fake_run)
  args = [a for a in ARGS if a != "--skip_fit_check"]
  assert launch.main(args + ["--dry-run", "--config.restem.num_samples=8"]) == 0
  (cmd,) = calls
  assert cmd[1:3] == ["-m", "restem_jax.aot"]
  assert "--topology=v4-32" in cmd and "--config=configs/demo.py" in cmd
  assert "--config.restem.num_samples=8" in cmd and "--fail_fast" in cmd
  assert capsys.readouterr().out.splitlines()[0].startswith("gcloud compute tpus tpu-vm create")


def test_fit_check_that_cannot_run_refuses_in_one_line(monkeypatch, capsys):
  launch = _launcher()
  monkeypatch.setattr(launch.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
      cmd, 2, stdout="", stderr="W0000 noise\naot: libtpu is not installed: pip install\n"))
  args = [a for a in ARGS if a != "--skip_fit_check"]
  assert launch.main(args + ["--dry-run"]) == 2
  out = capsys.readouterr()
  assert out.out == ""
  (line,) = out.err.strip().splitlines()
  assert "libtpu is not installed" in line and "--skip_fit_check" in line


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install -e '.[tpu]'): no TPU compiler")
def test_dry_run_refuses_a_run_that_does_not_fit_before_any_gcloud_command():
  # The smoke run with a 2M-token vocabulary at width 2048: 16 GiB of float32 embedding on
  # every chip of its data-parallel mesh, more than a v5e chip's HBM.
  args = ["--config=configs/demo.py:smoke", "--workdir=gs://bucket/runs/x", "--tpu=t1",
          "--accelerator=v5litepod-4", "--zone=us-west4-a", "--dry-run",
          "--config.model.vocab_size=2000000", "--config.model.d_model=2048",
          "--config.model.num_layers=1"]
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  out = _launch(args, env=env, timeout=600)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "gcloud" not in out.stdout
  refusal = [line for line in out.stderr.splitlines() if line.startswith("launch: ")]
  assert len(refusal) == 1
  assert "does not fit on v5litepod-4" in refusal[0] and "the train program" in refusal[0]
