"""Local snapshots of Hugging Face hub data sets, and parquet files: the layout a path holds.

Nothing is downloaded: point at a snapshot directory (e.g. what `huggingface-cli download
--repo-type dataset NAME --local-dir DIR` writes, or a cache entry
~/.cache/huggingface/hub/datasets--ORG--NAME), one of its config directories, or one file.

  hub data set                  files under the snapshot root                   format
  openai/gsm8k                  main/{train,test}-00000-of-00001.parquet,       gsm8k
                                socratic/... (main/ unless a config dir is given)
  EleutherAI/hendrycks_math     <subject>/{train,test}-00000-of-00001.parquet   math
                                (all subjects together, or one subject dir)
  HuggingFaceH4/MATH-500        test.jsonl                                      math500
  codeparrot/apps               train.jsonl, test.jsonl                         apps
  openai/openai_humaneval       openai_humaneval/test-00000-of-00001.parquet    humaneval
  google-research-datasets/mbpp full/{train,test,validation,prompt}-00000-of-   mbpp
                                00001.parquet, sanitized/... (full/ unless a config dir is given)

Besides these, a directory of JSONL files in one format (GSM8K's train.jsonl / test.jsonl from
GitHub, APPS, the generic formats) is a snapshot too. The format comes from the columns (parquet)
or the first record's fields (JSONL), as in `formats.format_of_fields`; the split from the file
name (`test-00000-of-00001.parquet` and `test.jsonl` are split "test"). Records go through the
validators of `restem_jax.data.formats`, so a problem means the same as in the JSONL formats.

Problem ids: the data set's own id column where it has one (task_id, problem_id, unique_id);
else the 0-based row (JSONL: line) index within its file. Where one split spans several files
without ids (hendrycks_math's subjects read from the root), the id is the file's path under the
directory given, without ".parquet", then "/" and the row: "algebra/test-00000-of-00001/12";
read from one subject directory or one file, it is just "12".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

from etils import epath

from restem_jax.data import formats
from restem_jax import file_io

# Config directories used when a snapshot root holds several (the hub's default configs).
DEFAULT_CONFIGS = ("main", "full", "openai_humaneval")
_SHARD_RE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")
_MATH_COLUMNS = {"problem", "level", "type", "solution"}


@dataclasses.dataclass(frozen=True)
class Snapshot:
  """A data set read from files: its format and, per split, its files (in order).

  Attributes:
    root: the path given (ids of multi-file splits are relative to it).
    fmt: a `formats.FORMATS` name ("math" here means MATH records in parquet).
    splits: split name -> files.
    layout: a readable name of the layout found (for messages).
  """
  root: epath.Path
  fmt: str
  splits: dict[str, list[epath.Path]]
  layout: str


def _is_parquet(path: epath.Path) -> bool:
  return path.name.endswith(".parquet")


def _is_jsonl(path: epath.Path) -> bool:
  return path.name.endswith((".jsonl", ".jsonl.gz"))


def split_of(path: epath.Path) -> str:
  """The split a file holds, from its name: "test-00000-of-00001.parquet", "test.jsonl"."""
  stem = re.sub(r"\.(parquet|jsonl|jsonl\.gz)$", "", path.name)
  match = _SHARD_RE.match(stem)
  return match.group("split") if match else stem


def _parquet_table(path: epath.Path):
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  try:
    with path.open("rb") as f:
      # One thread: these files are a few MB at most, and no Arrow pool is left running at exit.
      return pq.read_table(f, use_threads=False)
  except (pa.ArrowException, OSError) as e:
    raise file_io.FormatError(path, None, f"not a readable parquet file: {e}") from None


def parquet_columns(path: epath.PathLike) -> list[str]:
  """The column names of a parquet file."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  path = epath.Path(path)
  try:
    with path.open("rb") as f:
      return list(pq.read_schema(f).names)
  except (pa.ArrowException, OSError) as e:
    raise file_io.FormatError(path, None, f"not a readable parquet file: {e}") from None


