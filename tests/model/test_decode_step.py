"""The sampler's prefill and shared-prompt decode step against the model's full forward pass."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax import model
from restem_jax.model import decode_step

VARIANTS = {
    "palm": {},  # parallel block, LayerNorm, multi-query, tied and scaled logits
    "llama": dict(model.LLAMA_STYLE),
    "gemma_like_gqa_untied": dict(num_kv_heads=2, tied_embeddings=False, embed_scale=True,
                                  norm="rmsnorm", norm_scale_plus_one=True,
                                  mlp_activation="gelu", parallel_block=False),
    "qwen2_like_bias_llama3_rope": dict(model.LLAMA_STYLE, qkv_bias=True, rope_scaling="llama3",
                                        rope_scaling_factor=8.0, rope_original_max_len=32),
    "mha_linear_rope": dict(num_kv_heads=4, rope_scaling="linear", rope_scaling_factor=2.0),
}


# n = 3 samples a prompt share its keys/values; n = 1 keeps the prompt in the row's own slots.
@pytest.mark.parametrize("variant,n", [(v, 3) for v in sorted(VARIANTS)] + [("llama", 1)])
def test_teacher_forced_steps_equal_the_full_forward_pass(variant, n):
  cfg = model.preset("tiny", num_layers=2, d_model=64, num_heads=4, head_dim=16, d_ff=128,
                     vocab_size=97, max_len=64, **VARIANTS[variant])
  params = nn.unbox(model.Decoder(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
                    ["params"])
  params = jax.tree_util.tree_map_with_path(  # biases start at zero: make a missing one show
      lambda path, x: x + 0.5 if "bias" in jax.tree_util.keystr(path) else x, params)
  rng = np.random.default_rng(0)
  lengths_P = np.array([5, 9], np.int32)
  T, L = 3, 12  # 3 new tokens, prompts padded to 12
  prompts_PL = np.zeros((2, L), np.int32)
  for p, length in enumerate(lengths_P):
    prompts_PL[p, :length] = rng.integers(3, 97, length)
  new_BT = rng.integers(3, 97, (2 * n, T)).astype(np.int32)  # each row its own continuation

  @jax.jit
  def steps(params, prompts_PL, lengths_P, new_BT):
    layers = decode_step.split_layers(cfg, params)
    prompt_kv = model.prompt_kv(cfg, params, prompts_PL, last_layer=layers[-1])  # the prefill
    cache = decode_step.init_cache(cfg, prompt_kv, lengths_P, n, T, share_prompt=n > 1)
    lengths_B = jnp.repeat(lengths_P, n)
    out = []
    for t in range(T):
      logits_BV, cache = decode_step.decode_step(cfg, params, layers, new_BT[:, t],
                                                 lengths_B + t, jnp.int32(t), cache)
      out.append(logits_BV)
    return jnp.stack(out, axis=1)

  got_BTV = np.asarray(steps(params, prompts_PL, lengths_P, new_BT))
  # Reference: each row's prompt + continuation in one causal pass (right padding after it
  # cannot change its logits).
  seq_BX = np.zeros((2 * n, L + T), np.int32)
  for b in range(2 * n):
    p = b // n
    seq_BX[b, :lengths_P[p] + T] = np.concatenate([prompts_PL[p, :lengths_P[p]], new_BT[b]])
  full_BXV = np.asarray(jax.jit(lambda p, x: model.Decoder(cfg).apply({"params": p}, x)[0])(
      params, seq_BX))
  for b in range(2 * n):
    start = lengths_P[b // n]
    np.testing.assert_allclose(got_BTV[b], full_BXV[b, start:start + T], rtol=1e-5, atol=2e-5)
