"""Errors a person can read: every CLI's expected failures are one or two lines and exit 2.

The command-line cases run the CLIs as subprocesses, as a person would; each fails before any
JAX work (config, paths, data files), so they take seconds. Ctrl-C is the one that starts a run.
"""

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tqdm

from tests.conftest import REPO, smoke_env

from restem_jax import cli
from restem_jax.loop import run_dir

JSONL_SMOKE = "--config=configs/jsonl_math.py:smoke"


def _main(*args, timeout=120):
  start = time.monotonic()
  out = subprocess.run([sys.executable, "-m", "restem_jax.main", *args], cwd=REPO,
                       env=smoke_env(), capture_output=True, text=True, timeout=timeout)
  return out, time.monotonic() - start


def _assert_one_error(out, *needles):
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, out.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], (needle, errors[0])
  return errors[0]


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.fixture
def data(tmp_path):
  d = tmp_path / "data"
  d.mkdir()
  rows = [{"id": f"p{i}", "question": f"What is {i} + 1?", "answer": str(i + 1),
           "solution": f"{i} + 1 = {i + 1}. The answer is {i + 1}."} for i in range(12)]
  _write_jsonl(d / "train.jsonl", rows)
  _write_jsonl(d / "test.jsonl", [{"id": f"t{i}", "question": f"What is {i} + 2?",
                                   "answer": str(i + 2)} for i in range(4)])
  (d / "empty.jsonl").write_text("\n")
  bad = (d / "train.jsonl").read_text().splitlines()
  bad[4] = '{"id": "p4", "question": "What is 4 + 1?"'
  (d / "bad.jsonl").write_text("\n".join(bad) + "\n")
  return d


# --- restem_jax.main: the config --------------------------------------------------------------


def test_unknown_config_key_names_the_flag_and_the_closest_key(tmp_path):
  out, _ = _main("--config=configs/demo.py:smoke", f"--workdir={tmp_path / 'w'}",
                 "--config.restem.num_sampels=8")
  _assert_one_error(out, "--config.restem.num_sampels", "--config.restem.num_samples")


def test_bad_value_missing_config_and_broken_config_files(tmp_path):
  broken = tmp_path / "broken.py"
  broken.write_text("from restem_jax import config_lib\n\ndef get_config(arg=None):\n"
                    "  c = config_lib.base_config()\n  c.lock()\n  c.data.kindd = 'arith'\n"
                    "  return c\n")
  syntax = tmp_path / "syntax.py"
  syntax.write_text("def get_config(arg=None):\n  return dict(\n")
  cases = [
      (["--config=configs/demo.py:smoke", "--config.progress_bar=maybe"],
       ["--config.progress_bar"]),
      ([f"--config={tmp_path / 'nope.py'}"], ["nope.py does not exist"]),
      ([f"--config={broken}"], [f"{broken}:6", "kindd", "'kind'"]),
      ([f"--config={syntax}"], [f"{syntax}:2", "SyntaxError"]),
      (["--config=configs/demo.py:bogus"], ["configs/demo.py:", "bogus"]),
  ]
  for args, needles in cases:
    out, _ = _main(*args, f"--workdir={tmp_path / 'w'}")
    _assert_one_error(out, *needles)


# --- restem_jax.main: data, workdir, checkpoint -------------------------------------------------


