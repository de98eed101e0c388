"""One decode step whose attention reads each prompt once for all of its samples.

The model's own cached call (`Decoder(cfg).apply(..., cache=...)`) keeps one cache row per
sample. With N samples of a prompt, that row holds N copies of the prompt's keys and values and
every step reads all of them: for a 400-token few-shot prompt and 32 samples, most of a step's
memory traffic is 31 redundant copies. This step splits the cache in two:

  prompt   each prompt's keys/values, from the prefill, one copy per prompt (P of them)
  own      each row's own inputs (B = P * n rows; row p*n+j is sample j of prompt p): the
           sampler feeds each prompt's last token as the first, then the generated tokens

and row p*n+j attends to prompt p's keys, its own earlier inputs and itself, in one softmax.
The prompt part is one matrix product per prompt for all n samples (M = n * heads rows).

With one sample per prompt (nothing to share) the prompt sits in the row's own slots instead,
and a step reads one cache part.

The caches are per-layer arrays (no slicing of a stacked cache per step), keys laid out
[.., K, H, S] and values [.., K, S, H], and each step writes its token's slot before reading
the cache, which lets XLA update the loop's buffers in place (reading first makes it copy them
every step). `split_layers` slices each layer's weights out of the stacked parameters once per
call (one extra copy of the weights while sampling) and stacks key with value and gate with up,
so each pair is one product.

It uses the model's parameters, its `Norm` module and `apply_rope`, and follows `Block`,
`Attention`, `Mlp` and `Decoder` for the rest (parallel or sequential block, one or several
K/V heads, SwiGLU or GeGLU, tied, scaled or untied logits, embedding scale);
`tests/test_decode_step.py` checks it against `Decoder` for each of those switches.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from restem_jax import model as model_lib

Array = jax.Array

_NEG_INF = -1e30  # as in the model: finite, so fully masked parts give zeros, not NaN


@flax.struct.dataclass
class Cache:
  """The decode loop's keys ([.., K, H, S]) and values ([.., K, S, H]), per-layer tuples.

  shared_*: each prompt's keys/values, one copy per prompt ([P, K, H, S], [P, K, S, H]); empty
    tuples when the prompts are not shared (one sample per prompt: then they sit in the rows'
    own slots).
  own_*: each row's slots ([B, K, H, S], [B, K, S, H]): its prompt in [0, own_prompt_len) when
    not shared, then its inputs (one a step) from slot `offset` on.
  """

  shared_k: tuple[Array, ...]
  shared_v: tuple[Array, ...]
  shared_bias_PS: Array  # 0 on a prompt's real slots, -1e30 on its padding
  own_k: tuple[Array, ...]
  own_v: tuple[Array, ...]
  own_prompt_len_B: Array
  offset: int = flax.struct.field(pytree_node=False)
  # Optional: which rows read which shared prompt, when rows are not laid out p*n+j (the
  # rollout engine). members_PM[p, m] is the row that is member m of prompt p (B: none);
  # row b is member row_member_B[b] of prompt row_prompt_B[b]. None: row p*n+j is member j of p.
  members_PM: Array | None = None
  row_prompt_B: Array | None = None
  row_member_B: Array | None = None


# Keys [layers, rows, K, H, S] and values [layers, rows, K, S, H]: for each (row, K/V head)
# both of attention's products are plain (not transposed) matrix products, queries [G, H] times
# keys [H, S], then weights [G, S] times values [S, H]. With keys stored [S, H], the scores'
# product contracted H, the minor axis of both sides, and XLA's CPU kernels took about twice as
# long for it (64 rows x 4 heads x 128 slots x 64).
_K_AXES = ("layers", "cache_batch", "cache_kv_heads", "kv", "cache_length")
_V_AXES = ("layers", "cache_batch", "cache_kv_heads", "cache_length", "kv")


def init_cache(cfg: model_lib.ModelConfig, prompt_kv: model_lib.Cache, lengths_P: Array,
               samples_per_prompt: int, max_new_tokens: int, share_prompt: bool) -> Cache:
  """The cache for n = samples_per_prompt rows per prompt, from the prefill's keys/values.

  Args:
    cfg: the architecture.
    prompt_kv: {"k", "v"}: [layers, P, L, K, H] from `Decoder` on the (right-padded) prompts.
    lengths_P: how many of each prompt's tokens to keep (the rest of the L slots are not read).
    samples_per_prompt: n; row p*n+j is sample j of prompt p.
    max_new_tokens: slots for the decode steps' inputs.
    share_prompt: keep one copy of each prompt for its n rows (read once per prompt per step);
      else (one sample per prompt) each row holds its prompt in its own slots, so a step reads
      one cache part instead of two. Set it from the run's samples per problem, not from n,
      so that a sample's arithmetic does not depend on how its run was batched.
  """
  n, T = samples_per_prompt, max_new_tokens
  P, L = prompt_kv["k"].shape[1:3]
  dtype = jnp.dtype(cfg.dtype)
  # [layers, P, L, K, H] -> keys [layers, P, K, H, L], values [layers, P, K, L, H], once per
  # batch.
  k = nn.with_logical_constraint(
      jnp.transpose(prompt_kv["k"], (0, 1, 3, 4, 2)).astype(dtype), _K_AXES)
  v = nn.with_logical_constraint(jnp.swapaxes(prompt_kv["v"], 2, 3).astype(dtype), _V_AXES)
  layers = range(cfg.num_layers)
  if share_prompt:
    K, H = cfg.num_kv_heads, cfg.head_dim
    own_k = nn.with_logical_constraint(jnp.zeros((cfg.num_layers, P * n, K, H, T), dtype),
                                       _K_AXES)
    own_v = nn.with_logical_constraint(jnp.zeros((cfg.num_layers, P * n, K, T, H), dtype),
                                       _V_AXES)
    bias_PS = jnp.where(jnp.arange(L)[None, :] < lengths_P[:, None], 0.0, _NEG_INF)
    return Cache(shared_k=tuple(k[i] for i in layers), shared_v=tuple(v[i] for i in layers),
                 shared_bias_PS=bias_PS.astype(jnp.float32),
                 own_k=tuple(own_k[i] for i in layers), own_v=tuple(own_v[i] for i in layers),
                 own_prompt_len_B=jnp.zeros((P * n,), jnp.int32), offset=0)
  if n != 1:
    raise ValueError(f"an unshared prompt serves one row, got samples_per_prompt={n}")
  # Padded layer by layer: padding the stacked arrays, then slicing, made XLA copy them twice.
  own_k = tuple(jnp.pad(k[i], ((0, 0),) * 3 + ((0, T),)) for i in layers)
  own_v = tuple(jnp.pad(v[i], ((0, 0),) * 2 + ((0, T), (0, 0))) for i in layers)
  return Cache(shared_k=(), shared_v=(), shared_bias_PS=jnp.zeros((P, 0), jnp.float32),
               own_k=own_k, own_v=own_v,
               own_prompt_len_B=lengths_P.astype(jnp.int32), offset=L)


def key_value(cfg: model_lib.ModelConfig, layer, x_BLD: Array, positions_BL: Array
              ) -> tuple[Array, Array]:
  """A layer's keys (rotated) and values [B, L, K, H] for its input x_BLD, as `Block` makes them.

  Args:
    cfg: the architecture.
    layer: the layer's weights (`split_layers`).
    x_BLD: the layer's input (before its attention norm).
    positions_BL: the tokens' positions.
  """
  h_BLD = model_lib.Norm(cfg).apply({"params": layer["pre_attn_norm"]}, x_BLD)
  return _key_value(cfg, layer["attn"], h_BLD, positions_BL)


def _key_value(cfg: model_lib.ModelConfig, w_attn, h_BLD: Array, positions_BL: Array):
  kv_BL2KH = jnp.einsum("BLD,DCKH->BLCKH", h_BLD, w_attn["key_value"])
  if cfg.qkv_bias:
    kv_BL2KH = kv_BL2KH + w_attn["key_value_bias"]
  return (model_lib.apply_rope(kv_BL2KH[:, :, 0], positions_BL, cfg.rope_theta,
                               model_lib.rope_inv_freq(cfg)),
          kv_BL2KH[:, :, 1])


def _rope_cos_sin(cfg: model_lib.ModelConfig, position_B: Array) -> tuple[Array, Array]:
  """cos and sin [B, 1, H/2] of each row's rotary angles, as `model.apply_rope` makes them.

  Looked up in a table of every position's angles, which depends on no input (XLA computes it
  once, outside the decode loop): inside each rotation XLA evaluated them for every head,
  layer and element, every step. The table comes from `apply_rope` itself, applied to the
  vector [1, .., 1, 0, .., 0], whose rotation is [cos | sin]: so it follows its frequencies.
  """
  half = cfg.head_dim // 2
  unit_H = jnp.concatenate([jnp.ones((half,), jnp.float32), jnp.zeros((half,), jnp.float32)])
  cs_1M1H = model_lib.apply_rope(jnp.broadcast_to(unit_H, (1, cfg.max_len, 1, 2 * half)),
                                 jnp.arange(cfg.max_len)[None], cfg.rope_theta,
                                 model_lib.rope_inv_freq(cfg))
  cs_B1H = jnp.take(cs_1M1H[0], position_B, axis=0)
  return cs_B1H[..., :half], cs_B1H[..., half:]


def _rotate(x_BXH: Array, cos_B1h: Array, sin_B1h: Array) -> Array:
  """`model.apply_rope`'s rotation of x_BXH (X heads) by precomputed angles."""
  half = x_BXH.shape[-1] // 2
  x = x_BXH.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos_B1h - x2 * sin_B1h, x2 * cos_B1h + x1 * sin_B1h], axis=-1)
  return out.astype(x_BXH.dtype)


