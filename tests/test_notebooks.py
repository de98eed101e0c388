"""Both notebooks run headless (nbclient, a real kernel) and draw their plots.

quickstart.ipynb makes a smoke run; inspect_run.ipynb then reads that run directory, which both
take from RESTEM_RUN_DIR.
"""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _execute(name, run_dir):
  nb = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
  os.environ["RESTEM_RUN_DIR"] = str(run_dir)
  try:
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": REPO}}).execute()
  finally:
    del os.environ["RESTEM_RUN_DIR"]
  return nb


def _images(nb):
  return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
             if "image/png" in out.get("data", {}))


def test_quickstart_then_inspect(smoke_run):
  # The quickstart's command is the smoke run's: on that directory it resumes a finished run.
  run_dir, _ = smoke_run
  quick = _execute("quickstart.ipynb", run_dir)
  assert (run_dir / "summary.json").exists()
  assert _images(quick) == 3  # accuracy, pass@k, kept per problem
  inspect = _execute("inspect_run.ipynb", run_dir)
  assert _images(inspect) >= 3
  text = "".join(out.get("text", "") for cell in inspect.cells if cell.cell_type == "code"
                 for out in cell.get("outputs", []))
  assert str(run_dir) in text and "greedy acc" in text  # it read this run, not a default
  assert "samples correct" in text  # the sample browser showed a problem
