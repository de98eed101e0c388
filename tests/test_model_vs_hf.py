"""Our decoder in the Llama layout against Hugging Face transformers' LlamaForCausalLM.

The reference is an implementation we did not write: the same random weights, copied into a
locally built `LlamaForCausalLM` (nothing downloaded), must give the same logits. This pins down
RoPE's layout, RMSNorm, SwiGLU, grouped-query attention and (un)tied embeddings.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax import model as model_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _to_hf_state_dict(params, cfg):
  """Our parameter tree -> LlamaForCausalLM's state dict (torch tensors, [out, in] layout)."""
  D, N, K, H = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  t = lambda x: torch.tensor(np.asarray(x, dtype=np.float32))
  layers = params["layers"]
  sd = {"model.embed_tokens.weight": t(params["embedding"]),
        "model.norm.weight": t(params["final_norm"]["scale"])}
  sd["lm_head.weight"] = (t(params["unembed"]).T if "unembed" in params
                          else t(params["embedding"]))
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    attn, mlp = layers["attn"], layers["mlp"]
    sd[p + "self_attn.q_proj.weight"] = t(attn["query"][i].reshape(D, N * H)).T
    sd[p + "self_attn.k_proj.weight"] = t(attn["key"][i].reshape(D, K * H)).T
    sd[p + "self_attn.v_proj.weight"] = t(attn["value"][i].reshape(D, K * H)).T
    sd[p + "self_attn.o_proj.weight"] = t(attn["out"][i].reshape(N * H, D)).T
    sd[p + "mlp.gate_proj.weight"] = t(mlp["wi_gate"][i]).T
    sd[p + "mlp.up_proj.weight"] = t(mlp["wi_up"][i]).T
    sd[p + "mlp.down_proj.weight"] = t(mlp["wo"][i]).T
    sd[p + "input_layernorm.weight"] = t(layers["pre_attn_norm"]["scale"][i])
    sd[p + "post_attention_layernorm.weight"] = t(layers["pre_mlp_norm"]["scale"][i])
  return sd


@pytest.mark.parametrize("tied,kv_heads", [(True, 1), (False, 2)])
def test_logits_match_hf_llama(tied, kv_heads):
  cfg = model_lib.preset("tiny", num_layers=2, vocab_size=512, max_len=64, num_kv_heads=kv_heads,
                         tied_embeddings=tied, rope_theta=50_000.0, norm_eps=1e-5,
                         **model_lib.LLAMA_STYLE)
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
      mlp_bias=False, hidden_act="silu")
  hf = transformers.LlamaForCausalLM(hf_cfg).eval()
  missing, unexpected = hf.load_state_dict(_to_hf_state_dict(params, cfg), strict=False)
  assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)

  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, size=(2, 24))
  ours, _ = model_lib.Decoder(cfg).apply({"params": params}, jnp.asarray(tokens))
  with torch.no_grad():
    theirs = hf(torch.tensor(tokens)).logits.numpy()
  ours = np.asarray(ours)
  rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
  assert rel < 1e-4, rel
