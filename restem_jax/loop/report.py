"""The run summary (`summary.json`) and the human-readable report (`report.md` + PNG plots).

`summary.json` is the contract of ../shared/DESIGN.md: a list of evaluations (one per model,
split and task) and a list of iterations. It is rewritten atomically after every evaluation, so
a reader (a notebook, a test) never sees half a file.
"""

from __future__ import annotations

import io
import json
from typing import Any

from etils import epath

from restem_jax import file_io

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"


def empty_summary() -> dict[str, Any]:
  return {"evaluations": [], "iterations": []}


def load_summary(workdir: epath.PathLike) -> dict[str, Any]:
  path = epath.Path(workdir) / SUMMARY_FILE
  return json.loads(path.read_text()) if path.exists() else empty_summary()


def write_summary(workdir: epath.PathLike, summary: dict[str, Any]) -> None:
  file_io.write_text_atomic(epath.Path(workdir) / SUMMARY_FILE,
                            json.dumps(summary, indent=2) + "\n")


def upsert(records: list[dict[str, Any]], record: dict[str, Any], keys: tuple[str, ...]) -> None:
  """Replaces the record with the same `keys` values, or appends it (resume-safe)."""
  for i, old in enumerate(records):
    if all(old.get(k) == record.get(k) for k in keys):
      records[i] = record
      return
  records.append(record)


def model_order(summary: dict[str, Any]) -> list[str]:
  """Models in run order: base, sft_human, iter1, iter2, ..."""
  names = {e["model"] for e in summary["evaluations"]}
  fixed = [m for m in ("base", "sft_human") if m in names]
  iters = sorted((m for m in names if m.startswith("iter")), key=lambda m: int(m[4:]))
  rest = sorted(names - set(fixed) - set(iters))
  return fixed + iters + rest


def table(summary: dict[str, Any], split: str = "test") -> str:
  """A plain-text table of greedy accuracy, pass@k and maj@k per model and task."""
  rows = [e for e in summary["evaluations"] if e["split"] == split]
  if not rows:
    return f"(no {split} evaluations yet)"
  ks = sorted({k for e in rows for k in e.get("pass_at_k", {})}, key=int)
  mks = sorted({k for e in rows for k in e.get("maj_at_k", {})}, key=int)
  header = (["model", "task", "n", "greedy acc"] + [f"pass@{k}" for k in ks]
            + [f"maj@{k}" for k in mks])
  lines = [header]
  order = {m: i for i, m in enumerate(model_order(summary))}
  for e in sorted(rows, key=lambda e: (e["task"], order[e["model"]])):
    lines.append([e["model"], e["task"], str(e["num_problems"]), f"{100 * e['accuracy']:.1f}"]
                 + [f"{100 * e['pass_at_k'][k]:.1f}" if k in e.get("pass_at_k", {}) else "-"
                    for k in ks]
                 + [f"{100 * e['maj_at_k'][k]:.1f}" if k in e.get("maj_at_k", {}) else "-"
                    for k in mks])
  widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
  out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
  out.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(out)


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")  # files only: no display on a TPU VM or in CI
  import matplotlib.pyplot as plt
  return plt


def _finish(plt, fig, ax, path, title: str, ylabel: str) -> None:
  """Labels, grid, legend (when anything was drawn), then writes the PNG."""
  ax.set_title(title)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")  # path: a file name or a binary file
  plt.close(fig)


