"""SentencePiece vocabularies with seqio's special ids (pad 0, eos 1, unk 2, no bos)."""

from __future__ import annotations

import io
from collections.abc import Iterable

import seqio
import sentencepiece as spm
from etils import epath

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


def load_vocab(path: epath.PathLike) -> seqio.SentencePieceVocabulary:
  """A seqio vocabulary from a SentencePiece model file (local or gs://)."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"SentencePiece model not found: {path}")
  return seqio.SentencePieceVocabulary(str(path))
