"""Vocabularies: SentencePiece models and Hugging Face `tokenizer.json` files, as seqio ones.

Vocabularies trained here are SentencePiece models with seqio's special ids (pad 0, eos 1, unk 2,
no bos). Imported open models bring their own: a SentencePiece `tokenizer.model` (Llama 2,
Mistral, Gemma), used as it is, or a `tokenizer.json` (Llama 3, Qwen2), wrapped by
`HfTokenizerVocabulary`. `load_vocab` tells them apart by their contents, not their names.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable

import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf
import tokenizers
from etils import epath

from restem_jax import hf_tokenizer

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


def train_sentencepiece(texts: Iterable[str], out_path: epath.PathLike, vocab_size: int,
                        model_type: str = "bpe", seed_sentencepiece_size: int = 100_000,
                        user_defined_symbols: Iterable[str] = ()) -> epath.Path:
  """Trains a small SentencePiece model for a from-scratch model and writes it to `out_path`.

  Digits are split into single pieces, so arithmetic is tokenised digit by digit, and newlines
  are kept as pieces (few-shot prompts and code rely on them).

  Args:
    texts: training sentences (e.g. a task's questions and solutions).
    out_path: the `.model` file to write.
    vocab_size: number of pieces, including the 3 special ids and the 256 byte-fallback
      pieces (so that no text is ever unknown): at least ~300. A soft limit: a small corpus
      may give fewer pieces; the model's vocab_size only has to be at least the result's.
    model_type: "bpe" or "unigram".
    seed_sentencepiece_size: SentencePiece's seed vocabulary size.
    user_defined_symbols: pieces that must exist whole.

  Returns:
    The written path.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      character_coverage=1.0, split_digits=True, byte_fallback=True,
      remove_extra_whitespaces=False, normalization_rule_name="identity",
      user_defined_symbols=["\n", *user_defined_symbols],
      seed_sentencepiece_size=seed_sentencepiece_size, num_threads=1,
      hard_vocab_limit=False, minloglevel=2)
  out_path = epath.Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  out_path.write_bytes(model.getvalue())
  return out_path


def load_vocab(path: epath.PathLike) -> seqio.Vocabulary:
  """A seqio vocabulary from a SentencePiece model or a tokenizer.json (local or gs://)."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"vocabulary not found: {path}")
  if hf_tokenizer.is_tokenizer_json(path):
    return HfTokenizerVocabulary(path)
  return seqio.SentencePieceVocabulary(str(path))


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizer.json` tokenizer as a seqio vocabulary.

  Encoding adds no special tokens (as seqio's SentencePiece vocabulary); decoding skips them.
  The EOS, BOS and UNK tokens come from a tokenizer_config.json beside the file when there is
  one, else from the usual names (`hf_tokenizer.special_ids`). seqio pads with id 0 whatever
  token that is (for Llama 3 and Qwen2 it is "!"), as for any vocabulary.
  """

  def __init__(self, path: epath.PathLike, eos_token: str | None = None):
    """Loads `path`; `eos_token` overrides the EOS token's name."""
    self._path = epath.Path(path)
    self._json = self._path.read_text()
    self._tokenizer = tokenizers.Tokenizer.from_str(self._json)
    self._special = hf_tokenizer.special_ids(self._path, self._tokenizer, eos_token)
    super().__init__(extra_ids=0)

  @property
  def path(self) -> epath.Path:
    return self._path

  @property
  def eos_id(self) -> int:
    return self._special.eos

  @property
  def bos_id(self) -> int | None:
    return self._special.bos

  @property
  def unk_id(self) -> int | None:
    return self._special.unk

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> list[int]:
    return self._tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids: Iterable[int]) -> str:
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
    """Scalar string -> [L] int32; [N] strings -> a ragged [N, None] int32."""
    if s.shape.rank == 0:
      ids = tf.py_function(lambda x: np.asarray(self._encode(x.numpy().decode("utf-8")),
                                                np.int32), [s], tf.int32)
      ids.set_shape([None])
      return ids
    if s.shape.rank != 1:
      raise ValueError(f"encode_tf takes a scalar or a vector of strings, got shape {s.shape}")

    def encode_rows(x):
      rows = [self._encode(t.decode("utf-8")) for t in x.numpy()]
      return (np.asarray([i for row in rows for i in row], np.int32),
              np.asarray([len(row) for row in rows], np.int64))
    values, lengths = tf.py_function(encode_rows, [s], (tf.int32, tf.int64))
    values.set_shape([None])
    lengths.set_shape([None])
    return tf.RaggedTensor.from_row_lengths(values, lengths)

  def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """[L] ids -> a scalar string, [N, L] -> [N] strings; each up to its first EOS.

    Unlike seqio's default, nothing after EOS is replaced by id 0 (a real token here)."""
    return self._decode_tf(ids)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode_rows(x):
      x = x.numpy()
      if x.ndim == 1:
        return self.decode(x.tolist()).encode("utf-8")
      return np.asarray([self.decode(row.tolist()).encode("utf-8") for row in x], object)
    out = tf.py_function(decode_rows, [ids], tf.string)
    out.set_shape(ids.shape[:-1])
    return out

  def piece_bytes(self) -> list[bytes]:
    """Each id's bytes in the decoded text, for the stop-string automaton (`stop_strings`)."""
    return hf_tokenizer.piece_bytes(self._tokenizer)

  def __eq__(self, other) -> bool:
    return (isinstance(other, HfTokenizerVocabulary) and self._json == other._json
            and self._special == other._special)

  def __hash__(self) -> int:
    return hash(hashlib.sha256(self._json.encode("utf-8")).hexdigest())

  def __str__(self) -> str:
    return (f"HfTokenizerVocabulary(file={self._path}, size={self.vocab_size}, "
            f"eos_id={self.eos_id}, bos_id={self.bos_id}, unk_id={self.unk_id})")
