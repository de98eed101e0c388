"""What every benchmark reports about its host: progress lines, resident memory, the CPU model."""

from __future__ import annotations

import subprocess
import sys


def progress(line: str) -> None:
  """A line on stderr, flushed: the results so far, should a later row fail."""
  print(line, file=sys.stderr, flush=True)


def rss_mb(field: str) -> float:
  """This process's /proc/self/status memory `field` (VmRSS, VmHWM, ...) in MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  raise KeyError(field)


def cpu_model() -> str:
  """`lscpu`'s model name (else /proc/cpuinfo's), for the JSON line: figures depend on it."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    out = ""
  try:
    with open("/proc/cpuinfo") as f:
      out += f.read()
  except OSError:
    pass
  for line in out.splitlines():
    key, _, value = line.partition(":")
    if key.strip().lower() == "model name" and value.strip():
      return value.strip()
  return "unknown"
