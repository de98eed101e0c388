"""One decode step whose attention reads each prompt once for all of its samples.

The model's own cached call (`Decoder(cfg).apply(..., cache=...)`) keeps one cache row per
sample. With N samples of a prompt, that row holds N copies of the prompt's keys and values and
every step reads all of them: for a 400-token few-shot prompt and 32 samples, most of a step's
memory traffic is 31 redundant copies. This step splits the cache in two:

  prompt   each prompt's keys/values, from the prefill, one copy per prompt (P of them)
  own      each row's generated tokens (B = P * n rows; row p*n+j is sample j of prompt p)

and row p*n+j attends to prompt p's keys, its own earlier tokens and itself, in one softmax.
The prompt part is one matrix product per prompt for all n samples (M = n * heads rows).

Layouts are chosen for the CPU/TPU matmul units: keys [.., K, S, H] and values transposed
[.., K, H, S], so both products contract the minor dimension of both operands and no cache is
transposed in the loop; the caches are per-layer arrays (no slicing of a stacked cache per step)
and each step writes one slot of each in place.

It reuses the model's parameters, its `Norm` and `Mlp` modules and `apply_rope`, and follows
`Block` and `Decoder` for the rest (parallel or sequential block, tied, scaled or untied
logits, embedding scale); `tests/test_decode_step.py` checks it against `Decoder` for each.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from restem_jax import model as model_lib

Array = jax.Array

_NEG_INF = -1e30  # as in the model: finite, so fully masked parts give zeros, not NaN


@flax.struct.dataclass
class PromptCache:
  """Keys [P, K, S, H] and transposed values [P, K, H, S] of each layer, and a mask bias."""

  k: tuple[Array, ...]
  vt: tuple[Array, ...]
  bias_PS: Array  # 0 on a prompt's real slots, -1e30 on its padding


@flax.struct.dataclass
class OwnCache:
  """Keys [B, K, T, H] and transposed values [B, K, H, T] of each row's generated tokens."""

  k: tuple[Array, ...]
  vt: tuple[Array, ...]


def prompt_cache(prompt_kv: model_lib.Cache, lengths_P: Array) -> PromptCache:
  """Re-lays out the prefill's keys/values ({"k", "v"}: [layers, P, S, K, H]); once per batch."""
  S = prompt_kv["k"].shape[2]
  bias_PS = jnp.where(jnp.arange(S)[None, :] < lengths_P[:, None], 0.0, _NEG_INF)
  k = jnp.transpose(prompt_kv["k"], (0, 1, 3, 2, 4))
  vt = jnp.transpose(prompt_kv["v"], (0, 1, 3, 4, 2))
  k = nn.with_logical_constraint(k, ("layers", "cache_batch", "cache_kv_heads", "cache_length",
                                     "kv"))
  vt = nn.with_logical_constraint(vt, ("layers", "cache_batch", "cache_kv_heads", "kv",
                                       "cache_length"))
  return PromptCache(k=tuple(k), vt=tuple(vt), bias_PS=bias_PS.astype(jnp.float32))


def own_cache(cfg: model_lib.ModelConfig, rows: int, slots: int) -> OwnCache:
  """An empty cache of `slots` generated tokens for `rows` rows."""
  K, H = cfg.num_kv_heads, cfg.head_dim
  dtype = jnp.dtype(cfg.dtype)

  def zeros(shape, names):
    return nn.with_logical_constraint(jnp.zeros(shape, dtype), names)
  return OwnCache(
      k=tuple(zeros((rows, K, slots, H), ("cache_batch", "cache_kv_heads", "cache_length",
                                          "kv")) for _ in range(cfg.num_layers)),
      vt=tuple(zeros((rows, K, H, slots), ("cache_batch", "cache_kv_heads", "kv",
                                           "cache_length")) for _ in range(cfg.num_layers)))


