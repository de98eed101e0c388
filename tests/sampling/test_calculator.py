"""The decode loop's calculator (restem_jax/sampling/calculator.py): exact values after `A op B =`,
nothing else touched; the same in the static sampler and the rollout engine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import re

import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn
import jax

from restem_jax import model, sampling
from restem_jax.sampling import calculator
from tests.sampling.test_sampling import mesh_of


class CharVocab:
  """One piece per character (and a few multi-character ones, as SentencePiece has)."""

  def __init__(self, extra=(" =", " +", "▁")):
    chars = [chr(c) for c in range(32, 127)] + ["×", "÷", "\n"]
    self.pieces = ["<pad>", "</s>"] + chars + [p for p in extra if p not in chars]
    self.index = {p: i for i, p in enumerate(self.pieces)}

  def piece_bytes(self):
    return [b"" if i < 2 else p.replace("▁", " ").encode() for i, p in enumerate(self.pieces)]

  def encode(self, text):
    return [self.index[c] for c in text]

  def decode(self, ids):
    return "".join(self.pieces[i] if i >= 2 else "?" for i in ids)  # ? : pad / EOS (control)


def write(vocab, proposals, fallback="."):
  """What a model that proposes `proposals` (one character a step, greedy) writes with the
  calculator: each step's logits favour the proposal, then `fallback`."""
  table = jnp.asarray(calculator.table(vocab, len(vocab.pieces)))
  state = jnp.zeros((1, calculator.COLUMNS), jnp.int32)
  out = []
  for ch in proposals:
    logits = np.full((1, len(vocab.pieces)), -10.0, np.float32)
    logits[0, vocab.index[fallback]] = 5.0
    logits[0, vocab.index[ch]] = 10.0
    logits = calculator.mask_logits(table, state, jnp.asarray(logits))
    token = calculator.override(table, state, jnp.argmax(logits, axis=-1))
    state = calculator.advance(table, state, token)
    out.append(int(token[0]))
  return vocab.decode(out)


@pytest.mark.parametrize("proposed, written", [
    ("6 * 8 = 12. 47 + 48 = 90. The final answer is 95.",
     "6 * 8 = 48. 47 + 48 = 95. The final answer is 95."),
    ("12 / 4 = 5 and 7 / 7 = 3 and 90 - 25 = 11", "12 / 4 = 3 and 7 / 7 = 1 and 90 - 25 = 65"),
    ("6 × 7 = 13, 8 ÷ 2 = 9", "6 × 7 = 42, 8 ÷ 2 = 4"),
    ("6 x 7 = 13, 3x4=19", "6 x 7 = 42, 3x4=12"),
    ("6*8=11", "6*8=48"),                       # no spaces
    ("<<6*8=11>>11", "<<6*8=48>>11"),          # GSM8K's annotations
    ("6 * 8 = 11 + 2 = 99.", "6 * 8 = 48 + 2 = 50."),  # a chain goes on from the exact value
    ("3 + 4 = 12.", "3 + 4 = 7.."),            # no digit after the value: the fallback
    ("50 + 50 = 9. Next", "50 + 50 = 100Next"),  # the value's digits replace what follows
    ("3 + 4 =  x", "3 + 4 =  x"),              # no number written: nothing forced
])
def test_values_after_equals_are_exact(proposed, written):
  assert write(CharVocab(), proposed) == written


@pytest.mark.parametrize("text", [
    "2 + 3 * 4 = 11",     # a longer expression: precedence is the model's business
    "x - 5 + 3 = 2",      # part of an expression with a variable
    "-5 + 3 = 4",         # a negative operand
    "2.5 + 1 = 9",        # decimals
    "1,000 + 5 = 7",      # a thousands separator
    "7 - 9 = 1",          # a negative value
    "7 / 2 = 1",          # an inexact quotient
    "9999999 + 1 = 5",    # an operand past MAX_OPERAND
    "5 + 3\n= 1",         # a newline between
    "a = 5",              # no operator
    "99999 * 99999 = 1",  # past 31 bits
])
def test_everything_else_is_left_alone(text):
  assert write(CharVocab(), text) == text


