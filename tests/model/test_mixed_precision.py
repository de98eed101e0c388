"""`ModelConfig.matmul_dtype`: bfloat16 products with float32 accumulation, forward and backward.

Checked against products written out by hand on bfloat16-rounded operands (not against the
function's own path), and in the compiled train step: every dot of it has bfloat16 operands and a
float32 result (what XLA:CPU runs on the CPU's bfloat16 units), but those of the parts
`float32_products` names, which are float32 products, counted part by part.
"""

import collections
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax import model as model_lib
from restem_jax.model import decode_step
from restem_jax.model import partitioning
from restem_jax.model import transformer
from restem_jax.training import steps as train_steps
from restem_jax.training import trainer

CFG = model_lib.preset("tiny", num_layers=2, d_model=64, num_heads=4, num_kv_heads=1,
                       head_dim=16, d_ff=128, vocab_size=96, max_len=32)
SPECS = ["...D,DF->...F", "...D,DNH->...NH", "BLKGH,BMKH->BKGLM", "BKGLM,BMKH->BLKGH",
         "...NH,NHD->...D", "...D,VD->...V",
         # `...` broadcasting a size-1 axis of either operand: its gradient is summed back.
         "...LD,...DF->...LF", "...ij,...jk->...ik"]
SHAPES = {"...D,DF->...F": ((2, 3, 8), (8, 5)), "...D,DNH->...NH": ((2, 3, 8), (8, 2, 4)),
          "BLKGH,BMKH->BKGLM": ((2, 3, 1, 2, 4), (2, 3, 1, 4)),
          "BKGLM,BMKH->BLKGH": ((2, 1, 2, 3, 3), (2, 3, 1, 4)),
          "...NH,NHD->...D": ((2, 3, 2, 4), (2, 4, 8)), "...D,VD->...V": ((2, 3, 8), (6, 8)),
          "...LD,...DF->...LF": ((2, 3, 4), (1, 4, 5)),
          "...ij,...jk->...ik": ((1, 3, 4), (2, 2, 4, 5))}


def _rounded(x):
  return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


@pytest.mark.parametrize("spec", SPECS)
def test_product_and_its_gradients_are_bfloat16_products(spec):
  a_shape, b_shape = SHAPES[spec]
  ka, kb, kg = jax.random.split(jax.random.key(0), 3)
  a = jax.random.normal(ka, a_shape, jnp.float32)
  b = jax.random.normal(kb, b_shape, jnp.float32)
  out, vjp = jax.vjp(lambda x, y: transformer.product(spec, x, y, "bfloat16"), a, b)
  g = jax.random.normal(kg, out.shape, jnp.float32)
  da, db = vjp(g)
  assert out.dtype == da.dtype == db.dtype == jnp.float32
  # By hand, in float64 on the bfloat16-rounded operands (and cotangent).
  ra, rb, rg = _rounded(a), _rounded(b), _rounded(g)
  want_da = jax.grad(lambda x: jnp.vdot(rg, jnp.einsum(spec, x, rb)))(ra)
  want_db = jax.grad(lambda y: jnp.vdot(rg, jnp.einsum(spec, ra, y)))(rb)
  np.testing.assert_allclose(out, np.einsum(spec, ra, rb), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(da, want_da, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(db, want_db, rtol=1e-5, atol=1e-5)
  # Not the float32 product: the rounding of the operands shows.
  assert np.max(np.abs(np.asarray(out) - np.einsum(spec, np.asarray(a, np.float64),
                                                  np.asarray(b, np.float64)))) > 1e-4


def test_default_is_the_plain_einsum():
  a = jax.random.normal(jax.random.key(1), (3, 8))
  b = jax.random.normal(jax.random.key(2), (8, 4))
  for dtype in ("", "float32"):
    np.testing.assert_array_equal(transformer.product("...D,DF->...F", a, b, dtype),
                                  jnp.einsum("...D,DF->...F", a, b))


def test_spelled_out_right_aligns_the_ellipsis():
  assert transformer._spelled_out("...D,DF->...F", 3, 2) == ("abD", "DF", "abF")  # pylint: disable=protected-access
  assert transformer._spelled_out("...KGH,...SKH->...KGS", 4, 5) == (  # pylint: disable=protected-access
      "bKGH", "abSKH", "abKGS")


def test_model_in_mixed_precision_is_close_to_float32():
  tokens = jax.random.randint(jax.random.key(3), (2, 12), 0, CFG.vocab_size)
  params = nn.unbox(model_lib.Decoder(CFG).init(jax.random.key(0), tokens))["params"]
  mixed = CFG.replace(matmul_dtype="bfloat16")

  def loss(cfg, p):
    logits, _ = model_lib.Decoder(cfg).apply({"params": p}, tokens)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

  (l32, g32), (l16, g16) = (jax.value_and_grad(loss, 1)(c, params) for c in (CFG, mixed))
  assert abs(float(l16) - float(l32)) < 1e-2 * abs(float(l32))
  for x, y in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)):
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(x, y, rtol=0.1, atol=0.05 * float(jnp.max(jnp.abs(y))))
  assert float(l16) != float(l32)  # it did compute in bfloat16


def test_bad_matmul_dtype_is_an_error():
  with pytest.raises(ValueError, match="unknown matmul_dtype 'float16'"):
    CFG.replace(matmul_dtype="float16")


