"""The run directory's bookkeeping that needs no JAX: config lock, finished marker, ownership.

A run directory is locked to the config of its first finished stage: resuming with a config that
would change finished work is refused, naming the keys. Three kinds of keys never lock:
  - `RESUMABLE_CHANGES`: they extend or re-run later stages (more iterations);
  - `UNLOCKED_LEAVES`: how a run is shown or executed, not what it computes (progress bars,
    logging and checkpoint cadence, the multi-host switch), under any group;
  - everything, while no stage but the seconds-long setup (`SETUP_STAGES`: the vocabulary) has
    finished: a run that failed at start (a bad path, a size that does not fit the data) takes
    the corrected command, and its setup stages run again.
A run whose last stage finished writes `stages/finished.json`; the same command again finds it
and only reports (`is_finished`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from etils import epath

from restem_jax import cli
from restem_jax.cli import UserError
from restem_jax import file_io

CONFIG_FILE = "config.json"
STAGES_DIR = "stages"
FINISHED_MARKER = "finished.json"
LOG_FILE = "log.txt"

RESUMABLE_CHANGES = ("restem.num_iterations",)
# Stages that take seconds and run before the checks that need their result (the data's sizes
# need the vocabulary): a new config redoes them instead of being refused.
SETUP_STAGES = ("vocab",)
# Audit of config keys that do not change results: the console (progress_bar), the trainers'
# logging cadence, train-state checkpoint cadence and retention (the best model is kept
# separately, and a resume continues exactly from any train-state checkpoint), the FLOP figure
# used only for the logged MFU, and whether jax.distributed is initialised.
UNLOCKED_LEAVES = ("progress_bar", "log_every", "checkpoint_every", "keep_last",
                   "async_checkpointing", "peak_flops_per_device")
UNLOCKED_KEYS = ("distributed",)


def stage(workdir: epath.PathLike, name: str, fn: Callable[[], Any], write: bool = True) -> Any:
  """Runs `fn()` once: its JSON-able result is stored in stages/NAME.json and reused after.

  `write`: whether this host writes the marker (process 0 of a multi-host run).
  """
  cli.check_interrupted()  # a Ctrl-C that library code swallowed stops the run here
  marker = epath.Path(workdir) / STAGES_DIR / f"{name}.json"
  if marker.exists():
    return json.loads(marker.read_text())
  start = time.time()
  logging.info("stage %s: start", name)
  result = fn()
  if write:
    file_io.write_text_atomic(marker, json.dumps(result, indent=2))
  logging.info("stage %s: done in %.1fs", name, time.time() - start)
  cli.check_interrupted()
  return result


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def is_unlocked(key: str) -> bool:
  """True for a flattened config key whose value never changes a run's results."""
  return key in UNLOCKED_KEYS or key.rsplit(".", 1)[-1] in UNLOCKED_LEAVES


def differences(old: dict[str, Any], new: dict[str, Any],
                ignore: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
  """Flattened keys whose values differ and that lock a run (sorted)."""
  a, b = flatten(old), flatten(new)
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and not is_unlocked(k) and k not in ignore)


def finished_stages(workdir: epath.PathLike) -> list[str]:
  """Names of the stages whose marker exists."""
  stages = epath.Path(workdir) / STAGES_DIR
  return sorted(p.stem for p in stages.glob("*.json")) if stages.exists() else []


def check_owned(workdir: epath.PathLike) -> None:
  """Raises UserError when `workdir` holds something other than a restem run.

  A directory that is missing, empty, or holds only hidden files, a log or a run's config.json
  is fine; so is any directory with a restem config.json.
  """
  workdir = epath.Path(workdir)
  if not workdir.exists():
    return
  names = {p.name for p in workdir.iterdir() if not p.name.startswith(".")}
  config = workdir / CONFIG_FILE
  if CONFIG_FILE in names:
    try:
      saved = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError) as e:
      raise UserError(f"--workdir {workdir}: {config} is not a restem run's config ({e}); "
                      f"choose a new --workdir") from e
    if not isinstance(saved, dict) or not {"data", "restem"} <= set(saved):
      raise UserError(f"--workdir {workdir} holds a config.json of something else than a "
                      f"restem run; choose a new --workdir")
    return
  if names - {LOG_FILE}:
    shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
    raise UserError(f"--workdir {workdir} is not empty ({shown}) and holds no restem run; "
                    f"choose a new or empty directory")


def check_and_save_config(new: dict[str, Any], workdir: epath.PathLike, write: bool = True
                          ) -> None:
  """Saves the resolved config; refuses one that would change the finished stages' work.

  Args:
    new: the config as JSON (`ConfigDict.to_json_best_effort`, parsed).
    workdir: the run directory.
    write: whether this process writes (process 0 of a multi-host run).

  Raises:
    UserError: a stage has finished and a locking key differs (the message names up to four
      keys with their old and new values, and what to do).
  """
  workdir = epath.Path(workdir)
  path = workdir / CONFIG_FILE
  finished = finished_stages(workdir)
  if path.exists() and finished:
    old = json.loads(path.read_text())
    changed = differences(old, new)
    if changed and all(stage in SETUP_STAGES for stage in finished):
      if write:  # nothing but setup finished: redo it under the new config
        for stage in finished:
          (workdir / STAGES_DIR / f"{stage}.json").unlink()
    elif changed:
      a, b = flatten(old), flatten(new)
      detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:4])
      more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
      raise UserError(f"{workdir} holds a run with a different config ({detail}{more}); use a "
                      f"new --workdir, or the run's own flags to resume it")
  if write:
    file_io.write_text_atomic(path, json.dumps(new, indent=2) + "\n")


def is_finished(workdir: epath.PathLike, new: dict[str, Any]) -> bool:
  """True when the run in `workdir` finished with a config that computes what `new` does."""
  marker = epath.Path(workdir) / STAGES_DIR / FINISHED_MARKER
  if not marker.exists():
    return False
  return not differences(json.loads(marker.read_text())["config"], new, ignore=())


def mark_finished(workdir: epath.PathLike, config: dict[str, Any]) -> None:
  """Writes the finished marker (call after the last stage and the summary are written)."""
  file_io.write_text_atomic(epath.Path(workdir) / STAGES_DIR / FINISHED_MARKER,
                            json.dumps({"config": config}, indent=2) + "\n")


def finished_message(workdir: epath.PathLike) -> str:
  """What a rerun of a finished run prints: that it is finished, its test table, its files."""
  from restem_jax.loop import report  # pylint: disable=g-import-not-at-top
  workdir = epath.Path(workdir)
  summary = report.load_summary(workdir)
  return (f"{workdir}: this run is finished; nothing to do (a higher "
          f"--config.restem.num_iterations continues it, a new --workdir starts another).\n\n"
          f"{report.table(summary, 'test')}\n\n"
          f"summary: {workdir / report.SUMMARY_FILE}\nreport:  {workdir / report.REPORT_FILE}")
