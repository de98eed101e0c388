"""Training batches with a resumable position, and fixed validation batches.

The trainer reads batches through a three-method protocol (`TrainData`): `next(data)` gives this
host's rows of the next global batch, `get_state()` a JSON-serialisable position that is saved
with every checkpoint, `set_state()` puts the stream back there. `ShuffledExamples` implements it
over a materialised set of examples (ReST^EM's filtered samples fit in host memory): the stream is
the concatenation of per-epoch permutations, each a pure function of (seed, epoch), so the
position is one integer (examples consumed) and a restart continues the exact same sequence.

Examples use seqio's decoder feature names (`decoder_rows` builds them):
  decoder_input_tokens   [L] int   what the model reads: each token of the row but the last
  decoder_target_tokens  [L] int   what it predicts: the next token (prompt + solution)
  decoder_loss_weights   [L] float 0 on prompt and padding, the sample's reward on the solution
  decoder_segment_ids, decoder_positions  [L] int  (optional, for packed rows; 0 on padding)
Which positions are padding, prompt or solution is carried by these masks, built from the
examples' lengths: token values never say it (id 0 is "!" in Llama 3's vocabulary).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def decoder_rows(examples: Iterable[tuple[Sequence[int], Sequence[int]]], length: int, *,
                 pack: bool = False, start_id: int | None = 0) -> Batch:
  """Prompt + solution examples as decoder rows, every mask from the examples' lengths.

  Each example's sequence is [start_id] (unless None) + inputs + targets. The model reads every
  token of it but the last and predicts the next one; the loss falls on the targets:

    decoder_input_tokens[j] = seq[j], decoder_target_tokens[j] = seq[j + 1],
    decoder_loss_weights[j] = 1 where seq[j + 1] is a target token, else 0.

  With start_id=0 this is seqio's `PrefixLMFeatureConverter(loss_on_targets_only=True)` layout
  (the row shifted right, 0 first), and the rows equal seqio's whenever id 0 never occurs in a
  sequence (seqio then takes every 0 for padding: it drops the loss on it and cuts packed
  examples short). With start_id=None the first token (BOS, or the prompt's first token) is read
  but never predicted, as the sampler's prefill reads it. Padding is id 0 with weight 0 (and
  segment id 0 when packed), whatever token 0 is.

  Args:
    examples: (inputs, targets) token id sequences; targets normally end in EOS.
    length: tokens per row (a longer sequence loses its end).
    pack: put consecutive examples into a row while they fit, as seqio packs: in order, within
      windows of `length` examples; adds decoder_segment_ids (1, 2, ...) and decoder_positions
      (0, 1, ... within each example).
    start_id: the id read before each sequence's first token, or None
      (`vocab.decoder_start_id`).

  Returns:
    {feature: [N, length]}: int32 tokens (and segment ids, positions), float32 weights.
  """
  seqs = []
  for inputs, targets in examples:
    head = ([] if start_id is None else [start_id]) + [int(t) for t in inputs]
    seq = np.asarray(head + [int(t) for t in targets], np.int32)
    if len(seq) > 1:  # a lone token has nothing to predict
      seqs.append((seq, len(head)))
  rows: list[list[tuple[np.ndarray, int]]] = []
  for window in range(0, len(seqs), length if pack else 1):
    used = length + 1  # no open row
    for seq, n_head in seqs[window:window + length] if pack else seqs[window:window + 1]:
      n = min(len(seq) - 1, length)
      if used + n > length:
        rows.append([])
        used = 0
      rows[-1].append((seq, n_head))
      used += n
  shape = (len(rows), length)
  out = {"decoder_input_tokens": np.zeros(shape, np.int32),
         "decoder_target_tokens": np.zeros(shape, np.int32),
         "decoder_loss_weights": np.zeros(shape, np.float32)}
  if pack:
    out["decoder_segment_ids"] = np.zeros(shape, np.int32)
    out["decoder_positions"] = np.zeros(shape, np.int32)
  for r, row in enumerate(rows):
    at = 0
    for segment, (seq, n_head) in enumerate(row, 1):
      n = min(len(seq) - 1, length)
      # Unpacked, the first padding slot reads the last token, as seqio's shifted row does
      # (padding is masked out either way).
      n_in = n if pack else min(len(seq), length)
      out["decoder_input_tokens"][r, at:at + n_in] = seq[:n_in]
      out["decoder_target_tokens"][r, at:at + n] = seq[1:n + 1]
      out["decoder_loss_weights"][r, at + max(n_head - 1, 0):at + n] = 1
      if pack:
        out["decoder_segment_ids"][r, at:at + n] = segment
        out["decoder_positions"][r, at:at + n] = np.arange(n)
      at += n
  return out


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