def _plot_accuracy(summary, path):
  """Greedy accuracy per ReST^EM iteration: the iterations as a line for each task and split,
  the other models (base, sft_human) as horizontal reference lines in the same colour, since
  they are not points on the iteration curve."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  iters = [m for m in model_order(summary) if m.startswith("iter")]
  others = [m for m in model_order(summary) if m not in iters]
  styles = [":", "-.", (0, (5, 2, 1, 2, 1, 2)), (0, (1, 3))]
  series = sorted({(e["task"], e["split"]) for e in summary["evaluations"]
                   if e["split"] in ("test", "valid")}, key=lambda ts: (ts[0], ts[1] != "test"))
  for i, (task, split) in enumerate(series):
    acc = {e["model"]: 100 * e["accuracy"] for e in summary["evaluations"]
           if e["task"] == task and e["split"] == split}
    pts = [(int(m[4:]), acc[m]) for m in iters if m in acc]
    if pts:
      ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{i}",
              linestyle="-" if split == "test" else "--", label=f"{task} {split}: ReST^EM")
    for j, m in enumerate(m for m in others if m in acc):
      ax.axhline(acc[m], color=f"C{i}", linestyle=styles[j % len(styles)], linewidth=1.2,
                 label=f"{task} {split}: {m} ({acc[m]:.1f})")
  if iters:
    ax.set_xticks([int(m[4:]) for m in iters])
  ax.set_xlabel("ReST^EM iteration")
  _finish(plt, fig, ax, path, "Greedy accuracy", "greedy accuracy (%)")


def _plot_pass_at_k(summary, path):
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for e in summary["evaluations"]:
    if e["split"] == "test" and e.get("pass_at_k"):
      ks = sorted(e["pass_at_k"], key=int)
      ax.plot([int(k) for k in ks], [100 * e["pass_at_k"][k] for k in ks], marker="o",
              label=f"{e['model']} ({e['task']})")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k")
  _finish(plt, fig, ax, path, "pass@k on test", "pass@k (%)")


def _plot_kept(summary, path):
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for it in summary["iterations"]:
    hist = it.get("kept_per_problem_histogram")
    if hist:
      xs = sorted(hist, key=int)
      ax.plot([int(x) for x in xs], [hist[x] for x in xs], marker="o",
              label=f"iteration {it['iteration']}")
  ax.set_xlabel("kept solutions per problem")
  _finish(plt, fig, ax, path, "Kept solutions per training problem", "problems")


def problems_with_kept(it: dict[str, Any]) -> int:
  """An iteration's problems with at least one kept sample (older summaries: from the kept
  histogram)."""
  if "problems_with_kept" in it:
    return it["problems_with_kept"]
  return sum(v for k, v in it.get("kept_per_problem_histogram", {}).items() if k != "0")


def _histogram_text(hist: dict[str, int]) -> str:
  return ", ".join(f"{k}: {v}" for k, v in sorted(hist.items(), key=lambda kv: int(kv[0])))


def iteration_lines(iterations: list[dict[str, Any]]) -> list[str]:
  """The report's Iterations section: one table row per iteration, then how an adaptive
  E-step spread its samples (rounds, samples per problem)."""
  # kept precision: the fraction of kept samples truly right (embedded tasks' ground truth).
  lines = ["## Iterations", "",
           "| iteration | samples | correct | kept | problems with kept | kept per problem | "
           "duplicates dropped | train solve rate | kept precision |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for it in iterations:
    precision = (f"{100 * it['kept_precision']:.1f}%" if it.get("kept_precision") is not None
                 else "-")
    problems = sum(it.get("kept_per_problem_histogram", {}).values())
    per_problem = f"{it['num_kept'] / problems:.2f}" if problems else "-"
    lines.append(f"| {it['iteration']} | {it['num_samples']} | {it['num_correct']} | "
                 f"{it['num_kept']} | {problems_with_kept(it)} | {per_problem} | "
                 f"{it.get('duplicates_dropped', '-')} | {100 * it['train_solve_rate']:.1f}% | "
                 f"{precision} |")
  lines.append("")
  spread = [it for it in iterations if it.get("samples_per_problem_histogram")]
  if spread:
    lines += ["Adaptive E-step: samples per round (problems sampled), and how many problems "
              "drew how many samples:", ""]
    for it in spread:
      rounds = "; ".join(f"{r['samples']} ({r['problems']})" for r in it.get("rounds", []))
      lines += [f"- iteration {it['iteration']}: rounds {rounds}",
                f"  - samples per problem (samples: problems): "
                f"{_histogram_text(it['samples_per_problem_histogram'])}"]
    lines.append("")
  return lines


def write_report(workdir: epath.PathLike, summary: dict[str, Any]) -> epath.Path:
  """Writes report.md with the tables and PNG plots beside it; returns its path."""
  workdir = epath.Path(workdir)
  plots = {"accuracy.png": _plot_accuracy, "pass_at_k.png": _plot_pass_at_k,
           "kept_per_problem.png": _plot_kept}
  for name, fn in plots.items():
    png = io.BytesIO()
    fn(summary, png)
    file_io.write_bytes_atomic(workdir / name, png.getvalue())
  lines = ["# ReST^EM run report", "", "## Test", "", "```", table(summary, "test"), "```", ""]
  if any(e["split"] == "valid" for e in summary["evaluations"]):
    lines += ["## Validation", "", "```", table(summary, "valid"), "```", ""]
  if summary["iterations"]:
    lines += iteration_lines(summary["iterations"])
  lines += ["## Plots", "", "![accuracy](accuracy.png)", "", "![pass@k](pass_at_k.png)", "",
            "![kept solutions per problem](kept_per_problem.png)", ""]
  path = workdir / REPORT_FILE
  file_io.write_text_atomic(path, "\n".join(lines))
  return path
