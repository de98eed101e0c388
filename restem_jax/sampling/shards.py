"""The Generate step on disk: N samples per problem, written as resumable shard files.

`write_samples` reads problems from a seqio Task split (or any iterable of {"id", "inputs"}),
samples them with a `sampling.Sampler`, and writes

  OUT/spec.json                      the sampling settings; a rerun with other settings is an
                                     error, not a silent mix of two runs
  OUT/samples-00000.jsonl ...        shard k = problems [k * per_shard, (k + 1) * per_shard) of
                                     the input order, every sample of each, one sample record
                                     (`file_io`) a line: id, sample_index, text, tokens,
                                     finish_reason, logprob
  OUT/COMPLETE-00000-of-00001        written by each host when all its shards exist

Every file is written atomically (temporary name, then rename), so a kill at any moment leaves
only whole shards. A rerun skips the shards that exist; since a sample depends only on (params,
prompt, seed, iteration, problem id, sample index), the result equals an uninterrupted run.

`write_ranges` writes given sample index ranges [first, first + count) of each problem the same
way (a round of the adaptive E-step, `adaptive.py`): sample `first + j` is the very sample
`write_samples` gives index `first + j`.

On several hosts, shard k belongs to host k % process_count (`partitioning.shard_host`, the rule
scoring follows too); each host samples with its own devices (a mesh of `jax.local_devices()`)
and writes its own shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from etils import epath

from restem_jax import file_io
from restem_jax.model import partitioning
from restem_jax import sampling

SPEC_FILE = "spec.json"
_SHARD = "samples-{:05d}.jsonl"
_COMPLETE = "COMPLETE-{:05d}-of-{:05d}"


def _plain_id(value: Any) -> str | int:
  """Problem ids as JSON-friendly values (seqio gives bytes and numpy scalars)."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, (str, int)):
    return value
  raise TypeError(f"problem ids must be strings or integers, got {type(value).__name__}")


def _resolve(source: Any) -> Any:
  if isinstance(source, str):
    import seqio  # pylint: disable=g-import-not-at-top  (TensorFlow: only when a Task is used)
    return seqio.get_mixture_or_task(source)
  return source


def iter_problems(source: Any, *, split: str = "train", id_key: str = "id",
                  inputs_key: str = "inputs", eos_id: int | None = 1
                  ) -> Iterator[tuple[str | int, list[int]]]:
  """Yields (problem id, prompt token ids) in the source's order.

  Args:
    source: a seqio Task or Mixture (or its registered name), read unshuffled, one epoch; or any
      iterable of mappings with `id_key` and `inputs_key` (token ids).
    split: the seqio split.
    id_key: the field holding the problem id.
    inputs_key: the field holding the tokenized prompt.
    eos_id: a prompt ending in this id (a seqio feature with add_eos=True) has it removed, with
      a warning: a decoder-only prompt must not end the sequence before the answer.
  """
  source = _resolve(source)
  if hasattr(source, "get_dataset"):
    dataset = source.get_dataset(sequence_length=None, split=split, shuffle=False,
                                 num_epochs=1, use_cached=False)
    examples: Iterable[Mapping[str, Any]] = dataset.as_numpy_iterator()
  else:
    examples = source
  warned = False
  for index, example in enumerate(examples):
    for key in (id_key, inputs_key):
      if key not in example:
        raise KeyError(f"example {index} has no {key!r} field (fields: {sorted(example)})")
    tokens = [int(t) for t in np.asarray(example[inputs_key]).reshape(-1)]
    if eos_id is not None and tokens and tokens[-1] == eos_id:
      if not warned:
        logging.warning("prompts end in EOS (id %d): removing it; set add_eos=False on the "
                        "inputs feature of a sampling Task", eos_id)
        warned = True
      tokens = tokens[:-1]
    yield _plain_id(example[id_key]), tokens


