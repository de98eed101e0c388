"""The decoder: the prefill equals the full pass, causality, variants, PaLM parameter counts.

The decode step against the full pass: tests/model/test_decode_step.py.
"""

import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax import model as model_lib
from restem_jax.model import decode_step
from restem_jax.training import losses

TINY = model_lib.preset("tiny", num_layers=2, vocab_size=128, max_len=64)

VARIANTS = {
    "palm": TINY,
    "llama_gqa_untied": TINY.replace(parallel_block=False, norm="rmsnorm", num_kv_heads=2,
                                     tied_embeddings=False, rope_theta=500_000.0),
    "gemma_like": TINY.replace(parallel_block=False, norm="rmsnorm", norm_scale_plus_one=True,
                               embed_scale=True, mlp_activation="gelu", head_dim=32),
    "mha": TINY.replace(num_kv_heads=4),
}


def _init(cfg, batch=2, length=8, seed=0):
  tokens = jnp.zeros((batch, length), jnp.int32)
  return nn.unbox(model_lib.Decoder(cfg).init(jax.random.key(seed), tokens))["params"]


@functools.partial(jax.jit, static_argnums=0)
def _apply(cfg, params, tokens, positions_BL=None, segment_ids_BL=None):
  # Jitted (config static): each call shape of a test compiles once.
  return model_lib.Decoder(cfg).apply({"params": params}, tokens, positions_BL=positions_BL,
                                      segment_ids_BL=segment_ids_BL)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_prefill_after_a_cached_prefix_equals_the_full_pass(name):
  """`prompt_kv` (the sampler's prefill) on a prefix, then on the rest of each row attending to
  it through the cache, gives the keys/values of one `Decoder` pass over the whole rows."""
  cfg = VARIANTS[name]
  params = _init(cfg)
  tokens = jax.random.randint(jax.random.key(1), (3, 20), 0, cfg.vocab_size)
  _, full = _apply(cfg, params, tokens)
  prefill = jax.jit(functools.partial(model_lib.prompt_kv, cfg))
  prefix = prefill(params, tokens[:, :7])
  rest = prefill(params, tokens[:, 7:], jnp.broadcast_to(jnp.arange(7, 20), (3, 13)), prefix,
                 decode_step.split_layers(cfg, params)[-1])  # the fused layout, as the sampler
  for part in ("k", "v"):
    np.testing.assert_allclose(jnp.concatenate([prefix[part], rest[part]], axis=2), full[part],
                               atol=1e-5, rtol=0)


def test_attend_is_one_softmax_over_its_parts():
  """Keys split into parts (one masked by bool, one by an additive bias), normalised before or
  after the value products: the softmax attention over all keys, computed in numpy."""
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 3, 1, 4, 8)).astype(np.float32)  # [B, L, K, G, H]
  k, v = (rng.normal(size=(2, 10, 1, 8)).astype(np.float32) for _ in range(2))  # [B, M, K, H]
  mask = rng.random((2, 1, 1, 3, 10)) < 0.7  # broadcast to the scores [B, K, G, L, M]
  mask[..., 0] = True
  s = np.einsum("BLKGH,BMKH->BKGLM", q, k)
  p = np.where(mask, np.exp(s - s.max(-1, keepdims=True)), 0.0)
  want = np.einsum("BKGLM,BMKH->BLKGH", p / p.sum(-1, keepdims=True), v)
  for late, (scores, mix), mask_ in (
      (False, ("BLKGH,BMKH->BKGLM", "BKGLM,BMKH->BLKGH"), mask),  # training's layout
      (True, ("BLKGH,BMKH->BLKGM", "BLKGM,BMKH->BLKGH"), mask.transpose(0, 3, 1, 2, 4))):
    bias = np.where(mask_[..., 4:], 0.0, model_lib.NEG_INF).astype(np.float32)
    parts = [model_lib.KV(k[:, :4], v[:, :4], mask_[..., :4], scores, mix),
             model_lib.KV(k[:, 4:], v[:, 4:], bias, scores, mix)]
    got = model_lib.attend(q, parts, jnp.float32, normalize_late=late)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="normalize_late"):
    model_lib.attend(q, [parts[0]._replace(group=object())], jnp.float32)


@pytest.mark.parametrize("name", ["palm", "llama_gqa_untied"])
def test_causality(name):
  cfg = VARIANTS[name]
  params = _init(cfg)
  tokens = jax.random.randint(jax.random.key(2), (1, 16), 0, cfg.vocab_size)
  base, _ = _apply(cfg, params, tokens)
  for t in (0, 5, 14):
    changed = tokens.at[0, t + 1].set((tokens[0, t + 1] + 1) % cfg.vocab_size)
    logits, _ = _apply(cfg, params, changed)
    np.testing.assert_array_equal(logits[0, :t + 1], base[0, :t + 1])
    assert not np.allclose(logits[0, t + 1:], base[0, t + 1:])