def parquet_records(path: epath.PathLike) -> Iterator[tuple[file_io.Row, dict]]:
  """(`file_io.Row`, row as a dict of Python values) for each row of a parquet file."""
  path = epath.Path(path)
  for i, row in enumerate(_parquet_table(path).to_pylist()):
    yield file_io.Row(i), row


def file_format(path: epath.Path) -> str:
  """The format of one parquet or JSONL file, from its columns or first record's fields."""
  if _is_parquet(path):
    columns = parquet_columns(path)
    fmt = "math" if _MATH_COLUMNS <= set(columns) else formats.format_of_fields(columns)
    if fmt is None:
      raise file_io.FormatError(path, None, f"columns {sorted(columns)} match none of the "
                                f"formats {formats.FORMATS}")
    return fmt
  return formats.detect_format(path)


def _data_files(directory: epath.Path) -> list[epath.Path]:
  return sorted((p for p in directory.iterdir()
                 if p.is_file() and (_is_parquet(p) or _is_jsonl(p))), key=lambda p: p.name)


def _group(files: list[epath.Path]) -> dict[str, list[epath.Path]]:
  splits: dict[str, list[epath.Path]] = {}
  for f in files:
    splits.setdefault(split_of(f), []).append(f)
  return splits


def _select(files: list[epath.Path], where: epath.Path) -> tuple[str, list[epath.Path]]:
  """(format, files in it): a directory may hold other files too (GSM8K's GitHub data/ has
  example_model_solutions.jsonl): those of the standard splits decide when formats differ."""
  fmts = {}
  for f in files:
    try:
      fmts[f] = file_format(f)
    except file_io.FormatError:
      if len(files) == 1:
        raise
  if len(set(fmts.values())) > 1:
    fmts = {f: v for f, v in fmts.items() if split_of(f) in ("train", "test", "validation")}
  if len(set(fmts.values())) != 1:
    raise file_io.FormatError(where, None, "holds no data files in one known format (found "
                              f"{ {f.name: v for f, v in fmts.items()} or 'none'})")
  fmt = next(iter(fmts.values()))
  return fmt, [f for f in files if fmts.get(f) == fmt]


LAYOUTS_HINT = ("expected a Hugging Face hub snapshot (openai/gsm8k, EleutherAI/hendrycks_math, "
                "HuggingFaceH4/MATH-500, codeparrot/apps, openai/openai_humaneval, "
                "google-research-datasets/mbpp), parquet or JSONL files, or a MATH directory "
                "of JSON files")


def _json_below(directory: epath.Path, depth: int = 4) -> Iterator[epath.Path]:
  for child in directory.iterdir():
    if child.is_dir() and depth > 0:
      yield from _json_below(child, depth - 1)
    elif child.name.endswith(".json"):
      yield child


def _cache_snapshot(path: epath.Path) -> epath.Path:
  """A Hugging Face cache entry (datasets--ORG--NAME/) -> the snapshot its refs/main names, or
  its only snapshot; any other path as it is."""
  snapshots = path / "snapshots"
  if not path.name.startswith("datasets--") or not snapshots.is_dir():
    return path
  ref = path / "refs" / "main"
  if ref.exists() and (snapshots / ref.read_text().strip()).is_dir():
    return snapshots / ref.read_text().strip()
  found = [d for d in snapshots.iterdir() if d.is_dir()]
  return found[0] if len(found) == 1 else path


