"""Vocabularies: SentencePiece models and Hugging Face `tokenizer.json` files, as seqio ones.

Vocabularies trained here are SentencePiece models with seqio's special ids (pad 0, eos 1, unk 2,
no bos). Imported open models bring their own: a SentencePiece `tokenizer.model` (Llama 2,
Mistral, Gemma), used as it is, or a `tokenizer.json` (Llama 3, Qwen2), wrapped by
`HfTokenizerVocabulary`. `load_vocab` tells them apart by their contents, not their names.

Token id 0 is padding only in vocabularies trained here (and seqio's); in Llama 3's and Qwen2's
it is "!", which MATH solutions use for factorials. So nothing downstream tells padding by its
value: rows and prompts carry their lengths and masks (`batches.decoder_rows`, the sampler's
prompt lengths). Two properties of a vocabulary shape the token sequences the model sees:
`prompt_prefix` (the BOS token that Gemma, Llama and Mistral expect before every prompt) and
`decoder_start_id` (the id that training rows read before their first token, or none).
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

from restem_jax.data import hf_tokenizer
from restem_jax import file_io

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
  file_io.write_bytes_atomic(out_path, model.getvalue())
  return out_path


def load_vocab(path: epath.PathLike) -> seqio.Vocabulary:
  """A seqio vocabulary from a SentencePiece model or a tokenizer.json (local or gs://)."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"vocabulary not found: {path}")
  if hf_tokenizer.is_tokenizer_json(path):
    return HfTokenizerVocabulary(path)
  return seqio.SentencePieceVocabulary(str(path))


def prompt_prefix(vocab: seqio.Vocabulary) -> tuple[int, ...]:
  """The ids every prompt starts with, as the vocabulary's own tokenizer would put them.

  A tokenizer.json: what its post-processor (or its tokenizer_config.json's `add_bos_token`)
  puts first (`hf_tokenizer.prompt_prefix`). A SentencePiece model: its BOS piece when it has
  one (Llama 2, Mistral, Gemma; transformers adds it by default) unless a tokenizer_config.json
  beside it sets `add_bos_token` false; the vocabularies trained here have none. Training rows
  and sampling prompts both start with these ids (`tasks.trim_inputs_left` adds them).
  """
  if isinstance(vocab, HfTokenizerVocabulary):
    return vocab.prompt_prefix
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    bos = vocab.tokenizer.bos_id()
    add_bos = hf_tokenizer.add_bos_setting(vocab.sentencepiece_model_file)
    return (bos,) if bos >= 0 and add_bos is not False else ()
  return ()


def decoder_start_id(vocab: seqio.Vocabulary) -> int | None:
  """The id training rows read before each sequence's first token, or None for none.

  seqio's layout shifts each row right with 0 first, which only works where id 0 is padding:
  the SentencePiece models trained here (pad 0, no BOS) keep it, and so their models and
  results stay as they were. Everywhere else (a prompt prefix, or id 0 a real token) the first
  token of a sequence (BOS, or the prompt's first token) is read but never predicted, so that
  training sees exactly the tokens the sampler's prefill sees.
  """
  if prompt_prefix(vocab) or isinstance(vocab, HfTokenizerVocabulary):
    return None
  if isinstance(vocab, seqio.SentencePieceVocabulary):
    return PAD_ID if vocab.tokenizer.pad_id() == PAD_ID else None
  return PAD_ID  # seqio's other vocabularies reserve id 0 for padding


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizer.json` tokenizer as a seqio vocabulary.

  Encoding adds no special tokens (as seqio's SentencePiece vocabulary): `prompt_prefix` holds
  what the tokenizer would put before a text (its BOS). Decoding skips special tokens.
  The EOS, BOS and UNK tokens come from a tokenizer_config.json beside the file when there is
  one, else from the usual names (`hf_tokenizer.special_ids`). `pad_id` is seqio's 0, which
  here may be a real token ("!" in Llama 3 and Qwen2): padding is told by lengths, never by it.
  """

  def __init__(self, path: epath.PathLike, eos_token: str | None = None):
    """Loads `path`; `eos_token` overrides the EOS token's name."""
    self._path = epath.Path(path)
    self._json = self._path.read_text()
    self._tokenizer = tokenizers.Tokenizer.from_str(self._json)
    self._special = hf_tokenizer.special_ids(self._path, self._tokenizer, eos_token)
    self._prompt_prefix = hf_tokenizer.prompt_prefix(self._path, self._tokenizer, self._special)
    super().__init__(extra_ids=0)

  @property
  def path(self) -> epath.Path:
    return self._path

  @property
  def eos_id(self) -> int:
    return self._special.eos

  @property
  def prompt_prefix(self) -> tuple[int, ...]:
    """The ids the tokenizer puts before a text (its BOS token, or none)."""
    return self._prompt_prefix

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
            and self._special == other._special and self._prompt_prefix == other._prompt_prefix)

  def __hash__(self) -> int:
    return hash(hashlib.sha256(self._json.encode("utf-8")).hexdigest())

  def __str__(self) -> str:
    return (f"HfTokenizerVocabulary(file={self._path}, size={self.vocab_size}, "
            f"eos_id={self.eos_id}, bos_id={self.bos_id}, unk_id={self.unk_id}, "
            f"prompt_prefix={list(self.prompt_prefix)})")
