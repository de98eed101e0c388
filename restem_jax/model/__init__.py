"""The model: one PaLM-style decoder for training, prefill and decoding, and what carries it.

  config.py        `ModelConfig`, the architecture switches, and the named sizes (`preset`)
  transformer.py   the layer math once, as pure functions, and the Flax `Decoder` that calls it
  decode_step.py   the sampler's KV cache: one decode step against it, using the same functions
  partitioning.py  the device mesh, the logical-axis rules, shardings from abstract shapes
  checkpoints.py   model checkpoint directories (parameters, config, vocabulary)
  convert.py       Hugging Face checkpoints <-> ours (`python -m restem_jax.convert`)

`from restem_jax import model` gives the names below; the other modules are imported by path
(`from restem_jax.model import partitioning`).
"""

from restem_jax.model.config import LLAMA_STYLE, PRESETS, ModelConfig, preset
from restem_jax.model.transformer import (KV, NEG_INF, Attention, Block, Cache, Decoder, Mlp,
                                          Norm, attend, attention_out, block, count_params, embed,
                                          masks, mlp, norm, product, prompt_kv, qkv, rope_cos_sin,
                                          rope_inv_freq, rotate, unembed)

__all__ = ["LLAMA_STYLE", "PRESETS", "ModelConfig", "preset", "KV", "NEG_INF", "Attention",
           "Block", "Cache", "Decoder", "Mlp", "Norm", "attend", "attention_out", "block",
           "count_params", "embed", "masks", "mlp", "norm", "product", "prompt_kv", "qkv",
           "rope_cos_sin", "rope_inv_freq", "rotate", "unembed"]