def progress_bar(total: int | None, enabled: bool = True):
  """A tqdm bar over problems, and the `on_batch` callback for `Sampler.generate` that feeds it.

  The rates shown count sampled work only (shards skipped on resume would inflate them).
  """
  bar = tqdm.tqdm(total=total, unit="problem", disable=not enabled, dynamic_ncols=True)
  rate = {"problems": 0, "tokens": 0, "start": time.perf_counter()}

  def on_batch(problems_done: int, tokens: int) -> None:
    rate["problems"] += problems_done
    rate["tokens"] += tokens
    seconds = max(time.perf_counter() - rate["start"], 1e-9)
    bar.set_postfix({"problems/s": f"{rate['problems'] / seconds:.2f}",
                     "tokens/s": f"{rate['tokens'] / seconds:.0f}"}, refresh=False)
    bar.update(problems_done)

  return bar, on_batch


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _check_spec(out_dir: epath.Path, spec: dict[str, Any]) -> None:
  """Writes spec.json, or checks that an existing one holds the same settings."""
  path = out_dir / SPEC_FILE
  if path.exists():
    found = json.loads(path.read_text())
    if found != spec:
      diff = {k: (found.get(k), spec.get(k)) for k in set(found) | set(spec)
              if found.get(k) != spec.get(k)}
      raise ValueError(f"{out_dir} holds samples made with other settings (found, now): "
                       f"{diff}; use a new directory or the same settings to resume")
  elif jax.process_index() == 0:
    file_io.write_text_atomic(path, json.dumps(spec, indent=2, sort_keys=True))


def _shard_ids(path: epath.Path) -> list[Any]:
  ids = []
  for record in file_io.read_jsonl(path):
    pid = record["id"]
    if not ids or ids[-1] != pid:
      ids.append(pid)
  return ids


def write_samples(out_dir: epath.PathLike, sampler: sampling.Sampler, source: Any, *,
                  num_samples: int, strategy: sampling.Strategy, max_new_tokens: int,
                  seed: int = 0, iteration: int = 0, stop_strings: tuple[str, ...] = (),
                  batch_size: int = 64, problems_per_shard: int = 256, split: str = "train",
                  shared_prefix: tuple[int, ...] = (),
                  id_key: str = "id", inputs_key: str = "inputs", progress: bool = True,
                  extra_spec: Mapping[str, Any] | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  write: bool = True) -> list[epath.Path]:
  """Samples every problem of `source` into shard files under `out_dir`, resuming if present.

  Args:
    out_dir: the samples directory (local or gs://), e.g. WORKDIR/iter1/samples.
    sampler: holds the model, its mesh and the vocabulary (for text and stop strings).
    source: a seqio Task/Mixture or its name, or an iterable of {"id", "inputs"} (see
      `iter_problems`).
    num_samples: N samples per problem.
    strategy: e.g. `sampling.TopK(40, 0.7)` (the paper's setting).
    max_new_tokens: the most tokens per sample.
    seed: run seed.
    iteration: ReST^EM iteration; part of every sample's key.
    stop_strings: a sample ends at the first of these (e.g. the few-shot separator).
    batch_size: rows decoded together.
    problems_per_shard: problems per shard file (the unit of resumption).
    split: seqio split.
    shared_prefix: token ids that many prompts start with (the few-shot examples), computed
      once per batch (see `Sampler.generate`).
    id_key: field holding the problem id.
    inputs_key: field holding the prompt's token ids.
    progress: show a progress bar with problems/s and tokens/s.
    extra_spec: more settings to record and check on resume (e.g. the checkpoint path).
    process_index: this host (default `jax.process_index()`).
    process_count: number of hosts (default `jax.process_count()`).
    write: write the shard files and the completion marker. When the sampler's mesh spans
      several hosts, every host must sample the same shards together: call with
      `process_index=0, process_count=1` everywhere and `write=(jax.process_index() == 0)`.

  Returns:
    The shard files that belong to this host, in order.
  """
  out_dir = epath.Path(out_dir)
  if write:
    out_dir.mkdir(parents=True, exist_ok=True)
  host = jax.process_index() if process_index is None else process_index
  hosts = jax.process_count() if process_count is None else process_count
  spec = {"num_samples": num_samples, "strategy": repr(strategy),
          "max_new_tokens": max_new_tokens, "seed": seed, "iteration": iteration,
          "stop_strings": list(stop_strings), "problems_per_shard": problems_per_shard,
          "shared_prefix": [int(t) for t in shared_prefix],
          "eos_id": sampler.eos_id, "model": sampler.cfg.to_dict(), **(extra_spec or {})}
  if write:
    _check_spec(out_dir, json.loads(json.dumps(spec)))  # as it reads back from JSON

  source = _resolve(source)
  problems = iter_problems(source, split=split, id_key=id_key, inputs_key=inputs_key,
                           eos_id=sampler.eos_id)
  total = None
  if hasattr(source, "num_input_examples"):
    total = source.num_input_examples(split)
  elif hasattr(source, "__len__"):
    total = len(source)
  bar, on_batch = progress_bar(total, enabled=progress)
  ranges = ((pid, prompt, 0, num_samples) for pid, prompt in problems)
  mine = _write_shards(out_dir, sampler, ranges, problems_per_shard=problems_per_shard,
                       host=host, hosts=hosts, write=write, on_batch=on_batch,
                       on_skip=bar.update,
                       strategy=strategy, max_new_tokens=max_new_tokens, seed=seed,
                       iteration=iteration, stop_strings=stop_strings, batch_size=batch_size,
                       shared_prefix=shared_prefix)
  bar.close()
  return mine