def test_multi_character_pieces_of_spaces_and_operators():
  vocab = CharVocab()
  ids = vocab.encode("6") + [vocab.index[" +"]] + vocab.encode(" 8") + [vocab.index[" ="]]
  ids += vocab.encode(" 1.")
  proposals = [vocab.pieces[i] for i in ids]
  assert write(vocab, proposals) == "6 + 8 = 14"  # the '.' became the value's second digit


def test_table_refuses_a_vocabulary_with_multi_digit_pieces():
  with pytest.raises(ValueError, match="writes each digit as a piece of its own.*'12'"):
    calculator.table(CharVocab(extra=("12",)), 200)


SMALL = CharVocab(extra=())
SMALL.pieces = ["<pad>", "</s>"] + list("0123456789 +*=y")
SMALL.index = {p: i for i, p in enumerate(SMALL.pieces)}
# An equation the parser computes (a subset of them): all that stands between the start, a y or
# an "=" and the next "=" is `A op B` (operands of at most 6 digits, spaces around them), then
# the digits written after the "=".
EQUATION = re.compile(r"(?:^|(?<=[y=])) *(\d{1,6}) *([+*]) *(\d{1,6}) *= *(\d+)")


def wrong_values(texts):
  """(text, written, exact) of every computed equation whose written value is not exact (a
  value cut by the end of the text only has to be a prefix)."""
  out = []
  for text in texts:
    for m in EQUATION.finditer(text):
      a, op, b, written = m.groups()
      value = int(a) + int(b) if op == "+" else int(a) * int(b)
      if value > 2**31 - 1:
        continue
      cut = m.end() == len(text)
      if written != str(value) and not (cut and str(value).startswith(written)):
        out.append((text, written, value))
  return out


@pytest.fixture(scope="module")
def small_model():
  cfg = model.preset("tiny", num_layers=1, d_model=32, num_heads=2, num_kv_heads=1,
                     head_dim=16, d_ff=64, vocab_size=len(SMALL.pieces), max_len=128, embed_init_std=0.3)
  params = nn.unbox(model.Decoder(cfg).init(jax.random.key(3), jnp.zeros((1, 1), jnp.int32))
                    ["params"])
  return cfg, params


def sample_small(small_model, batching, on):
  cfg, params = small_model
  sampler = sampling.Sampler(params, cfg, mesh=mesh_of((1, 1, 1)), vocab=SMALL, eos_id=None,
                             batching=batching, calculator_on=on)
  prompts = [SMALL.encode(t) for t in ("12+7=19 ", "3*4=12 y", "5 + 6 = 11 ", "y")]
  return sampler.generate(["a", "b", "c", "d"], prompts, num_samples=64,
                          strategy=sampling.Temperature(1.5), max_new_tokens=100, batch_size=128)


def test_sampler_writes_exact_values(small_model):
  """A random model over digits, spaces, + * = and y writes many equations: with the calculator
  every computed one is exact, without it most are not."""
  texts = lambda got: [s.text for per in got for s in per]
  with_calc = texts(sample_small(small_model, "static", True))
  without = texts(sample_small(small_model, "static", False))
  computed = sum(len(EQUATION.findall(t)) for t in with_calc)
  assert computed >= 30, computed
  assert wrong_values(with_calc) == []
  assert len(wrong_values(without)) >= 15


def test_engine_and_static_sampler_agree_with_the_calculator(small_model):
  static = sample_small(small_model, "static", True)
  engine = sample_small(small_model, "continuous", True)
  for a, b in zip(static, engine):
    assert [s.tokens for s in a] == [s.tokens for s in b]
    np.testing.assert_allclose([s.logprob for s in a], [s.logprob for s in b], rtol=1e-5,
                               atol=1e-5)
