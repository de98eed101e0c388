"""Launch a restem_jax run on a Cloud TPU VM slice with gcloud.

  python launch/tpu.py --config=configs/math_palm.py --workdir=gs://BUCKET/runs/math \
      --tpu=restem-v4 --accelerator=v4-32 --zone=us-central2-b [--spot] [--dry-run]

First, before anything costs money, it compiles the run's programs for the accelerator on this
machine (`python -m restem_jax.aot`, which needs libtpu: `pip install -e .[tpu]`) and refuses,
with one line naming the program and its per-chip memory, when the run will not fit in HBM;
`--skip_fit_check` skips that (e.g. on a machine without libtpu). Then: create the TPU VM
slice (unless it exists and --reuse is given), copy this checkout to every worker, install it,
run the same `python -m restem_jax.main` command on every worker
(`--worker=all`; multi-host slices initialise with `jax.distributed.initialize()`), stream the
logs, and delete the slice at the end unless --keep. Because the run resumes from its workdir,
a preempted spot slice is handled by recreating it and running the same command again
(`--max_restarts`). `--dry-run` prints every gcloud command, one a line, and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "restem_jax"
# TPU VM images by generation; the runtime must match the accelerator family.
RUNTIMES = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base",
            "v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
            "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
INSTALL = ("python3 -m pip install --upgrade pip && python3 -m pip install -e . "
           "'jax[tpu]==0.10.2'")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  p.add_argument("--workdir", required=True, help="run directory, gs://... for TPU runs")
  p.add_argument("--tpu", required=True, help="TPU VM name")
  p.add_argument("--accelerator", required=True, help="e.g. v4-8, v4-32, v5litepod-8")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default=None)
  p.add_argument("--runtime", default=None, help="TPU VM runtime version (default by family)")
  p.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
  p.add_argument("--reuse", action="store_true", help="use an existing slice of that name")
  p.add_argument("--keep", action="store_true", help="do not delete the slice at the end")
  p.add_argument("--max_restarts", type=int, default=0,
                 help="recreate a preempted slice and resume up to this many times")
  p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                 help="print the gcloud commands, one a line, and run nothing")
  p.add_argument("--skip_fit_check", "--skip-fit-check", dest="skip_fit_check",
                 action="store_true", help="do not compile the run for the accelerator first "
                 "to check that it fits in HBM")
  args, extra = p.parse_known_args(argv)
  bad = [a for a in extra if not a.startswith("--config.")]
  if bad:
    p.error(f"unrecognized arguments: {' '.join(bad)} (only --config.KEY=VALUE passes through)")
  args.overrides = extra  # --config.KEY=VALUE flags for the run
  family = args.accelerator.rsplit("-", 1)[0]
  if args.runtime is None:
    if family not in RUNTIMES:
      p.error(f"unknown accelerator family {family!r}; pass --runtime")
    args.runtime = RUNTIMES[family]
  if not args.workdir.startswith("gs://") and not args.dry_run:
    print(f"warning: --workdir={args.workdir} is not on GCS: each worker writes its own disk "
          "and a new slice cannot resume it", file=sys.stderr)
  return args


def num_hosts(accelerator: str) -> int:
  """Hosts (TPU VM workers) in a slice."""
  family, size = accelerator.rsplit("-", 1)
  size = int(size)
  if family in ("v5litepod", "v6e"):  # sizes count chips; up to 8 on one host, else 4 a host
    return 1 if size <= 8 else size // 4
  return max(1, size // 8)  # v2-v5p sizes count TensorCores: 2 a chip, 4 chips a host


def fit_check_command(args) -> list[str]:
  """The ahead-of-time check of the run for the slice (stops at the first program too big)."""
  return [sys.executable, "-m", "restem_jax.aot", f"--config={args.config}",
          f"--topology={args.accelerator}", "--fail_fast", *args.overrides]


def fit_check(args) -> str | None:
  """Runs the check; returns None when the run fits, else one line saying why not."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run(fit_check_command(args), capture_output=True, text=True, cwd=REPO,
                       env=env)
  last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
  try:
    verdict = json.loads(last)
  except json.JSONDecodeError:
    errors = [l for l in out.stderr.splitlines() if l.startswith("aot: ")] or \
        out.stderr.strip().splitlines()[-1:] or [f"exit code {out.returncode}"]
    return (f"cannot check that the run fits on {args.accelerator}: {errors[-1]} "
            "(pass --skip_fit_check to launch without the check)")
  if verdict["fits"]:
    return None
  name = verdict["too_big"][0]
  program = verdict["programs"][name]
  gib = 1 << 30
  why = program["error"] or (f"needs {program['total_bytes'] / gib:.1f} GiB a chip of "
                             f"{verdict['usable_bytes'] / gib:.1f} GiB usable")
  hint = f"; to fit: {program['hint']}" if program.get("hint") else ""
  return (f"{args.config} does not fit on {args.accelerator} ({verdict['topology']}, mesh "
          f"{verdict['mesh']}): the {name} program {why}{hint}; see `python -m restem_jax.aot "
          f"--config={args.config} --topology={args.accelerator}` for every program")


