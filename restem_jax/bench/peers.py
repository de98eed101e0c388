"""The benchmarks' peer model: Hugging Face transformers' Llama with our config's shapes."""

from __future__ import annotations

from restem_jax import model as model_lib


def hf_llama(cfg: model_lib.ModelConfig):
  """A random-init `LlamaForCausalLM` (float32) shaped like `cfg` in the Llama layout.

  torch and transformers are imported here: they are optional (the "bench" extra).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
      max_position_embeddings=cfg.max_len, rms_norm_eps=cfg.norm_eps,
      rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tied_embeddings,
      attention_bias=False, mlp_bias=False, hidden_act="silu", torch_dtype="float32")
  return transformers.LlamaForCausalLM(hf_cfg).float()
