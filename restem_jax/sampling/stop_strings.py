"""Stop strings, matched exactly on device by a byte-level automaton.

A stop string (e.g. the few-shot separator) can be split into tokens in many ways, and it can
start in the middle of a token. So the decode loop does not compare token ids: for every stop
string, `StopTable` holds a KMP automaton over UTF-8 bytes, precomputed per token: entry
[s, q, v] is the automaton state after reading token v's bytes from state q. Inside the loop
each row then needs one table lookup per stop string per step, and it stops at exactly the
token whose bytes complete a stop string, however the tokenizer split it.

The host re-checks the decoded text with `cut_at_stop` (authoritative: SentencePiece decoding
drops the leading space of the first piece) and cuts the text before the stop string.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def piece_bytes(vocab) -> list[bytes]:
  """The UTF-8 bytes each token id adds to the decoded text, for a seqio vocabulary.

  A vocabulary with a `piece_bytes()` method of its own (`vocab.HfTokenizerVocabulary`) answers
  itself. For SentencePiece: control ids (pad, EOS) add nothing; byte-fallback pieces add their
  byte; '▁' is a space.
  """
  own = getattr(vocab, "piece_bytes", None)
  if own is not None:
    return list(own())
  sp = vocab.tokenizer
  out = []
  for i in range(sp.get_piece_size()):
    if sp.is_control(i):
      out.append(b"")
    elif sp.is_byte(i):
      out.append(bytes([int(sp.id_to_piece(i)[3:5], 16)]))
    elif sp.is_unknown(i):
      out.append(sp.decode([i]).encode("utf-8"))
    else:
      out.append(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
  # seqio maps ids past the SentencePiece model (extra ids) to UNK when decoding.
  out.extend([sp.decode([sp.unk_id()]).encode("utf-8")] * (vocab.vocab_size - len(out)))
  return out


def _kmp_automaton(pattern: bytes) -> np.ndarray:
  """delta[q, c]: matched-prefix length after reading byte c in state q (q < len(pattern))."""
  m = len(pattern)
  delta = np.zeros((m, 256), np.int32)
  delta[0, pattern[0]] = 1
  fallback = 0
  for q in range(1, m):
    delta[q] = delta[fallback]
    delta[q, pattern[q]] = q + 1
    fallback = delta[fallback, pattern[q]]
  return delta


@dataclasses.dataclass(frozen=True, eq=False)
class StopTable:
  """Per-token transitions of one automaton per stop string.

  next_state_SQV[s, q, v] is the state of stop string s's automaton after reading token v's bytes
  from state q; it equals lengths_S[s] when the string is complete somewhere inside token v.
  """

  strings: tuple[str, ...]
  next_state_SQV: np.ndarray
  lengths_S: np.ndarray

  @classmethod
  def build(cls, strings: Sequence[str], token_bytes: Sequence[bytes]) -> StopTable:
    """Builds the tables for `strings` over a vocabulary given as each token's bytes."""
    strings = tuple(strings)
    V = len(token_bytes)
    encoded = [s.encode("utf-8") for s in strings]
    if any(not e for e in encoded):
      raise ValueError("stop strings must be non-empty")
    max_q = max((len(e) for e in encoded), default=1)
    dtype = np.int16 if max_q < np.iinfo(np.int16).max else np.int32
    table = np.zeros((len(strings), max_q, V), dtype)
    tok_len_V = np.array([len(b) for b in token_bytes], np.int64)
    width = int(tok_len_V.max(initial=0))
    tok_bytes_VW = np.zeros((V, max(width, 1)), np.int64)
    for v, b in enumerate(token_bytes):
      tok_bytes_VW[v, :len(b)] = np.frombuffer(b, np.uint8)
    for s, pattern in enumerate(encoded):
      m = len(pattern)
      delta = _kmp_automaton(pattern)
      state_QV = np.repeat(np.arange(m)[:, None], V, axis=1)
      for j in range(width):  # all (state, token) pairs advance one byte at a time
        active_QV = (tok_len_V > j)[None, :] & (state_QV < m)
        nxt_QV = delta[np.minimum(state_QV, m - 1), tok_bytes_VW[None, :, j]]
        state_QV = np.where(active_QV, nxt_QV, state_QV)
      table[s, :m] = state_QV
    return cls(strings, table, np.array([len(e) for e in encoded], np.int32))

  @classmethod
  def empty(cls, vocab_size: int) -> StopTable:
    return cls((), np.zeros((0, 1, vocab_size), np.int16), np.zeros((0,), np.int32))


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
  """`text` up to the first occurrence of any stop string, and whether one occurred."""
  hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
  return (text[:min(hits)], True) if hits else (text, False)
