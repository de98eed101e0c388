"""Our decoder in the Llama layout against Hugging Face transformers' LlamaForCausalLM.

The reference is an implementation we did not write: the same random weights, copied into a
locally built `LlamaForCausalLM` (nothing downloaded), must give the same logits. This pins down
RoPE's layout and scaling, RMSNorm, SwiGLU, grouped-query attention and (un)tied embeddings.
The weights go over by `convert.hf_tensors`, the exporter's mapping.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax import model as model_lib
from restem_jax.model import convert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _to_hf_state_dict(params, cfg):
  """Our parameter tree -> LlamaForCausalLM's state dict, by the importer's own mapping."""
  return {name: torch.tensor(x) for name, x in convert.hf_tensors(params, cfg)}


# Llama 3.1's rope scaling with a short "pre-training" context, so that every branch of it
# (kept, stretched and interpolated frequencies) is used; and the older linear scaling.
LLAMA3_ROPE = dict(rope_scaling="llama3", rope_scaling_factor=8.0, rope_low_freq_factor=1.0,
                   rope_high_freq_factor=4.0, rope_original_max_len=32)
HF_ROPE = {"none": None, "linear": {"rope_type": "linear", "factor": 4.0},
           "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}


@pytest.mark.parametrize("tied,kv_heads,rope", [(True, 1, "none"), (False, 2, "none"),
                                                (False, 2, "linear"), (True, 2, "llama3")])
def test_logits_match_hf_llama(tied, kv_heads, rope):
  scaling = {"none": {}, "linear": dict(rope_scaling="linear", rope_scaling_factor=4.0),
             "llama3": LLAMA3_ROPE}[rope]
  cfg = model_lib.preset("tiny", num_layers=2, vocab_size=512, max_len=64, num_kv_heads=kv_heads,
                         tied_embeddings=tied, rope_theta=50_000.0, norm_eps=1e-5,
                         **model_lib.LLAMA_STYLE, **scaling)
  variables = model_lib.Decoder(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  params = nn.unbox(variables)["params"]
  # Non-trivial norm scales, so a missing or misplaced scale cannot go unnoticed.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * (1 + 0.1 * jax.random.normal(jax.random.key(len(str(path))), x.shape))
      if "scale" in str(path) else x, params)

  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
      max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps,
      rope_theta=cfg.rope_theta, tie_word_embeddings=tied, attention_bias=False,
      mlp_bias=False, hidden_act="silu", rope_scaling=HF_ROPE[rope])
  hf = transformers.LlamaForCausalLM(hf_cfg).eval()
  missing, unexpected = hf.load_state_dict(_to_hf_state_dict(params, cfg), strict=False)
  # A tied lm_head is the embedding itself: exports leave it out, as transformers does.
  assert not unexpected and all("rotary" in m or (tied and m == "lm_head.weight")
                                for m in missing), (missing, unexpected)

  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, size=(2, 24))
  ours, _ = model_lib.Decoder(cfg).apply({"params": params}, jnp.asarray(tokens))
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens)).logits.numpy()
  ours = np.asarray(ours)
  rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
  assert rel < 1e-4, rel
