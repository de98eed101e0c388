"""file_io: atomic writes, JSONL with FILE:LINE errors, the sample record."""

import gzip
import json
import os

import pytest

from restem_jax import file_io
from restem_jax import sampling


def test_jsonl_round_trip_keeps_order_types_and_unicode(tmp_path):
  records = [{"id": "a", "n": 1, "x": 0.5, "ok": True, "none": None, "s": "π ≈ 3.14\n"},
             {"id": 7, "nested": {"list": [1, [2, 3]]}}]
  for ascii_only in (True, False):
    path = file_io.write_jsonl(tmp_path / "sub" / f"r{ascii_only}.jsonl", records,
                               ensure_ascii=ascii_only)
    assert file_io.read_jsonl(path) == records
    text = path.read_bytes().decode("utf-8")
    assert ("π" in text) is not ascii_only
    assert text.count("\n") == 2 and text.endswith("\n")
  assert sorted(os.listdir(tmp_path / "sub")) == ["rFalse.jsonl", "rTrue.jsonl"]


def test_jsonl_reads_gzip_and_skips_blank_lines_keeping_line_numbers(tmp_path):
  path = tmp_path / "r.jsonl.gz"
  path.write_bytes(gzip.compress(b'{"a": 1}\n\n  \n{"a": 2}\n'))
  assert list(file_io.iter_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize("content, message", [
    (b'{"a": 1}\n{"a": \n', r"r.jsonl:2: malformed JSON: Expecting value"),
    (b'{"a": 1}\n\n[1, 2]\n', r"r.jsonl:3: expected a JSON object, got list"),
    (b'{"a": "\xff"}\n', r"r.jsonl:1: not UTF-8 text"),
])
def test_malformed_line_names_file_and_line(tmp_path, content, message):
  path = tmp_path / "r.jsonl"
  path.write_bytes(content)
  with pytest.raises(file_io.FormatError, match=message) as info:
    file_io.read_jsonl(path)
  assert info.value.path == str(path)
  assert isinstance(info.value, ValueError)  # callers that catch ValueError keep working


def test_unreadable_file_is_a_format_error_and_a_missing_one_is_not_found(tmp_path):
  (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
  with pytest.raises(file_io.FormatError, match=r"bad.jsonl.gz: cannot read"):
    file_io.read_jsonl(tmp_path / "bad.jsonl.gz")
  with pytest.raises(FileNotFoundError):
    file_io.read_jsonl(tmp_path / "absent.jsonl")


def test_atomic_write_replaces_whole_file_and_leaves_nothing_on_error(tmp_path):
  path = tmp_path / "out.jsonl"
  file_io.write_text_atomic(path, "old\n")
  with pytest.raises(RuntimeError, match="boom"):
    with file_io.atomic_path(path) as tmp:
      tmp.write_text("half a fil")
      raise RuntimeError("boom")
  assert path.read_text() == "old\n"  # untouched
  assert os.listdir(tmp_path) == ["out.jsonl"]  # no temporary file left

  def records():
    yield {"id": 1}
    raise ValueError("a record that cannot be made")
  with pytest.raises(ValueError, match="cannot be made"):
    file_io.write_jsonl(tmp_path / "new.jsonl", records())
  assert os.listdir(tmp_path) == ["out.jsonl"]
  with pytest.raises(TypeError):  # not JSON-able: nothing written either
    file_io.write_jsonl(path, [{"id": object()}])
  assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.jsonl"]

  file_io.write_bytes_atomic(tmp_path / "deep" / "b.bin", b"\x00\x01")
  assert (tmp_path / "deep" / "b.bin").read_bytes() == b"\x00\x01"
  assert os.listdir(tmp_path / "deep") == ["b.bin"]


def test_sample_record_with_ids_or_count_reads_back_the_same(tmp_path):
  sample = sampling.Sample(tokens=[5, 6, 7], logprob=-1.25, finish_reason="stop", text="x = 3")
  problem = {"id": "p", "question": "q?", "answer": "3", "level": "", "prompt": "P"}
  shard = file_io.sample_record("p", 2, sample)
  assert shard == {"id": "p", "sample_index": 2, "text": "x = 3", "tokens": [5, 6, 7],
                   "finish_reason": "stop", "logprob": -1.25}
  counted = file_io.sample_record("p", 2, sample, token_ids=False, problem=problem)
  assert counted == {"id": "p", "sample_index": 2, "question": "q?", "answer": "3",
                     "text": "x = 3", "num_tokens": 3, "finish_reason": "stop",
                     "logprob": -1.25}
  assert file_io.num_tokens(shard) == file_io.num_tokens(counted) == 3
  path = file_io.write_jsonl(tmp_path / "s.jsonl", [shard])
  assert file_io.read_samples(path) == [shard]
  # Dropping the ids gives the counted record's fields, in the same order.
  assert list(file_io.read_samples(path, token_ids=False)[0]) == [
      k for k in counted if k not in ("question", "answer")]


@pytest.mark.parametrize("change, message", [
    ({"id": None}, "'id'"), ({"id": True}, "'id'"), ({"sample_index": -1}, "'sample_index'"),
    ({"sample_index": "0"}, "'sample_index'"), ({"text": 3}, "'text'"),
    ({"tokens": "abc"}, "'tokens'"), ({"finish_reason": None}, "'finish_reason'"),
])
def test_read_samples_rejects_a_record_without_the_schema(tmp_path, change, message):
  good = {"id": 1, "sample_index": 0, "text": None, "tokens": [1], "finish_reason": "eos",
          "logprob": 0.0}
  path = tmp_path / "s.jsonl"
  path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **change}) + "\n")
  with pytest.raises(file_io.FormatError, match=f"s.jsonl:2: .*{message}"):
    file_io.read_samples(path)