def _attention(cfg: model_lib.ModelConfig, w_attn, h_BD: Array, position_B: Array,
               step: Array, prompt_k_PKSH: Array, prompt_vt_PKHS: Array, bias_PS: Array,
               own_k_BKTH: Array, own_vt_BKHT: Array):
  """One new token per row attends to [its prompt | its earlier tokens | itself].

  Returns:
    (output [B, D], the token's key [B, K, H] and value [B, K, H]).
  """
  N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  G = N // K
  B = h_BD.shape[0]
  P = prompt_k_PKSH.shape[0]
  n = B // P
  dtype = jnp.dtype(cfg.dtype)
  q_B1NH = jnp.einsum("BD,DNH->BNH", h_BD, w_attn["query"].astype(dtype))[:, None]
  k_B1KH = jnp.einsum("BD,DKH->BKH", h_BD, w_attn["key"].astype(dtype))[:, None]
  v_BKH = jnp.einsum("BD,DKH->BKH", h_BD, w_attn["value"].astype(dtype))
  q_BKGH = (model_lib.apply_rope(q_B1NH, position_B[:, None], cfg.rope_theta)[:, 0]
            * (H ** -0.5)).reshape(B, K, G, H)
  k_BKH = model_lib.apply_rope(k_B1KH, position_B[:, None], cfg.rope_theta)[:, 0]

  # Prompt part: the n samples' queries of prompt p as the M = n * G rows of one product.
  q_PKMH = q_BKGH.reshape(P, n, K, G, H).transpose(0, 2, 1, 3, 4).reshape(P, K, n * G, H)
  s_pre_PKMS = jnp.einsum("PKMH,PKSH->PKMS", q_PKMH, prompt_k_PKSH.astype(dtype),
                          preferred_element_type=jnp.float32) + bias_PS[:, None, None, :]
  T = own_k_BKTH.shape[2]
  own_bias_T = jnp.where(jnp.arange(T) < step, 0.0, _NEG_INF)
  s_own_BKGT = jnp.einsum("BKGH,BKTH->BKGT", q_BKGH, own_k_BKTH.astype(dtype),
                          preferred_element_type=jnp.float32) + own_bias_T
  s_self_BKG = jnp.einsum("BKGH,BKH->BKG", q_BKGH, k_BKH, preferred_element_type=jnp.float32)

  def to_rows(x_PKM):  # [P, K, n * G] -> [B, K, G]
    return x_PKM.reshape(P, K, n, G).transpose(0, 2, 1, 3).reshape(B, K, G)

  def to_prompts(x_BKG):  # [B, K, G] -> [P, K, n * G]
    return x_BKG.reshape(P, n, K, G).transpose(0, 2, 1, 3).reshape(P, K, n * G)

  # One softmax over the three parts without concatenating them; normalised after the value
  # products, so the big score tensors are read once by exp and once by the product.
  m_BKG = jnp.maximum(jnp.maximum(to_rows(s_pre_PKMS.max(-1)), s_own_BKGT.max(-1)), s_self_BKG)
  e_pre_PKMS = jnp.exp(s_pre_PKMS - to_prompts(m_BKG)[..., None])
  e_own_BKGT = jnp.exp(s_own_BKGT - m_BKG[..., None])
  e_self_BKG = jnp.exp(s_self_BKG - m_BKG)
  denom_BKG = to_rows(e_pre_PKMS.sum(-1)) + e_own_BKGT.sum(-1) + e_self_BKG
  o_pre_PKMH = jnp.einsum("PKMS,PKHS->PKMH", e_pre_PKMS.astype(dtype),
                          prompt_vt_PKHS.astype(dtype), preferred_element_type=jnp.float32)
  o_pre_BKGH = o_pre_PKMH.reshape(P, K, n, G, H).transpose(0, 2, 1, 3, 4).reshape(B, K, G, H)
  o_own_BKGH = jnp.einsum("BKGT,BKHT->BKGH", e_own_BKGT.astype(dtype),
                          own_vt_BKHT.astype(dtype), preferred_element_type=jnp.float32)
  out_BKGH = ((o_pre_BKGH + o_own_BKGH + e_self_BKG[..., None] * v_BKH[:, :, None, :])
              / denom_BKG[..., None]).astype(dtype)
  out_BD = jnp.einsum("BNH,NHD->BD", out_BKGH.reshape(B, N, H), w_attn["out"].astype(dtype))
  return out_BD, k_BKH, v_BKH


