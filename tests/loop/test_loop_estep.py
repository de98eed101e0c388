"""The loop's E-step switches: restem.finetune_from, the switches' checks, and run directories
from before these keys existed (the adaptive iteration end to end: test_loop_adaptive.py)."""

import json

import pytest


def _fake_run(monkeypatch, tmp_path, **restem):
  """loop.run with every stage replaced by a recorder: the orchestration alone, in seconds."""
  from restem_jax import config_lib, loop
  calls = []
  monkeypatch.setattr(loop.preflight, "check_run", lambda config: None)
  monkeypatch.setattr(loop.inputs, "prepare", lambda config, workdir: None)
  monkeypatch.setattr(loop.Run, "base_model", lambda self: "BASE")
  monkeypatch.setattr(loop.Run, "evaluate", lambda self, model, model_dir: None)
  monkeypatch.setattr(loop.Run, "save_summary", lambda self: None)
  monkeypatch.setattr(loop.Run, "estep", lambda self, it, gen: (calls.append(("estep", it, gen))
                                                                 or ([], {})))
  monkeypatch.setattr(loop.Run, "filter", lambda self, it, paths, spread: {
      "iteration": it, "num_kept": 1, "kept_dir": f"kept{it}"})
  monkeypatch.setattr(loop.Run, "improve", lambda self, it, start, kept: (
      calls.append(("improve", it, start)) or f"MODEL{it}"))
  monkeypatch.setattr(loop.report, "table", lambda *a: "")
  config = config_lib.base_config()
  config.baselines.base = config.baselines.sft_human = False
  config.restem.num_iterations = 3
  config.restem.update(restem)
  loop.run(config, tmp_path / "run")
  return calls


def test_finetune_from_base_or_previous(monkeypatch, tmp_path):
  base = _fake_run(monkeypatch, tmp_path / "a")
  assert [c for c in base if c[0] == "improve"] == [
      ("improve", 1, "BASE"), ("improve", 2, "BASE"), ("improve", 3, "BASE")]
  previous = _fake_run(monkeypatch, tmp_path / "b", finetune_from="previous")
  assert [c for c in previous if c[0] == "improve"] == [
      ("improve", 1, "BASE"), ("improve", 2, "MODEL1"), ("improve", 3, "MODEL2")]
  # Either way the improved model generates the next iteration's samples.
  assert [c[2] for c in previous if c[0] == "estep"] == ["BASE", "MODEL1", "MODEL2"]


def test_bad_switch_values_are_one_line_errors(monkeypatch, tmp_path):
  from restem_jax import cli
  for key, value, message in [("finetune_from", "last", "restem.finetune_from"),
                              ("budget", "more", "restem.budget"),
                              ("round_samples", 99, "restem.round_samples")]:
    with pytest.raises(cli.UserError, match=message):
      _fake_run(monkeypatch, tmp_path / key, **{key: value})


def test_a_run_directory_from_before_the_switches_resumes_and_reports(tmp_path):
  from restem_jax import config_lib, loop
  from restem_jax.loop import run_dir
  config = json.loads(config_lib.base_config().to_json_best_effort())
  old = json.loads(json.dumps(config))
  for key in config_lib.ADDED_DEFAULTS["restem"]:
    del old["restem"][key]
  workdir = tmp_path / "old"
  (workdir / "stages").mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(old, indent=2) + "\n")
  (workdir / "stages" / "vocab.json").write_text("{}")
  (workdir / "stages" / "train_base.json").write_text("{}")
  run_dir.mark_finished(workdir, old)
  assert not run_dir.is_finished(workdir, config)  # the keys it lacks read as a change
  loop.complete_saved_config(workdir)
  assert run_dir.is_finished(workdir, config)
  run_dir.check_and_save_config(config, workdir)  # not refused
  assert json.loads((workdir / "config.json").read_text()) == config
