"""Training batches with a resumable position, and fixed validation batches.

The trainer reads batches through a three-method protocol (`TrainData`): `next(data)` gives this
host's rows of the next global batch, `get_state()` a JSON-serialisable position that is saved
with every checkpoint, `set_state()` puts the stream back there. `ShuffledExamples` implements it
over a materialised set of examples (ReST^EM's filtered samples fit in host memory): the stream is
the concatenation of per-epoch permutations, each a pure function of (seed, epoch), so the
position is one integer (examples consumed) and a restart continues the exact same sequence.

Examples use seqio's decoder feature names, as `seqio.PrefixLMFeatureConverter(
loss_on_targets_only=True)` produces them:
  decoder_input_tokens   [L] int   the row shifted right (0 first): what the model reads
  decoder_target_tokens  [L] int   prompt + solution: what the model predicts
  decoder_loss_weights   [L] float 0 on prompt and padding, the sample's reward on the solution
  decoder_segment_ids, decoder_positions  [L] int  (optional, for packed rows)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np

Batch = dict[str, np.ndarray]

REQUIRED_FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")
OPTIONAL_FEATURES = ("decoder_segment_ids", "decoder_positions")
# PrefixLMFeatureConverter also marks the prompt for bidirectional attention. The decoder here is
# causal everywhere, as the sampler's prefill is, so training must not see the prompt any other
# way: the feature is dropped.
IGNORED_FEATURES = ("decoder_causal_attention",)


class TrainData(Protocol):
  """What the trainer needs from a training stream."""

  def __next__(self) -> Batch:
    """This host's rows of the next global batch: {feature: [rows, L]} numpy arrays.

    The stream is endless (epochs follow each other); the trainer decides when to stop.
    """

  def get_state(self) -> dict[str, Any]:
    """The position after the last batch returned, JSON-serialisable."""

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues the stream from a position that `get_state` returned."""


def prefix_lm_example(inputs: Sequence[int], targets: Sequence[int], length: int,
                      weight: float = 1.0) -> Batch:
  """One unpacked row in the layout of seqio's PrefixLMFeatureConverter(loss_on_targets_only).

  Args:
    inputs: prompt token ids (few-shot prompt + question).
    targets: solution token ids (normally ending in EOS).
    length: row length; longer rows are truncated from the end.
    weight: the sample's reward, put on every target token.

  Returns:
    {feature: [length] array} for the REQUIRED_FEATURES.
  """
  tokens = (list(inputs) + list(targets))[:length]
  n_in = min(len(inputs), length)
  target_tokens = np.zeros([length], np.int32)
  target_tokens[:len(tokens)] = tokens
  input_tokens = np.zeros([length], np.int32)
  input_tokens[1:len(tokens)] = tokens[:-1] if tokens else []
  weights = np.zeros([length], np.float32)
  weights[n_in:len(tokens)] = weight
  return {"decoder_input_tokens": input_tokens, "decoder_target_tokens": target_tokens,
          "decoder_loss_weights": weights}


def stack_examples(examples: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray]
                   ) -> Batch:
  """Examples as {feature: [N, L]} arrays; rows of different lengths are zero-padded on the right.

  Args:
    examples: a list of {feature: [L_i]} rows, or already stacked {feature: [N, L]} arrays.

  Returns:
    {feature: [N, L]} with L the longest row; padding has zero loss weight, so it adds no loss.
  """
  if isinstance(examples, Mapping):
    stacked = {k: np.asarray(v) for k, v in examples.items()}
  else:
    if not examples:
      raise ValueError("no examples")
    keys = set(examples[0]) - set(IGNORED_FEATURES)
    length = max(len(np.asarray(ex[k])) for ex in examples for k in keys)
    stacked = {}
    for k in keys:
      rows = [np.asarray(ex[k]) for ex in examples]
      out = np.zeros([len(rows), length], rows[0].dtype)
      for i, row in enumerate(rows):
        out[i, :len(row)] = row
      stacked[k] = out
  stacked = {k: v for k, v in stacked.items() if k not in IGNORED_FEATURES}
  missing = [k for k in REQUIRED_FEATURES if k not in stacked]
  if missing:
    raise ValueError(f"examples lack features {missing}")
  unknown = set(stacked) - set(REQUIRED_FEATURES) - set(OPTIONAL_FEATURES)
  if unknown:
    raise ValueError(f"unknown features {sorted(unknown)}")
  shapes = {k: v.shape for k, v in stacked.items()}
  if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
    raise ValueError(f"features must share one [N, L] shape, got {shapes}")
  return stacked


