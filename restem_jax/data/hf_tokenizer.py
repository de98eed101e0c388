"""Hugging Face `tokenizer.json` files: telling them apart, their special tokens, token bytes.

Kept free of TensorFlow and seqio, so that `convert.py` and `checkpoints.py` can use it without
starting them; `vocab.HfTokenizerVocabulary` wraps it as a seqio vocabulary.

A tokenizer.json does not say which token ends a sequence: Hugging Face keeps the special
tokens' roles in the tokenizer_config.json beside it. Without one, the usual names of the
families that `convert.py` imports decide.

Whether a prompt starts with BOS is the tokenizer's own post-processor's answer (Llama 3's and
Gemma's tokenizer.json put <|begin_of_text|> / <bos> first; Qwen2's puts nothing), unless the
tokenizer_config.json sets `add_bos_token` (as transformers' Llama and Gemma tokenizers honour).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Sequence

import tokenizers
from etils import epath

CONFIG_FILE = "tokenizer_config.json"
_KNOWN_EOS = ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>")
_KNOWN_BOS = ("<s>", "<bos>", "<|begin_of_text|>")
_KNOWN_UNK = ("<unk>",)
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def is_tokenizer_json(path: epath.PathLike) -> bool:
  """Whether `path` holds a tokenizer.json (JSON) rather than a SentencePiece model (a binary
  protocol buffer, which never starts with a brace)."""
  with epath.Path(path).open("rb") as f:
    return f.read(64).lstrip().startswith(b"{")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  eos: int
  bos: int | None
  unk: int | None


def tokenizer_config(path: epath.PathLike) -> dict:
  """The tokenizer_config.json beside the vocabulary file `path` ({} when there is none)."""
  config_path = epath.Path(path).parent / CONFIG_FILE
  return json.loads(config_path.read_text()) if config_path.exists() else {}


def add_bos_setting(path: epath.PathLike) -> bool | None:
  """The `add_bos_token` of the tokenizer_config.json beside `path`, or None if not set."""
  value = tokenizer_config(path).get("add_bos_token")
  return value if isinstance(value, bool) else None


def _content(value) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


def _find(tokenizer: tokenizers.Tokenizer, path, name: str | None,
          known: Sequence[str]) -> int | None:
  for candidate in ([name] if name else known):
    token_id = tokenizer.token_to_id(candidate)
    if token_id is not None:
      return token_id
  if name:
    raise ValueError(f"{path} has no token {name!r}")
  return None


def special_ids(path: epath.PathLike, tokenizer: tokenizers.Tokenizer,
                eos_token: str | None = None) -> SpecialIds:
  """The EOS, BOS and UNK ids of the tokenizer.json at `path` (loaded as `tokenizer`).

  Args:
    path: the file; a tokenizer_config.json beside it names the special tokens.
    tokenizer: its contents.
    eos_token: overrides the EOS token's name.

  Raises:
    ValueError: no EOS token can be found, or a named token does not exist.
  """
  path = epath.Path(path)
  config = tokenizer_config(path)
  eos = _find(tokenizer, path, eos_token or _content(config.get("eos_token")), _KNOWN_EOS)
  if eos is None:
    raise ValueError(f"cannot tell which token of {path} ends a sequence: put a {CONFIG_FILE} "
                     "with an 'eos_token' beside it")
  model = json.loads(tokenizer.to_str()).get("model", {})
  return SpecialIds(
      eos=eos, bos=_find(tokenizer, path, _content(config.get("bos_token")), _KNOWN_BOS),
      unk=_find(tokenizer, path, _content(config.get("unk_token")) or model.get("unk_token"),
                _KNOWN_UNK))


def prompt_prefix(path: epath.PathLike, tokenizer: tokenizers.Tokenizer,
                  special: SpecialIds) -> tuple[int, ...]:
  """The ids the tokenizer puts before a text (its BOS token, for most families), or ().

  Args:
    path: the tokenizer.json file; a tokenizer_config.json beside it with a boolean
      `add_bos_token` decides (BOS or nothing).
    tokenizer: its contents; without that setting, its post-processor decides: whatever it
      adds before the tokens of a probe text (with `add_special_tokens=True`).
    special: its special ids (`special_ids`).
  """
  add_bos = add_bos_setting(path)
  if add_bos is not None:
    return (special.bos,) if add_bos and special.bos is not None else ()
  probe = "a"
  plain = tokenizer.encode(probe, add_special_tokens=False).ids
  full = tokenizer.encode(probe, add_special_tokens=True).ids
  for start in range(len(full) - len(plain) + 1):
    if plain and full[start:start + len(plain)] == plain:
      return tuple(full[:start])
  return ()


@functools.cache
def _byte_level_chars() -> dict[str, int]:
  """Byte-level BPE's alphabet (GPT-2, Llama 3, Qwen2): char -> the byte it stands for.

  Printable Latin-1 bytes stand for themselves; the others (controls, space, ...) are shifted to
  the code points from 256 on, in byte order, so every byte is one visible character.
  """
  printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
  chars, shifted = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + shifted)] = b
      shifted += 1
  return chars


def piece_bytes(tokenizer: tokenizers.Tokenizer) -> list[bytes]:
  """The UTF-8 bytes each id adds to the decoded text; special tokens add none.

  Byte-level tokenizers spell bytes as characters of their alphabet; SentencePiece-style ones
  (Metaspace) write a space as '▁' and unknown bytes as byte-fallback pieces `<0xNN>`.
  """
  special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
  byte_level = "ByteLevel" in json.dumps(json.loads(tokenizer.to_str()).get("decoder"))
  chars = _byte_level_chars()
  out = []
  for i in range(tokenizer.get_vocab_size(with_added_tokens=True)):
    token = tokenizer.id_to_token(i)
    if token is None or token in special:
      out.append(b"")
    elif byte_level and all(c in chars for c in token):
      out.append(bytes(chars[c] for c in token))
    elif match := _BYTE_PIECE.fullmatch(token):
      out.append(bytes([int(match.group(1), 16)]))
    else:
      out.append(token.replace("\u2581", " ").encode("utf-8"))
  return out