def find_snapshot(path: epath.PathLike) -> Snapshot | None:
  """The snapshot layout at `path`, or None for a MATH directory of JSON files (or nothing).

  Raises:
    FileNotFoundError: no such path.
    FormatError: a file in no known format, or a root with several configs and no default.
  """
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"no such file or directory: {path}")
  path = _cache_snapshot(path)
  if path.is_file():
    if not (_is_parquet(path) or _is_jsonl(path)):
      raise file_io.FormatError(path, None, "expected a .parquet, .jsonl or .jsonl.gz file")
    return Snapshot(path, file_format(path), {split_of(path): [path]}, "one file")
  files = _data_files(path)
  if files:
    fmt, files = _select(files, path)
    return Snapshot(path, fmt, _group(files), "files in one directory")
  configs = sorted((d for d in path.iterdir() if d.is_dir() and any(
      _is_parquet(f) for f in d.iterdir() if f.is_file())), key=lambda d: d.name)
  if not configs:
    return None
  if _select(_data_files(configs[0]), configs[0])[0] == "math":
    # hendrycks_math: one directory per subject, read together.
    fmt, files = _select([f for d in configs for f in _data_files(d)], path)
    return Snapshot(path, fmt, _group(files), "subject directories")
  chosen = next((d for name in DEFAULT_CONFIGS for d in configs if d.name == name),
                configs[0] if len(configs) == 1 else None)
  if chosen is None:
    raise file_io.FormatError(path, None, f"holds the configs {[d.name for d in configs]}: "
                              "point at one of them")
  fmt, files = _select(_data_files(chosen), chosen)
  return Snapshot(path, fmt, _group(files), f"config {chosen.name}/")


def _records(file: epath.Path):
  return parquet_records(file) if _is_parquet(file) else file_io.iter_jsonl(file)


def _math_record(path, line, obj, index):
  return formats.math_problem(path, line, obj, str(index))


def read_split(snapshot: Snapshot, split: str) -> list[dict]:
  """The problems of one split of a snapshot (see the module docstring for ids).

  Raises:
    FormatError: no such split, malformed records, duplicate ids.
  """
  if split not in snapshot.splits:
    raise file_io.FormatError(snapshot.root, None, f"no {split!r} split here (splits: "
                              f"{sorted(snapshot.splits)})")
  files = snapshot.splits[split]
  own_ids = snapshot.fmt in ("humaneval", "apps", "jsonl", "math500", "mbpp")
  problems, seen = [], {}
  for file in files:
    if snapshot.fmt == "math":
      got = [_math_record(file, line, obj, int(line) if isinstance(line, file_io.Row)
                          else line - 1) for line, obj in _records(file)]
    else:
      got = formats.problems_from_records(snapshot.fmt, file, _records(file))
    prefix = ""
    if len(files) > 1 and not own_ids:
      rel = str(file.relative_to(snapshot.root)) if snapshot.root.is_dir() else file.name
      prefix = re.sub(r"\.(parquet|jsonl|jsonl\.gz)$", "", rel) + "/"
    for p in got:
      p["id"] = prefix + p["id"]
      if p["id"] in seen:
        raise file_io.FormatError(file, None, f"duplicate id {p['id']!r} (also in {seen[p['id']]})")
      seen[p["id"]] = file
      problems.append(p)
  if not problems:
    raise file_io.FormatError(files[0] if len(files) == 1 else snapshot.root, None,
                              f"the {split} split holds no problems")
  return problems


def read_problems(path: epath.PathLike, fmt: str | None = None,
                  split: str = "test") -> tuple[str, list[dict]]:
  """Problems to score from any supported path (the scoring CLI's reader).

  Args:
    path: a file in one of `formats.FORMATS` (JSONL) or a parquet file; a MATH directory of JSON
      files; or a snapshot directory (module docstring).
    fmt: the format (JSONL files: read as it; parquet and snapshots: checked); None detects it.
    split: the split read from a snapshot directory (a single file is read whole).

  Returns:
    (format, problems); the format names the reward (`score.REWARD_FOR_FORMAT`).
  """
  path = epath.Path(path)
  if path.is_file() and not _is_parquet(path):
    return formats.read_problems(path, fmt)  # one JSONL file, whatever its name
  snapshot = find_snapshot(path)
  if snapshot is None:
    if not any(_json_below(path)):
      raise file_io.FormatError(path, None, f"no known layout here: {LAYOUTS_HINT}")
    return formats.read_problems(path, fmt or "math")
  if fmt is not None and fmt != snapshot.fmt:
    raise file_io.FormatError(path, None, f"holds {snapshot.fmt} problems ({snapshot.layout}), "
                              f"not {fmt}")
  if path.is_file():
    split = next(iter(snapshot.splits))
  return snapshot.fmt, read_split(snapshot, split)