def _dot_types(hlo: str) -> collections.Counter:
  """(lhs, rhs, result) element types of every dot in an optimised HLO module's text."""
  counts = collections.Counter()
  for computation in hlo.split("\n\n"):
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", computation))
    for m in re.finditer(r"= (\w+)\[[^\n]*? dot\(%([\w.\-]+), %([\w.\-]+)\)", computation):
      counts[(types[m.group(2)], types[m.group(3)], m.group(1))] += 1
  return counts


# The dots of CFG's train step (2 layers) each part of the model owns, forward and backward.
DOTS = {"logits": 3, "attention": 2 * 6, "projections": 2 * 12, "mlp": 2 * 9}


@pytest.mark.parametrize("matmul_dtype, float32_products", [
    ("", "logits"), ("bfloat16", ""), ("bfloat16", "logits"), ("bfloat16", "attention, mlp")])
def test_every_dot_of_the_cpu_train_step_has_the_operands_asked_for(matmul_dtype,
                                                                    float32_products):
  cfg = CFG.replace(matmul_dtype=matmul_dtype, float32_products=float32_products)
  config = trainer.default_config()
  config.update(optimizer="adamw", batch_size=2, num_microbatches=1)
  mesh = partitioning.make_mesh((1, 1, 1), jax.devices()[:1])
  fns = train_steps.make_train_fns(cfg, config, mesh)
  params = nn.unbox(jax.jit(lambda k: model_lib.Decoder(cfg).init(
      k, jnp.zeros((1, 1), jnp.int32)))(jax.random.key(0)))["params"]
  state = fns.init_state(params)
  tokens = np.ones((2, 8), np.int32)
  batch = fns.put_batch({"decoder_input_tokens": tokens, "decoder_target_tokens": tokens,
                         "decoder_loss_weights": np.ones((2, 8), np.float32)})
  types = _dot_types(fns.train_step_hlo(state, batch, jax.random.key(1)))
  # 2 layers x (7 products forward, 14 backward) + the logits' 3 (the embedding lookup's
  # gradient is a scatter, not a dot).
  wide = (sum(DOTS.values()) if not matmul_dtype else
          sum(DOTS[p.strip()] for p in float32_products.split(",") if p.strip()))
  want = {("f32", "f32", "f32"): wide, ("bf16", "bf16", "f32"): sum(DOTS.values()) - wide}
  assert types == {k: v for k, v in want.items() if v}, types


def _forward_and_decode(cfg, params, tokens):
  """The Decoder's logits of `tokens` and the decode step's for one token after them."""
  logits, _ = model_lib.Decoder(cfg).apply({"params": params}, tokens)
  layers = decode_step.split_layers(cfg, params)
  lengths = jnp.full((tokens.shape[0],), tokens.shape[1], jnp.int32)
  prompt_kv = model_lib.prompt_kv(cfg, params, tokens, last_layer=layers[-1])
  cache = decode_step.init_cache(cfg, prompt_kv, lengths, 1, 1, share_prompt=False)
  step, _ = decode_step.decode_step(cfg, params, layers, tokens[:, -1], lengths, jnp.int32(0),
                                    cache)
  return logits, step


def test_float32_products_covers_every_product_and_each_part_counts():
  tokens = jax.random.randint(jax.random.key(3), (2, 12), 0, CFG.vocab_size)
  params = nn.unbox(model_lib.Decoder(CFG).init(jax.random.key(0), tokens))["params"]
  def run(cfg, params, tokens):
    return [np.asarray(x) for x in jax.jit(_forward_and_decode, static_argnums=0)(
        cfg, params, tokens)]
  full = run(CFG.replace(float32_products=""), params, tokens)
  # Every part named: each product of the forward pass and of the decode step is float32's.
  every = run(CFG.replace(matmul_dtype="bfloat16", float32_products=",".join(DOTS)), params,
              tokens)
  for got, want in zip(every, full):
    np.testing.assert_array_equal(got, want)
  for part in DOTS:  # each part left out: its products are bfloat16 in both
    rest = ",".join(p for p in DOTS if p != part)
    narrowed = run(CFG.replace(matmul_dtype="bfloat16", float32_products=rest), params, tokens)
    for got, want in zip(narrowed, full):
      assert not np.array_equal(got, want), part
      np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * float(np.abs(want).max()))


def test_matmul_dtype_of_a_part():
  mixed = CFG.replace(matmul_dtype="bfloat16", float32_products="logits, mlp")
  assert [mixed.matmul_dtype_of(p) for p in DOTS] == ["float32", "bfloat16", "bfloat16",
                                                       "float32"]
  # Without a matmul_dtype the products are the compute dtype's, named or not.
  assert {CFG.replace(dtype="bfloat16").matmul_dtype_of(p) for p in DOTS} == {""}
  # A bfloat16 model with float32 products: the named parts are float32 too.
  wide = CFG.replace(dtype="bfloat16", matmul_dtype="float32", float32_products="logits")
  assert {wide.matmul_dtype_of(p) for p in DOTS} == {"float32"}


def test_bad_float32_products_is_an_error():
  with pytest.raises(ValueError, match=r"unknown float32_products \['softmax'\]"):
    CFG.replace(float32_products="logits,softmax")