class _Members:
  """Moves values between rows [B, ...] and prompts' members [P, M, ...] (see `Cache`)."""

  def __init__(self, B: int, P: int, cache: Cache):
    self.mapped = cache.members_PM is not None
    self.cache = cache
    self.P = P
    self.M = cache.members_PM.shape[1] if self.mapped else B // P

  def to_members(self, x_B: Array) -> Array:
    if not self.mapped:
      return x_B.reshape((self.P, self.M) + x_B.shape[1:])
    # Row B (no member) reads zeros.
    padded = jnp.concatenate([x_B, jnp.zeros((1,) + x_B.shape[1:], x_B.dtype)])
    return jnp.take(padded, self.cache.members_PM, axis=0)

  def to_rows(self, x_PM: Array) -> Array:
    if not self.mapped:
      return x_PM.reshape((-1,) + x_PM.shape[2:])
    return x_PM[self.cache.row_prompt_B, self.cache.row_member_B]


def _attention(cfg: model_lib.ModelConfig, w_attn, h_BD: Array, rope: tuple[Array, Array],
               slot_B: Array, own_bias_BS: Array, shared_k_PKHS: Array | None,
               shared_v_PKSH: Array | None, shared_bias_PS: Array, own_k_BKHS: Array,
               own_v_BKSH: Array, members: _Members | None = None):
  """One new token per row attends to [its shared prompt | its own slots, itself included].

  `rope` is (cos, sin) of the rows' positions (`_rope_cos_sin`); `slot_B` is where each row's
  token goes in its own slots; `members` maps rows to shared prompts.

  Returns:
    (output [B, D], own keys and values with this token's written at `slot`).
  """
  N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  G = N // K
  B = h_BD.shape[0]
  dtype = jnp.dtype(cfg.dtype)
  q_BNH = jnp.einsum("BD,DNH->BNH", h_BD, w_attn["query"])
  if cfg.qkv_bias:
    q_BNH = q_BNH + w_attn["query_bias"]
  q_BKGH = (_rotate(q_BNH, *rope) * (H ** -0.5)).reshape(B, K, G, H)
  kv_B2KH = jnp.einsum("BD,DCKH->BCKH", h_BD, w_attn["key_value"])
  if cfg.qkv_bias:
    kv_B2KH = kv_B2KH + w_attn["key_value_bias"]
  k_BKH = _rotate(kv_B2KH[:, 0], *rope)
  # Written before it is read, as one scatter per cache, batched over rows (so the rows stay
  # split over devices as they are): then XLA updates the loop's buffer in place. Reading the
  # old buffer first, or a dynamic_update_slice (which XLA may fuse into each of its users),
  # makes it copy the whole cache every step.

  def write(cache_BKXY, new_BKH, axis):  # the slot axis of [K, X, Y] is 1 or 2
    return jax.vmap(lambda c, x_KH, s: jax.lax.dynamic_update_slice_in_dim(
        c, jnp.expand_dims(x_KH, axis).astype(c.dtype), s, axis=axis))(cache_BKXY, new_BKH,
                                                                        slot_B)
  own_k_BKHS = write(own_k_BKHS, k_BKH, axis=2)
  own_v_BKSH = write(own_v_BKSH, kv_B2KH[:, 1], axis=1)

  s_own_BKGS = jnp.einsum("BKGH,BKHS->BKGS", q_BKGH, own_k_BKHS,
                          preferred_element_type=jnp.float32) + own_bias_BS[:, None, None, :]
  # One softmax over both parts without concatenating them; normalised after the value
  # products, so each score tensor is read once by exp and once by its product.
  m_BKG = s_own_BKGS.max(-1)
  if shared_k_PKHS is not None:
    P = shared_k_PKHS.shape[0]
    n = members.M

    def to_rows(x_PKM):  # [P, K, n * G] -> [B, K, G]
      return members.to_rows(x_PKM.reshape(P, K, n, G).transpose(0, 2, 1, 3))

    def to_prompts(x_BKG):  # [B, K, G] -> [P, K, n * G]
      return members.to_members(x_BKG).transpose(0, 2, 1, 3).reshape(P, K, n * G)

    # The n samples' queries of prompt p are the M = n * G rows of one product.
    q_PKMH = members.to_members(q_BKGH).transpose(0, 2, 1, 3, 4).reshape(P, K, n * G, H)
    s_pre_PKMS = jnp.einsum("PKMH,PKHS->PKMS", q_PKMH, shared_k_PKHS,
                            preferred_element_type=jnp.float32) + shared_bias_PS[:, None, None]
    m_BKG = jnp.maximum(m_BKG, to_rows(s_pre_PKMS.max(-1)))
  e_own_BKGS = jnp.exp(s_own_BKGS - m_BKG[..., None])
  denom_BKG = e_own_BKGS.sum(-1)
  o_BKGH = jnp.einsum("BKGS,BKSH->BKGH", e_own_BKGS.astype(dtype), own_v_BKSH,
                      preferred_element_type=jnp.float32)
  if shared_k_PKHS is not None:
    e_pre_PKMS = jnp.exp(s_pre_PKMS - to_prompts(m_BKG)[..., None])
    denom_BKG = denom_BKG + to_rows(e_pre_PKMS.sum(-1))
    o_pre_PKMH = jnp.einsum("PKMS,PKSH->PKMH", e_pre_PKMS.astype(dtype), shared_v_PKSH,
                            preferred_element_type=jnp.float32)
    o_BKGH = o_BKGH + members.to_rows(
        o_pre_PKMH.reshape(P, K, n, G, H).transpose(0, 2, 1, 3, 4))
  out_BKGH = (o_BKGH / denom_BKG[..., None]).astype(dtype)
  # One [B, N*H] x [N*H, D] product (`split_layers` flattens the weight): with [N, H, D], XLA
  # transposed both the heads' outputs and, every step, the weight.
  out_BD = jnp.einsum("BX,XD->BD", out_BKGH.reshape(B, N * H), w_attn["out"])
  return out_BD, own_k_BKHS, own_v_BKSH


