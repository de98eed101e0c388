"""The files restem_jax reads and writes: atomic writes, JSON Lines, and the sample record.

Atomic writes. Every file goes to a temporary name beside its target (`.NAME.tmp-<random>`) and
is renamed over it (`atomic_path`), so a reader, or a run resumed after `kill -9`, sees the whole
file or none; a write that raises leaves nothing behind.

JSON Lines. `iter_jsonl` reads one object a line, blank lines skipped, `.gz` decompressed, and
reports a bad line as a `FormatError` naming the file and its 1-based line (FILE:LINE: ...):
user data and the run's own records are read the same way. `write_jsonl` writes atomically.

The sample record (`SampleRecord`): one JSON object per sample, in problem order then sample
order, written by the Generate step's shards (`sample_shards`), the sampling CLI, evaluation and
scoring; built by `sample_record`, read back and checked by `read_samples`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Required, TypedDict

from etils import epath

# ---------------------------------------------------------------------------- errors


class Row(int):
  """A 0-based row of a table file (parquet), where a JSONL reader has a 1-based line."""


class FormatError(ValueError):
  """Malformed input, with the file and (1-based) line, or `Row`, it was found at."""

  def __init__(self, path, line: int | None, message: str):
    self.path, self.line, self.message = str(path), line, message
    if isinstance(line, Row):
      where = f"{path}: row {int(line)}"
    else:
      where = f"{path}:{line}" if line is not None else str(path)
    super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: epath.PathLike) -> Iterator[epath.Path]:
  """A temporary path to write `path`'s content to; it becomes `path` when the block ends.

  The temporary file sits beside `path` (its directory is created), named `.NAME.tmp-<random>`
  so that no glob of the real names (`*.jsonl`, `samples-*`) matches it. If the block raises,
  the temporary file is removed and `path` is left as it was.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
  try:
    yield tmp
    tmp.replace(path)
  finally:
    if tmp.exists():
      tmp.unlink()


def write_text_atomic(path: epath.PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically (see `atomic_path`)."""
  with atomic_path(path) as tmp:
    tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: epath.PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically (see `atomic_path`)."""
  with atomic_path(path) as tmp:
    tmp.write_bytes(data)


# ---------------------------------------------------------------------------- JSON Lines


def _open_binary(path: epath.Path):
  raw = path.open("rb")
  return gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw


def iter_jsonl(path: epath.PathLike) -> Iterator[tuple[int, dict]]:
  """(1-based line number, object) for each non-blank line of a JSONL(.gz) file.

  Raises:
    FormatError: a line that is not UTF-8, not JSON, or not a JSON object; a file that cannot
      be read as such (a directory, a broken gzip stream).
    FileNotFoundError: no such file.
  """
  path = epath.Path(path)
  try:
    with _open_binary(path) as f:
      # Lines are decoded one by one, so an encoding error is reported on its own line.
      for line_no, raw_line in enumerate(f, start=1):
        try:
          line = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
          raise FormatError(path, line_no, f"not UTF-8 text: {e.reason}") from None
        if not line.strip():
          continue
        try:
          obj = json.loads(line)
        except ValueError as e:
          raise FormatError(path, line_no, f"malformed JSON: {e}") from None
        if not isinstance(obj, dict):
          raise FormatError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj
  except (IsADirectoryError, EOFError, gzip.BadGzipFile) as e:
    raise FormatError(path, None, f"cannot read: {e}") from None


def read_jsonl(path: epath.PathLike) -> list[dict[str, Any]]:
  """Every object of a JSONL(.gz) file, in order (errors: see `iter_jsonl`)."""
  return [obj for _, obj in iter_jsonl(path)]


def write_jsonl(path: epath.PathLike, records: Iterable[Mapping[str, Any]], *,
                ensure_ascii: bool = True) -> epath.Path:
  """Writes `records` one JSON object a line, atomically; returns the path.

  Args:
    path: the file (local or gs://); its directory is created.
    records: JSON-able mappings.
    ensure_ascii: escape non-ASCII characters (False: write them as UTF-8, for files people
      read).
  """
  path = epath.Path(path)
  write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n"
                                  for r in records))
  return path