def write_ranges(out_dir: epath.PathLike, sampler: sampling.Sampler,
                 ranges: Sequence[tuple[Any, Sequence[int], int, int]], *,
                 strategy: sampling.Strategy, max_new_tokens: int, seed: int = 0,
                 iteration: int = 0, stop_strings: tuple[str, ...] = (), batch_size: int = 64,
                 problems_per_shard: int = 256, shared_prefix: tuple[int, ...] = (),
                 progress: bool = True, extra_spec: Mapping[str, Any] | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 write: bool = True) -> list[epath.Path]:
  """Like `write_samples`, for given sample index ranges: a round of the adaptive E-step.

  Args:
    out_dir: the round's samples directory.
    sampler: as for `write_samples`.
    ranges: (problem id, prompt token ids, first sample index, count) per problem, in shard
      order; each problem at most once. Sample `first + j` of a problem is exactly the sample
      `write_samples` gives that index (the same PRNG key), so rounds extend a problem's samples.
    strategy, max_new_tokens, seed, iteration, stop_strings, batch_size, problems_per_shard,
    shared_prefix, progress, extra_spec, process_index, process_count, write: as for
      `write_samples`. spec.json records a digest of `ranges` (ids, firsts, counts), so a rerun
      with other ranges is an error.

  Returns:
    The shard files that belong to this host, in order.
  """
  out_dir = epath.Path(out_dir)
  if write:
    out_dir.mkdir(parents=True, exist_ok=True)
  host = jax.process_index() if process_index is None else process_index
  hosts = jax.process_count() if process_count is None else process_count
  ranges = [(_plain_id(pid), [int(t) for t in prompt], int(first), int(count))
            for pid, prompt, first, count in ranges]
  if any(first < 0 or count < 1 for _, _, first, count in ranges):
    raise ValueError("every range needs first >= 0 and count >= 1")
  digest = hashlib.sha256(json.dumps([[pid, first, count] for pid, _, first, count in ranges]
                                     ).encode()).hexdigest()
  spec = {"ranges": len(ranges), "ranges_sha256": digest,
          "num_samples": sum(count for *_, count in ranges), "strategy": repr(strategy),
          "max_new_tokens": max_new_tokens, "seed": seed, "iteration": iteration,
          "stop_strings": list(stop_strings), "problems_per_shard": problems_per_shard,
          "shared_prefix": [int(t) for t in shared_prefix],
          "eos_id": sampler.eos_id, "model": sampler.cfg.to_dict(), **(extra_spec or {})}
  if write:
    _check_spec(out_dir, json.loads(json.dumps(spec)))
  bar, on_batch = progress_bar(len(ranges), enabled=progress)
  mine = _write_shards(out_dir, sampler, iter(ranges), problems_per_shard=problems_per_shard,
                       host=host, hosts=hosts, write=write, on_batch=on_batch,
                       on_skip=bar.update,
                       strategy=strategy, max_new_tokens=max_new_tokens, seed=seed,
                       iteration=iteration, stop_strings=stop_strings, batch_size=batch_size,
                       shared_prefix=shared_prefix)
  bar.close()
  return mine