def decode_step(cfg: model_lib.ModelConfig, params, layers: list, token_B: Array,
                position_B: Array, step: Array, cache: Cache) -> tuple[Array, Cache]:
  """Runs one new token per row through the model.

  Args:
    cfg: the architecture.
    params: the decoder's "params" collection (for the embedding and final norm).
    layers: each layer's weights (`split_layers`).
    token_B: the new token of each row.
    position_B: its position (the number of prompt tokens in the cache + `step`).
    step: how many inputs each row already has in its own slots (see `Cache`): a scalar, or
      one per row [B].
    cache: from `init_cache` or the previous step.

  Returns:
    (logits [B, V] float32, the cache with this token written at slot offset + step).
  """
  dtype = jnp.dtype(cfg.dtype)
  embedding = params["embedding"]
  x_BD = jnp.take(embedding, token_B, axis=0).astype(dtype)
  if cfg.embed_scale:
    x_BD = x_BD * jnp.asarray(cfg.d_model ** 0.5, dtype)
  norm = model_lib.Norm(cfg)
  act = jax.nn.silu if cfg.mlp_activation == "silu" else functools.partial(
      jax.nn.gelu, approximate=True)

  def mlp_BD(p, h_BD):  # as model.Mlp, with gate and up in one product
    gate_up_B2F = jnp.einsum("BD,DCF->BCF", h_BD, p["wi_gate_up"])
    h_BF = nn.with_logical_constraint(act(gate_up_B2F[:, 0]) * gate_up_B2F[:, 1],
                                      ("activation_batch", "activation_mlp"))
    return jnp.einsum("BF,FD->BD", h_BF, p["wo"])

  S = cache.own_v[0].shape[2]
  B = token_B.shape[0]
  slot_S = jnp.arange(S)
  slot_B = jnp.broadcast_to(cache.offset + step, (B,)).astype(jnp.int32)  # where this token goes
  own_valid_BS = ((slot_S[None, :] < cache.own_prompt_len_B[:, None])
                  | ((slot_S[None, :] >= cache.offset) & (slot_S[None, :] <= slot_B[:, None])))
  own_bias_BS = jnp.where(own_valid_BS, 0.0, _NEG_INF).astype(jnp.float32)
  rope = _rope_cos_sin(cfg, position_B)
  shared = bool(cache.shared_k)
  members = _Members(B, cache.shared_bias_PS.shape[0], cache) if shared else None
  own_k, own_v = [], []
  for i, p in enumerate(layers):
    h_BD = norm.apply({"params": p["pre_attn_norm"]}, x_BD)
    attn_BD, k_BKHS, v_BKSH = _attention(
        cfg, p["attn"], h_BD, rope, slot_B, own_bias_BS,
        cache.shared_k[i] if shared else None, cache.shared_v[i] if shared else None,
        cache.shared_bias_PS, cache.own_k[i], cache.own_v[i], members)
    own_k.append(k_BKHS)
    own_v.append(v_BKSH)
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
  return logits_BV, cache.replace(own_k=tuple(own_k), own_v=tuple(own_v))