# ---------------------------------------------------------------------------- sample records

class SampleRecord(TypedDict, total=False):
  """One sample as JSON. Each record has either `tokens` (sample shards and the sampling CLI)
  or `num_tokens` (evaluation and scored records): the count has the one name `num_tokens`,
  and `num_tokens(record)` gives it for both."""

  id: Required[str | int]  # the problem's id, as the problem has it
  sample_index: Required[int]  # 0 .. N-1 within the problem
  text: Required[str | None]  # the decoded sample (None where the model has no vocabulary)
  tokens: list[int]  # the generated token ids
  num_tokens: int  # their number
  finish_reason: Required[str]  # "eos", "stop" or "length"
  logprob: Required[float]  # the tokens' summed log-probabilities (see `sampling`)
  # Added by the stages: the problem's (evaluation) ...
  question: str
  answer: str
  level: str
  subject: str
  prompt: str  # greedy evaluation: the prompt the model saw
  solution: str  # greedy evaluation: the reference solution
  # ... and the verdict's (scoring).
  passed: bool
  reason: str
  key: str | None


_CONTEXT_FIELDS = ("question", "answer", "level", "subject")


def sample_record(problem_id: Any, sample_index: int, sample, *, token_ids: bool = True,
                  problem: Mapping[str, Any] | None = None) -> SampleRecord:
  """The record of one sample (`SampleRecord`).

  Args:
    problem_id: the problem's id.
    sample_index: the sample's index within the problem.
    sample: a `sampling.Sample` (tokens, logprob, finish_reason, text).
    token_ids: keep the token ids as "tokens"; False keeps only their count, "num_tokens".
    problem: the problem, whose question, reference answer, level and subject (those it has,
      non-empty) travel with the sample, so the record reads on its own.
  """
  context = {k: problem[k] for k in _CONTEXT_FIELDS if problem.get(k)} if problem else {}
  length = {"tokens": sample.tokens} if token_ids else {"num_tokens": len(sample.tokens)}
  return {"id": problem_id, "sample_index": sample_index, **context, "text": sample.text,
          **length, "finish_reason": sample.finish_reason, "logprob": float(sample.logprob)}


def num_tokens(record: Mapping[str, Any]) -> int:
  """The sample's length in tokens, from "num_tokens" or the token ids."""
  return record["num_tokens"] if "num_tokens" in record else len(record["tokens"])


def check_sample(record: Mapping[str, Any], path: epath.PathLike, line: int | None) -> None:
  """Raises `FormatError` (at path:line) unless `record` holds a sample record's fields."""
  pid = record.get("id")
  if isinstance(pid, bool) or not isinstance(pid, (str, int)):
    raise FormatError(path, line, "a sample record needs a string or integer 'id'")
  index = record.get("sample_index")
  if isinstance(index, bool) or not isinstance(index, int) or index < 0:
    raise FormatError(path, line, "a sample record needs a non-negative integer 'sample_index'")
  if "text" not in record or not isinstance(record["text"], (str, type(None))):
    raise FormatError(path, line, "a sample record needs 'text' (a string or null)")
  if not isinstance(record.get("tokens"), list) and not isinstance(record.get("num_tokens"), int):
    raise FormatError(path, line, "a sample record needs 'tokens' (a list) or 'num_tokens'")
  if not isinstance(record.get("finish_reason"), str):
    raise FormatError(path, line, "a sample record needs a string 'finish_reason'")


def _count_tokens(record: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
  for key, value in record.items():
    yield ("num_tokens", len(value)) if key == "tokens" else (key, value)


def read_samples(path: epath.PathLike, *, token_ids: bool = True) -> list[SampleRecord]:
  """The sample records of a JSONL file, checked (`check_sample`), in file order.

  Args:
    path: a file of sample records.
    token_ids: False replaces a record's "tokens" by "num_tokens", in the same place.

  Raises:
    FormatError: a malformed line, or one that is not a sample record.
  """
  out = []
  for line, record in iter_jsonl(path):
    check_sample(record, path, line)
    if not token_ids and "tokens" in record:
      record = dict(_count_tokens(record))
    out.append(record)
  return out