def test_empty_test_file_fails_before_training_then_the_corrected_command_runs(tmp_path, data):
  workdir = tmp_path / "w"
  args = [JSONL_SMOKE, "--config.progress_bar=False", f"--workdir={workdir}",
          f"--config.data.train_path={data / 'train.jsonl'}"]
  out, seconds = _main(*args, f"--config.data.test_path={data / 'empty.jsonl'}")
  _assert_one_error(out, "--config.data.test_path", str(data / "empty.jsonl"))
  assert seconds < 30
  assert not (workdir / "stages").exists()  # nothing ran
  # The corrected command runs in the same workdir; Ctrl-C (SIGINT to the process group, as a
  # terminal sends it) once its first stage is done exits 130 saying the command resumes.
  proc = subprocess.Popen([sys.executable, "-m", "restem_jax.main", *args,
                           f"--config.data.test_path={data / 'test.jsonl'}"], cwd=REPO,
                          env=smoke_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True,
                          # A terminal's Ctrl-C: SIGINT handled as by default even where this
                          # test runs with SIGINT ignored (a background job of a script, which
                          # Python's startup would keep ignoring).
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    deadline = time.monotonic() + 300
    while not (workdir / "stages" / "vocab.json").exists() and time.monotonic() < deadline:
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
  assert "run the same command again to resume" in stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("train, test, needles", [
    ("bad.jsonl", "test.jsonl", ["bad.jsonl:5"]),  # FILE:LINE of the malformed line
    ("nope.jsonl", "test.jsonl", ["--config.data.train_path", "nope.jsonl", "does not exist"]),
    ("empty.jsonl", "test.jsonl", ["--config.data.train_path", "empty.jsonl", "empty"]),
])
def test_data_file_errors_name_the_file(tmp_path, data, train, test, needles):
  out, seconds = _main(JSONL_SMOKE, f"--workdir={tmp_path / 'w'}",
                       f"--config.data.train_path={data / train}",
                       f"--config.data.test_path={data / test}")
  _assert_one_error(out, *needles)
  assert seconds < 30


def test_data_set_errors_found_by_its_source_name_the_files(tmp_path, data):
  """Checks that need the data set built (seqio, TensorFlow) still come before any stage."""
  out, _ = _main(JSONL_SMOKE, f"--workdir={tmp_path / 'w'}",
                 f"--config.data.train_path={data / 'train.jsonl'}",
                 f"--config.data.test_path={data / 'train.jsonl'}")
  _assert_one_error(out, "--config.data", "train.jsonl", "duplicate id")
  assert not (tmp_path / "w" / "stages").exists()


def test_vocabulary_larger_than_the_model_fails_before_any_stage(tmp_path):
  out, seconds = _main("--config=configs/demo.py:smoke", f"--workdir={tmp_path / 'w'}",
                       "--config.vocab.size=400")
  _assert_one_error(out, "--config.vocab.size 400", "--config.model.vocab_size 320")
  assert seconds < 30 and not (tmp_path / "w" / "stages").exists()


@pytest.mark.parametrize("override, needle", [
    ("--config.model.float32_products=logits,softmax", "unknown float32_products ['softmax']"),
    ("--config.model.norm=batchnorm", "unknown norm 'batchnorm'"),
    ("--config.model.num_kv_heads=3", "not a multiple of num_kv_heads=3")])
def test_bad_model_field_fails_before_any_stage(tmp_path, override, needle):
  out, _ = _main("--config=configs/demo.py:smoke", f"--workdir={tmp_path / 'w'}", override)
  _assert_one_error(out, "--config.model: ", needle)
  assert not (tmp_path / "w" / "stages").exists()


def test_missing_split_path_and_checkpoint(tmp_path, data):
  out, _ = _main(JSONL_SMOKE, f"--workdir={tmp_path / 'w'}",
                 f"--config.data.train_path={data / 'train.jsonl'}")
  _assert_one_error(out, "test_path")
  for ckpt, needle in [(tmp_path / "none", "does not exist"),
                       (data, "not a model checkpoint")]:
    out, _ = _main(JSONL_SMOKE, f"--workdir={tmp_path / 'w'}",
                   f"--config.data.train_path={data / 'train.jsonl'}",
                   f"--config.data.test_path={data / 'test.jsonl'}",
                   f"--config.base_checkpoint={ckpt}")
    _assert_one_error(out, "--config.base_checkpoint", str(ckpt), needle)


def test_foreign_and_unwritable_workdirs(tmp_path, data):
  foreign = tmp_path / "photos"
  foreign.mkdir()
  (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
  args = [JSONL_SMOKE, f"--config.data.train_path={data / 'train.jsonl'}",
          f"--config.data.test_path={data / 'test.jsonl'}"]
  out, _ = _main(*args, f"--workdir={foreign}")
  _assert_one_error(out, str(foreign), "holds no restem run")
  a_file = tmp_path / "file"
  a_file.write_text("x")
  out, _ = _main(*args, f"--workdir={a_file}")
  _assert_one_error(out, "is a file")
  # Read-only: a read-only bind mount (root ignores permission bits), else permission bits.
  readonly = tmp_path / "ro"
  readonly.mkdir()
  if os.geteuid() == 0:
    if shutil.which("bwrap") is None:
      pytest.skip("root without bubblewrap: cannot make a read-only directory")
    cmd = ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(readonly), str(readonly),
           sys.executable, "-m", "restem_jax.main", *args, f"--workdir={readonly / 'run'}"]
    out = subprocess.run(cmd, cwd=REPO, env=smoke_env(), capture_output=True, text=True,
                         timeout=120)
    if "bwrap:" in out.stderr and out.returncode != 2:
      pytest.skip(f"bubblewrap cannot run here: {out.stderr.strip()[:200]}")
  else:
    readonly.chmod(0o555)
    out, _ = _main(*args, f"--workdir={readonly / 'run'}")
  _assert_one_error(out, "--workdir", "cannot write")


# --- the config lock ---------------------------------------------------------------------------


def test_a_workdir_with_no_finished_stage_takes_a_new_config(tmp_path):
  old = {"data": {"train_path": "wrong.jsonl"}, "restem": {"num_iterations": 3},
         "progress_bar": True}
  new = {"data": {"train_path": "right.jsonl"}, "restem": {"num_iterations": 3},
         "progress_bar": True}
  run_dir.check_and_save_config(old, tmp_path)
  run_dir.check_and_save_config(new, tmp_path)  # nothing finished: accepted
  assert json.loads((tmp_path / "config.json").read_text()) == new
  (tmp_path / "stages").mkdir()
  (tmp_path / "stages" / "vocab.json").write_text("{}")  # setup only: redone, not locked
  run_dir.check_and_save_config(old, tmp_path)
  assert not (tmp_path / "stages" / "vocab.json").exists()
  (tmp_path / "stages" / "init.json").write_text("{}")  # work done: locked
  with pytest.raises(cli.UserError, match=r"different config \(data.train_path"):
    run_dir.check_and_save_config(new, tmp_path)
  run_dir.check_and_save_config(old, tmp_path)
  # Settings that do not change results never lock; more iterations extend the run.
  quiet = {**old, "progress_bar": False, "restem": {"num_iterations": 5},
           "finetune": {"log_every": 1}}
  old["finetune"] = {"log_every": 10}
  run_dir.check_and_save_config(old, tmp_path)
  run_dir.check_and_save_config(quiet, tmp_path)


def test_finished_marker_matches_results_not_presentation(tmp_path):
  config = {"data": {"kind": "arith"}, "restem": {"num_iterations": 2}, "progress_bar": True}
  assert not run_dir.is_finished(tmp_path, config)
  run_dir.mark_finished(tmp_path, config)
  assert run_dir.is_finished(tmp_path, {**config, "progress_bar": False, "distributed": True})
  assert not run_dir.is_finished(tmp_path, {**config, "restem": {"num_iterations": 3}})


def test_check_owned(tmp_path):
  run_dir.check_owned(tmp_path / "missing")
  run_dir.check_owned(tmp_path)  # empty
  (tmp_path / "log.txt").write_text("")
  run_dir.check_owned(tmp_path)  # a failed start's log
  (tmp_path / "config.json").write_text(json.dumps({"name": "someone else's"}))
  with pytest.raises(cli.UserError, match="something else"):
    run_dir.check_owned(tmp_path)


# --- the other CLIs ------------------------------------------------------------------------


def test_sample_cli_missing_checkpoint_and_prompts(tmp_path):
  for extra, needles in [([f"--checkpoint={tmp_path / 'none'}"], ["--checkpoint", "none"]),
                         ([f"--checkpoint={tmp_path}"], ["not a model checkpoint"])]:
    out = subprocess.run([sys.executable, "-m", "restem_jax.sample", *extra,
                          f"--prompts={tmp_path / 'p.jsonl'}", f"--out={tmp_path / 'o.jsonl'}"],
                         cwd=REPO, env=smoke_env(), capture_output=True, text=True, timeout=120)
    _assert_one_error(out, *needles)


def test_convert_cli_missing_input(tmp_path):
  out = subprocess.run([sys.executable, "-m", "restem_jax.convert", "orbax-to-hf",
                        str(tmp_path / "none"), str(tmp_path / "out")], cwd=REPO,
                       env=smoke_env(), capture_output=True, text=True, timeout=120)
  _assert_one_error(out, str(tmp_path / "none"))


# --- the shared helper, in process ------------------------------------------------------------


def test_run_main_sorts_expected_failures_from_bugs(capsys, monkeypatch):
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

  def fail(error):
    def fn():
      raise error
    return fn
  assert cli.run_main(fail(cli.UserError("data.train_path: x is empty")), ["prog"]) == 2
  assert capsys.readouterr().err.strip() == "error: data.train_path: x is empty"
  assert cli.run_main(fail(FileNotFoundError(2, "No such file or directory", "/x")),
                      ["prog"]) == 2
  assert "error: /x: No such file or directory" in capsys.readouterr().err
  assert cli.run_main(fail(KeyboardInterrupt()), ["prog"], resumable=True) == 130
  assert "resume" in capsys.readouterr().err
  with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
    cli.run_main(fail(ZeroDivisionError()), ["prog"])
  with pytest.raises(cli.UserError):  # --debug: every traceback
    cli.run_main(fail(cli.UserError("x")), ["prog", "--debug"])
  monkeypatch.setenv(cli.DEBUG_ENV, "1")
  with pytest.raises(cli.UserError):
    cli.run_main(fail(cli.UserError("x")), ["prog"])


def test_a_ctrl_c_that_library_code_swallows_still_stops_the_run(tmp_path, capsys,
                                                                 monkeypatch):
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
  done = []

  def work():
    try:  # library code that catches everything, the interrupt included
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(5)
    except BaseException:  # pylint: disable=broad-except
      pass
    for name in ("first", "second"):
      run_dir.stage(tmp_path, name, lambda: done.append(name) or {})

  try:
    assert cli.run_main(work, ["prog"], resumable=True) == 130
    assert done == [] and "resume" in capsys.readouterr().err
    # The handler is restored and the next command starts afresh.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert cli.run_main(lambda: done.append(run_dir.stage(tmp_path, "again", dict)), ["prog"]) == 0
    assert done == [{}]
  finally:
    signal.signal(signal.SIGINT, previous)


def test_checkpoint_file_names_agree_with_checkpoints():
  from restem_jax.model import checkpoints
  assert cli.CHECKPOINT_CONFIG_FILE == checkpoints.CONFIG_FILE
  assert cli.CHECKPOINT_COMPLETE_FILE == checkpoints.COMPLETE_FILE


# --- the console -----------------------------------------------------------------------------


def _render(text: str) -> list[str]:
  """What a terminal shows: a carriage return goes back to the line's start and overwrites."""
  lines, line, col = [], [], 0
  for ch in text:
    if ch == "\n":
      lines.append("".join(line).rstrip())
      line, col = [], 0
    elif ch == "\r":
      col = 0
    else:
      if col < len(line):
        line[col] = ch
      else:
        line.append(ch)
      col += 1
  if line:
    lines.append("".join(line).rstrip())
  return lines


def test_log_lines_never_land_inside_a_progress_bar():
  stream = io.StringIO()
  handler = cli.TqdmHandler(stream)
  handler.setFormatter(logging.Formatter("LOG %(message)s"))
  logger = logging.getLogger("test_cli_errors.bar")
  logger.addHandler(handler)
  logger.propagate = False
  try:
    with tqdm.tqdm(total=3, file=stream, desc="train", ncols=60, mininterval=0) as bar:
      for i in range(3):
        bar.update(1)
        logger.warning("step %d", i)
  finally:
    logger.removeHandler(handler)
  shown = _render(stream.getvalue())
  logs = [line for line in shown if "LOG" in line]
  assert logs == ["LOG step 0", "LOG step 1", "LOG step 2"], shown


def test_stderr_filter_drops_library_chatter_and_keeps_the_rest():
  code = r"""
import os, sys
from restem_jax import cli
f = cli.StderrFilter()
dropped = []
f.sink = dropped.append
for line in [b"normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty. use identity normalization.\n",
             b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             b"I0000 00:00:1796425430.390630    5242 port.cc:153] oneDNN custom operations are on.\n",
             b"I0000 00:00:1796425430.391658    5242 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n",
             b"2026-12-04 10:00:00.000001: I tensorflow/core/util/port.cc:113] oneDNN\n",
             b"kept line\n", b"E0000 00:00:1.0  1 foo.cc:1] a real error\n", b"\rbar 50%"]:
  os.write(2, line)
print("python line", file=sys.stderr)
f.close()
print(len(dropped))
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=smoke_env(),
                       capture_output=True, timeout=60)  # bytes: text mode turns \r into \n
  assert out.returncode == 0, out.stderr
  assert out.stdout.decode().strip() == "5"
  assert out.stderr.decode().split("\n") == ["kept line", "E0000 00:00:1.0  1 foo.cc:1] a real error",
                                    "\rbar 50%python line", ""]