def test_packed_segments_do_not_see_each_other():
  cfg = TINY
  params = _init(cfg)
  a = jax.random.randint(jax.random.key(3), (6,), 0, cfg.vocab_size)
  b = jax.random.randint(jax.random.key(4), (10,), 0, cfg.vocab_size)
  packed = jnp.concatenate([a, b])[None]
  segments = jnp.array([[1] * 6 + [2] * 10])
  positions = jnp.array([list(range(6)) + list(range(10))])
  logits, _ = _apply(cfg, params, packed, positions_BL=positions, segment_ids_BL=segments)
  alone_b, _ = _apply(cfg, params, b[None])
  np.testing.assert_allclose(logits[0, 6:], alone_b[0], atol=1e-5, rtol=0)


def test_parameters_have_logical_names_and_dtype():
  cfg = TINY.replace(dtype="bfloat16")
  boxed = jax.eval_shape(lambda k: model_lib.Decoder(cfg).init(k, jnp.zeros((1, 4), jnp.int32)),
                         jax.random.key(0))
  leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  assert all(x.value.dtype == jnp.float32 for x in leaves)  # params stay float32
  params = _init(cfg)
  logits, _ = _apply(cfg, params, jnp.zeros((1, 4), jnp.int32))
  assert logits.dtype == jnp.float32  # logits are upcast for the loss


def test_layer_parameters_by_block_kind():
  parallel = _init(TINY)["layers"]
  sequential = _init(VARIANTS["llama_gqa_untied"])
  assert "pre_mlp_norm" not in parallel  # PaLM: one norm feeds attention and MLP
  assert "pre_mlp_norm" in sequential["layers"] and "unembed" in sequential
  assert sequential["layers"]["attn"]["key"].shape == (2, 256, 2, 64)  # [layers, D, K, H]


# PaLM paper, Table 1 / section 2: 8.63B, 62.50B, 540.35B parameters.
@pytest.mark.parametrize("name,expected", [("palm_8b", 8.63e9), ("palm_62b", 62.50e9),
                                           ("palm_540b", 540.35e9)])
def test_palm_parameter_counts(name, expected):
  cfg = model_lib.preset(name)
  abstract = jax.eval_shape(
      lambda k: model_lib.Decoder(cfg).init(k, jnp.zeros((1, 1), jnp.int32)), jax.random.key(0))
  count = model_lib.count_params(nn.unbox(abstract))
  assert abs(count - expected) / expected < 0.005, count


def test_config_validation():
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    TINY.replace(num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="unknown model preset"):
    model_lib.preset("palm_1t")
  with pytest.raises(ValueError, match="unknown model config keys"):
    model_lib.ModelConfig.from_dict({**TINY.to_dict(), "d_modle": 3})
  assert model_lib.ModelConfig.from_dict(TINY.to_dict()) == TINY


def test_z_loss_and_weights():
  logits = jnp.array([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])
  targets = jnp.array([[0, 2]])
  weights = jnp.array([[1.0, 0.0]])
  total, stats = losses.cross_entropy_with_z_loss(logits, targets, weights, z_loss=1e-4)
  log_z = np.log(np.exp(2.0) + 1 + np.exp(-1.0))
  np.testing.assert_allclose(stats["nll"], log_z - 2.0, rtol=1e-6)
  np.testing.assert_allclose(stats["z_loss"], 1e-4 * log_z ** 2, rtol=1e-6)
  np.testing.assert_allclose(total, stats["nll"] + stats["z_loss"], rtol=1e-6)
  assert stats["weight"] == 1.0 and stats["correct"] == 1.0


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_mask_as_bias_equals_bool_mask(name):
  # Decoder hands its layers the mask as an additive bias (0 or NEG_INF), the prefill as bools:
  # the same outputs and gradients, packed rows included (equal to the bit on XLA:CPU).
  cfg = VARIANTS[name]
  layer = jax.tree.map(lambda a: a[0], _init(cfg)["layers"])
  x = jax.random.normal(jax.random.key(1), (2, 12, cfg.d_model))
  positions = jnp.array([list(range(5)) + list(range(7)), list(range(12))])
  mask, _ = model_lib.masks(positions, jnp.array([[1] * 5 + [2] * 7, [1] * 12]))
  bias = jnp.where(mask, 0.0, model_lib.NEG_INF)

  def run(m, params, x):
    return model_lib.Block(cfg).apply({"params": params}, x, positions, m, None, None)[0]

  want, want_vjp = jax.vjp(functools.partial(run, mask), layer, x)
  got, got_vjp = jax.vjp(functools.partial(run, bias), layer, x)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  cotangent = jax.random.normal(jax.random.key(2), want.shape)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7),
               got_vjp(cotangent), want_vjp(cotangent))


def test_first_argmax_is_argmax_with_ties():
  x = np.random.default_rng(0).integers(0, 4, (3, 50, 37)).astype(np.float32)  # many ties
  x[0, 3] = -np.inf
  x[1, 4] = 0.0
  np.testing.assert_array_equal(losses.first_argmax(jnp.asarray(x)), np.argmax(x, axis=-1))