def _generate_ranges(sampler: sampling.Sampler, chunk, **kwargs) -> list[list[sampling.Sample]]:
  """Samples [first, first + count) of each (id, prompt, first, count) in `chunk`.

  Problems with the same (first, count) are sampled together, from sample index `first` on
  (`Sampler.generate(first_sample=...)`: a sample depends only on its index).
  """
  groups: dict[tuple[int, int], list[int]] = {}
  for i, (_, _, first, count) in enumerate(chunk):
    groups.setdefault((first, count), []).append(i)
  results: list[list[sampling.Sample]] = [[] for _ in chunk]
  for (first, count), members in groups.items():
    got = sampler.generate([chunk[i][0] for i in members], [chunk[i][1] for i in members],
                           num_samples=count, first_sample=first, **kwargs)
    for i, samples in zip(members, got):
      results[i] = samples
  return results


def _write_shards(out_dir: epath.Path, sampler: sampling.Sampler, ranges, *,
                  problems_per_shard: int, host: int, hosts: int, write: bool, on_batch,
                  on_skip, **kwargs) -> list[epath.Path]:
  """Shard k = ranges [k * per_shard, (k + 1) * per_shard): sampled unless its file exists.

  Then this host's completion marker. `on_batch` gets the sampler's progress, `on_skip(number
  of problems)` each existing shard's. Returns this host's shard files.
  """
  seen: set[str] = set()
  mine: list[epath.Path] = []
  num_shards = 0
  for k, chunk in enumerate(_chunks(ranges, problems_per_shard)):
    num_shards = k + 1
    ids = [pid for pid, *_ in chunk]
    for pid in ids:
      if str(pid) in seen:
        raise ValueError(f"problem id {pid!r} occurs twice: ids seed the samples and key the "
                         "rewards, so they must be unique")
      seen.add(str(pid))
    if partitioning.shard_host(k, hosts) != host:
      continue
    path = out_dir / _SHARD.format(k)
    mine.append(path)
    if path.exists():
      if _shard_ids(path) != ids:
        raise ValueError(f"{path} holds other problems than shard {k} of this input: the input "
                         "changed since it was written; use a new directory")
      on_skip(len(chunk))
      continue
    results = _generate_ranges(sampler, chunk, on_batch=on_batch, **kwargs)
    if write:
      file_io.write_jsonl(path, [file_io.sample_record(pid, first + j, s)
                                 for (pid, _, first, _), samples in zip(chunk, results)
                                 for j, s in enumerate(samples)])
  if write:
    file_io.write_text_atomic(out_dir / _COMPLETE.format(host, hosts),
                              json.dumps({"num_shards": num_shards}))
  return mine


def is_complete(out_dir: epath.PathLike) -> bool:
  """Whether every host has finished its shards."""
  markers = list(epath.Path(out_dir).glob("COMPLETE-*-of-*"))
  if not markers:
    return False
  hosts = int(markers[0].name.rsplit("-", 1)[1])
  return all((epath.Path(out_dir) / _COMPLETE.format(h, hosts)).exists() for h in range(hosts))


def read_samples(out_dir: epath.PathLike) -> list[dict[str, Any]]:
  """All samples of a finished directory, in problem order (then sample index).

  Raises:
    FileNotFoundError: when some host has not finished (`is_complete` is False).
  """
  out_dir = epath.Path(out_dir)
  if not is_complete(out_dir):
    raise FileNotFoundError(f"{out_dir}: sampling has not finished on every host")
  records = []
  for path in sorted(out_dir.glob("samples-*.jsonl")):
    records.extend(file_io.read_samples(path))
  return records
