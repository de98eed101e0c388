"""The decoder: cache decoding equals the full pass, causality, variants, PaLM parameter counts."""

import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax import losses
from restem_jax import model as model_lib

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
def _apply(cfg, params, tokens, positions_BL=None, segment_ids_BL=None, cache=None):
  # Jitted (config static): each decode step of a test reuses one compiled program.
  return model_lib.Decoder(cfg).apply({"params": params}, tokens, positions_BL=positions_BL,
                                      segment_ids_BL=segment_ids_BL, cache=cache)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_prefill_then_decode_equals_full_forward(name):
  cfg = VARIANTS[name]
  params = _init(cfg)
  tokens = jax.random.randint(jax.random.key(1), (3, 20), 0, cfg.vocab_size)
  full, _ = _apply(cfg, params, tokens)

  cache = model_lib.init_cache(cfg, 3, 32)
  prefill, kv = _apply(cfg, params, tokens[:, :7], cache=cache)
  cache = model_lib.update_cache(cache, kv, jnp.zeros(3, jnp.int32))
  steps = [prefill]
  for t in range(7, 20):
    pos = jnp.full((3, 1), t, jnp.int32)
    logits, kv = _apply(cfg, params, tokens[:, t:t + 1], positions_BL=pos, cache=cache)
    cache = model_lib.update_cache(cache, kv, pos[:, 0])
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)


def test_variable_prompt_lengths_in_one_batch():
  """Right-padded prompts of different lengths decode as if each ran alone."""
  cfg = TINY
  params = _init(cfg)
  seqs = [jax.random.randint(jax.random.key(i), (n,), 0, cfg.vocab_size)
          for i, n in enumerate([5, 9, 2])]
  lengths = jnp.array([len(s) for s in seqs])
  prompts = jnp.stack([jnp.pad(s, (0, 9 - len(s)), constant_values=0) for s in seqs])
  cache = model_lib.init_cache(cfg, 3, 16)
  _, kv = _apply(cfg, params, prompts, cache=cache)
  cache = model_lib.update_cache(cache, kv, jnp.zeros(3, jnp.int32))
  next_tokens = jnp.array([[7], [8], [9]])
  logits, _ = _apply(cfg, params, next_tokens, positions_BL=lengths[:, None], cache=cache)
  for b, s in enumerate(seqs):
    alone, _ = _apply(cfg, params, jnp.concatenate([s, next_tokens[b]])[None])
    np.testing.assert_allclose(logits[b, 0], alone[0, -1], atol=1e-5, rtol=0)


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