def _host_rows(global_rows: int, process_index: int | None, process_count: int | None) -> slice:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if global_rows % count:
    raise ValueError(f"batch of {global_rows} rows does not split over {count} hosts")
  per = global_rows // count
  return slice(index * per, (index + 1) * per)


class ShuffledExamples:
  """An endless stream of global batches over per-epoch shuffles of a fixed set of examples.

  Every host builds the same global order and keeps its own contiguous rows of each batch, which
  `jax.make_array_from_process_local_data` then assembles into one array sharded over the data
  axes. A batch may span the end of one epoch and the start of the next, so any dataset size and
  batch size work (a 5-example set and 8-row batches included).
  """

  def __init__(self, examples: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
               batch_size: int, seed: int = 0, shuffle: bool = True,
               process_index: int | None = None, process_count: int | None = None):
    """Args:
      examples: rows (see `stack_examples`).
      batch_size: global rows per batch.
      seed: the shuffles are a function of (seed, epoch) only.
      shuffle: False keeps the given order every epoch.
      process_index, process_count: this host's place (default: JAX's).
    """
    self.features = stack_examples(examples)
    self.num_examples = next(iter(self.features.values())).shape[0]
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.shuffle = shuffle
    self._rows = _host_rows(self.batch_size, process_index, process_count)
    self._consumed = 0
    self._order_cache: tuple[int, np.ndarray] | None = None

  @property
  def epoch(self) -> float:
    """Epochs consumed so far (fractional)."""
    return self._consumed / self.num_examples

  def _order(self, epoch: int) -> np.ndarray:
    if self._order_cache is None or self._order_cache[0] != epoch:
      if self.shuffle:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
      else:
        order = np.arange(self.num_examples)
      self._order_cache = (epoch, order)
    return self._order_cache[1]

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    stream_ids = np.arange(self._consumed, self._consumed + self.batch_size)[self._rows]
    epochs, offsets = np.divmod(stream_ids, self.num_examples)
    indices = np.empty_like(stream_ids)
    for e in np.unique(epochs):
      sel = epochs == e
      indices[sel] = self._order(int(e))[offsets[sel]]
    self._consumed += self.batch_size
    return {k: v[indices] for k, v in self.features.items()}

  def get_state(self) -> dict[str, Any]:
    return {"consumed": self._consumed, "seed": self.seed, "num_examples": self.num_examples,
            "batch_size": self.batch_size}

  def set_state(self, state: Mapping[str, Any]) -> None:
    # A different data set or seed would silently change the curve after a restart.
    for key in ("seed", "num_examples", "batch_size"):
      if state[key] != getattr(self, key):
        raise ValueError(f"cannot resume: saved {key}={state[key]}, "
                         f"this stream has {getattr(self, key)}")
    self._consumed = int(state["consumed"])


def eval_batches(examples: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
                 batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> list[Batch]:
  """Fixed validation batches covering every example once, in order.

  The last batch is filled with copies of the first row at zero loss weight, so all batches have
  one shape (one compilation) and the padding adds nothing to the sums.

  Args:
    examples: rows (see `stack_examples`).
    batch_size: global rows per batch.
    process_index, process_count: this host's place (default: JAX's).

  Returns:
    This host's rows of each global batch.
  """
  features = stack_examples(examples)
  n = next(iter(features.values())).shape[0]
  rows = _host_rows(batch_size, process_index, process_count)
  batches = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    real = idx < n
    idx = np.where(real, idx, 0)
    batch = {k: v[idx] for k, v in features.items()}
    batch["decoder_loss_weights"] = batch["decoder_loss_weights"] * real[:, None]
    batches.append({k: v[rows] for k, v in batch.items()})
  return batches