def split_layers(cfg: model_lib.ModelConfig, params) -> list:
  """Each layer's weights in the compute dtype, sliced out of the stacked `params["layers"]`.

  The two products that read the same input are stacked into one (key with value, gate with
  up) along a new axis, so each keeps its own sharding; the output projection is flattened to
  [N*H, D].
  """
  dtype = jnp.dtype(cfg.dtype)
  stacked = params["layers"]
  out = []
  for i in range(cfg.num_layers):
    p = jax.tree.map(lambda a, i=i: a[i], stacked)
    attn, mlp = p["attn"], p["mlp"]
    layer = {
        "pre_attn_norm": p["pre_attn_norm"],
        "attn": {"query": attn["query"].astype(dtype),
                 "out": attn["out"].reshape(-1, cfg.d_model).astype(dtype),  # [N*H, D]
                 "key_value": jnp.stack([attn["key"], attn["value"]], axis=1).astype(dtype)},
        "mlp": {"wi_gate_up": jnp.stack([mlp["wi_gate"], mlp["wi_up"]], axis=1).astype(dtype),
                "wo": mlp["wo"].astype(dtype)},
    }
    if cfg.qkv_bias:  # Qwen2
      layer["attn"]["query_bias"] = attn["query_bias"].astype(dtype)
      layer["attn"]["key_value_bias"] = jnp.stack([attn["key_bias"], attn["value_bias"]]
                                                  ).astype(dtype)
    if "pre_mlp_norm" in p:
      layer["pre_mlp_norm"] = p["pre_mlp_norm"]
    out.append(layer)
  return out