def gcloud(args, *words) -> list[str]:
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", *words, f"--zone={args.zone}"]
  if args.project:
    cmd.append(f"--project={args.project}")
  return cmd


def run_command(args) -> str:
  multi = num_hosts(args.accelerator) > 1
  flags = [f"--config={args.config}", f"--workdir={args.workdir}"]
  if multi:
    flags.append("--config.distributed=True")
  flags += args.overrides
  return f"cd {REMOTE_DIR} && python3 -m restem_jax.main " + " ".join(map(shlex.quote, flags))


def commands(args, archive: str) -> dict[str, list[list[str]]]:
  """The gcloud commands of each phase."""
  create = gcloud(args, "create", args.tpu, f"--accelerator-type={args.accelerator}",
                  f"--version={args.runtime}") + (["--spot"] if args.spot else [])
  ssh = lambda command: gcloud(args, "ssh", args.tpu, "--worker=all", f"--command={command}")
  return {
      "create": [] if args.reuse else [create],
      "copy": [gcloud(args, "scp", archive, f"{args.tpu}:~/restem_jax.tar.gz", "--worker=all"),
               ssh(f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && "
                   f"tar -xzf restem_jax.tar.gz -C {REMOTE_DIR}")],
      "install": [ssh(f"cd {REMOTE_DIR} && {INSTALL}")],
      "run": [ssh(run_command(args))],
      "delete": [] if args.keep else [gcloud(args, "delete", args.tpu, "--quiet")],
      "describe": [gcloud(args, "describe", args.tpu, "--format=value(state)")],
  }


def _archive(path: str) -> None:
  """This checkout's tracked files (what `git archive` sees) as a tarball."""
  subprocess.run(["git", "-C", REPO, "archive", "--format=tar.gz", "-o", path, "HEAD"],
                 check=True)


def _call(cmd, dry_run: bool) -> int:
  print(shlex.join(cmd), flush=True)
  return 0 if dry_run else subprocess.call(cmd)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if not args.skip_fit_check:
    refusal = fit_check(args)
    if refusal:
      print(f"launch: {refusal}", file=sys.stderr)
      return 2
  archive = os.path.join(tempfile.gettempdir(), "restem_jax.tar.gz")
  cmds = commands(args, archive)
  if args.dry_run:
    for phase in ("create", "copy", "install", "run", "delete"):
      for cmd in cmds[phase]:
        _call(cmd, True)
    return 0
  _archive(archive)
  restarts = 0
  fresh = not args.reuse
  while True:
    for phase in (["create"] if fresh else []) + ["copy", "install"]:
      for cmd in cmds[phase]:
        if _call(cmd, False):
          print(f"launch: {phase} failed", file=sys.stderr)
          return 1
    rc = _call(cmds["run"][0], False)
    if rc == 0:
      break
    state = subprocess.run(cmds["describe"][0], capture_output=True, text=True).stdout.strip()
    if state in ("PREEMPTED", "TERMINATED") and restarts < args.max_restarts:
      restarts += 1
      print(f"launch: slice {state}; recreating and resuming from {args.workdir} "
            f"(restart {restarts}/{args.max_restarts})", file=sys.stderr)
      _call(gcloud(args, "delete", args.tpu, "--quiet"), False)
      fresh = True
      continue
    print(f"launch: run failed with exit code {rc} (slice state {state or 'unknown'})",
          file=sys.stderr)
    break
  for cmd in cmds["delete"]:
    _call(cmd, False)
  return rc


if __name__ == "__main__":
  sys.exit(main())
