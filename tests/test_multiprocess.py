"""Several processes for real: two JAX processes on localhost, joined by jax.distributed.

`multiprocess_worker.py` runs twice at once: as two processes with 4 CPU devices each (the
coordinator on 127.0.0.1, CPU collectives over gloo), and as one process with all 8 devices,
the reference. Over meshes spanning both processes it trains (each host feeding its own rows of
every batch), evaluates on a mesh whose model axis spans the processes, samples one global batch,
and samples per host into shard files (the Generate step's layout). Everything must equal the
one-process run: losses and parameters to float tolerance, tokens exactly.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from restem_jax.sampling import shards as sample_shards

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "multiprocess_worker.py")
DEVICES = 8
PROCESSES = 2
TIMEOUT_S = 300  # the whole test, all processes together; ~1 minute on an idle 2-core machine


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  # XLA reads the device count once, when the backend starts: each child gets its own. LLVM
  # optimisation off: compiling is most of the run time, and what is tested here is which
  # values go where, not generated code. The reference and the two processes compile with the
  # same flags, so their arithmetic agrees.
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                      "--xla_backend_optimization_level=0")
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  return env


class _Procs:
  """Child processes with their output in files; all are killed if one fails or time runs out."""

  def __init__(self, log_dir):
    self.log_dir = log_dir
    self.procs: list[tuple[str, subprocess.Popen, str]] = []

  def start(self, name: str, args: list[str], devices: int,
            command: tuple[str, ...] = (sys.executable, WORKER)) -> None:
    log = os.path.join(self.log_dir, f"{name}.log")
    with open(log, "w") as f:
      proc = subprocess.Popen([*command, *args], cwd=REPO, env=_env(devices),
                              stdout=f, stderr=subprocess.STDOUT)
    self.procs.append((name, proc, log))

  def logs(self) -> str:
    parts = []
    for name, proc, log in self.procs:
      with open(log) as f:
        # Without XLA's info and warning lines (e.g. SPMD's resharding notes) and gloo's.
        lines = [l for l in f.read().splitlines()
                 if not re.match(r"[IW]\d{4} ", l) and "Gloo" not in l]
      parts.append(f"--- {name} (exit {proc.returncode}) ---\n" + "\n".join(lines[-60:]))
    return "\n".join(parts)

  def kill(self) -> None:
    for _, proc, _ in self.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()

  def wait(self, timeout: float) -> None:
    deadline = time.time() + timeout
    try:
      while True:
        codes = [proc.poll() for _, proc, _ in self.procs]
        if any(c not in (None, 0) for c in codes):
          time.sleep(2)  # let the other side print its view of the failure
          self.kill()
          pytest.fail("a worker failed:\n" + self.logs())
        if all(c == 0 for c in codes):
          return
        if time.time() > deadline:
          self.kill()
          pytest.fail(f"workers did not finish within {timeout}s:\n" + self.logs())
        time.sleep(0.2)
    finally:
      self.kill()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(reference dir, two-process dir), after both runs finished."""
  try:
    _free_port()
  except OSError as e:
    pytest.skip(f"cannot open a TCP port on 127.0.0.1 for the coordinator: {e}")
  ref = tmp_path_factory.mktemp("one_process")
  two = tmp_path_factory.mktemp("two_processes")
  procs = _Procs(str(tmp_path_factory.mktemp("logs")))
  start = time.time()
  try:
    port = _free_port()
    for i in range(PROCESSES):
      procs.start(f"process{i}", [f"--out={two}", f"--num_processes={PROCESSES}",
                                  f"--process_id={i}", f"--port={port}"],
                  DEVICES // PROCESSES)
    procs.start("reference", [f"--out={ref}"], DEVICES)
    procs.wait(TIMEOUT_S)
  finally:
    procs.kill()
  print(f"workers took {time.time() - start:.1f}s\n{procs.logs()}")
  return ref, two


def _load(directory):
  with np.load(os.path.join(directory, "result.npz")) as f:
    return dict(f)


def test_two_processes_train_like_one(runs):
  want, got = (_load(d) for d in runs)
  assert sorted(got) == sorted(want)
  for key in want:
    if key.startswith(("train/", "spread/")):
      np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    elif key.startswith("params"):
      np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-6, err_msg=key)
  # The steps learned something, and the comparison is not of two empty sets.
  assert want["train/step1/loss"] < want["train/step0/loss"]
  assert want["train/step0/num_tokens"] > 0 and want["spread/valid_loss"] > 0
  assert sum(k.startswith("params") for k in want) >= 5


def test_two_processes_sample_like_one(runs):
  want, got = (_load(d) for d in runs)
  assert want["global/tokens"].shape == (6, 4, 6)
  np.testing.assert_array_equal(got["global/tokens"], want["global/tokens"])
  np.testing.assert_allclose(got["global/logprobs"], want["global/logprobs"], rtol=1e-5)
  # Samples differ between rows: the comparison covers real draws, not a constant.
  assert len({tuple(t) for t in want["global/tokens"].reshape(-1, 6)}) >= 16


def test_each_host_writes_its_own_shards(runs):
  ref, two = (os.path.join(d, "shards") for d in runs)
  # Shard k belongs to host k % 2; each host marks its part done.
  assert sorted(os.listdir(two)) == sorted(
      ["spec.json", "samples-00000.jsonl", "samples-00001.jsonl", "samples-00002.jsonl",
       "COMPLETE-00000-of-00002", "COMPLETE-00001-of-00002"])
  want, got = sample_shards.read_samples(ref), sample_shards.read_samples(two)
  assert len(want) == 12
  assert ([(r["id"], r["sample_index"], r["tokens"]) for r in got]
          == [(r["id"], r["sample_index"], r["tokens"]) for r in want])


def test_the_loop_runs_on_two_processes(tmp_path):
  """`restem --coordinator_address=... --num_processes=2 --process_id=I` on the smoke config: the
  whole loop on a mesh spanning two processes and one shared workdir; both hosts agree."""
  try:
    port = _free_port()
  except OSError as e:
    pytest.skip(f"cannot open a TCP port on 127.0.0.1 for the coordinator: {e}")
  procs = _Procs(str(tmp_path))
  for i in range(PROCESSES):
    procs.start(f"main{i}", ["--config=configs/demo.py:smoke", "--config.progress_bar=False",
                             f"--workdir={tmp_path / 'run'}",
                             f"--coordinator_address=127.0.0.1:{port}",
                             f"--num_processes={PROCESSES}", f"--process_id={i}"],
                DEVICES // PROCESSES, command=(sys.executable, "-m", "restem_jax.main"))
  procs.wait(900)
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert [it["iteration"] for it in summary["iterations"]] == [1, 2]
  assert {e["model"] for e in summary["evaluations"]} == {"base", "sft_human", "iter1", "iter2"}
  tables = []
  for i in range(PROCESSES):
    lines = (tmp_path / f"main{i}.log").read_text().splitlines()
    tables.append([l for l in lines if l.split()[:1] in (["base"], ["sft_human"], ["iter1"],
                                                         ["iter2"])])
  assert len(tables[0]) == 4 and tables[0] == tables[1]  # every host printed the same results