def decode_step(cfg: model_lib.ModelConfig, params, layers: list, token_B: Array,
                position_B: Array, step: Array, prompt: PromptCache, own: OwnCache
                ) -> tuple[Array, OwnCache]:
  """Runs one new token per row through the model.

  Args:
    cfg: the architecture.
    params: the decoder's "params" collection (for the embedding and final norm).
    layers: each layer's parameters (`split_layers(params)`).
    token_B: the new token of each row.
    position_B: its position (its prompt's length + `step`).
    step: how many generated tokens each row already has in `own` (slots < step).
    prompt: the prompts' keys/values; row b belongs to prompt b // (B // P).
    own: the rows' generated tokens' keys/values.

  Returns:
    (logits [B, V] float32, `own` with this token written at slot `step`).
  """
  dtype = jnp.dtype(cfg.dtype)
  embedding = params["embedding"]
  x_BD = jnp.take(embedding, token_B, axis=0).astype(dtype)
  if cfg.embed_scale:
    x_BD = x_BD * jnp.asarray(cfg.d_model ** 0.5, dtype)
  norm, mlp = model_lib.Norm(cfg), model_lib.Mlp(cfg)

  def mlp_BD(p, h_BD):  # the model's Mlp works on [B, L, D]
    return mlp.apply({"params": p}, h_BD[:, None])[:, 0]

  new_k, new_vt = [], []
  for i, p in enumerate(layers):
    h_BD = norm.apply({"params": p["pre_attn_norm"]}, x_BD)
    attn_BD, k_BKH, v_BKH = _attention(cfg, p["attn"], h_BD, position_B, step, prompt.k[i],
                                       prompt.vt[i], prompt.bias_PS, own.k[i], own.vt[i])
    new_k.append(jax.lax.dynamic_update_slice_in_dim(
        own.k[i], k_BKH[:, :, None, :].astype(own.k[i].dtype), step, axis=2))
    new_vt.append(jax.lax.dynamic_update_slice_in_dim(
        own.vt[i], v_BKH[:, :, :, None].astype(own.vt[i].dtype), step, axis=3))
    if cfg.parallel_block:
      x_BD = x_BD + attn_BD + mlp_BD(p["mlp"], h_BD)
    else:
      x_BD = x_BD + attn_BD
      x_BD = x_BD + mlp_BD(p["mlp"], norm.apply({"params": p["pre_mlp_norm"]}, x_BD))
    x_BD = nn.with_logical_constraint(x_BD, ("activation_batch", "activation_embed"))
  x_BD = norm.apply({"params": params["final_norm"]}, x_BD)
  if cfg.tied_embeddings:
    logits_BV = jnp.einsum("BD,VD->BV", x_BD, embedding.astype(dtype),
                           preferred_element_type=jnp.float32)
    if cfg.scale_tied_logits:
      logits_BV = logits_BV * (cfg.d_model ** -0.5)
  else:
    logits_BV = jnp.einsum("BD,DV->BV", x_BD, params["unembed"].astype(dtype),
                           preferred_element_type=jnp.float32)
  return logits_BV, OwnCache(k=tuple(new_k), vt=tuple(new_vt))


def split_layers(params) -> list:
  """Each layer's parameters, sliced out of the stacked `params["layers"]`."""
  num_layers = jax.tree.leaves(params["layers"])[0].shape[0]
  return [jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(num_layers)]
