"""One decode step whose attention reads each prompt once for all of its samples.

A KV cache with one row per sample holds, for N samples of a prompt, N copies of the prompt's
keys and values, and every step reads all of them: for a 400-token few-shot prompt and 32 samples, most of a step's
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

The layer math is the model's own (`model.embed`, `norm`, `qkv`, `attend`, `attention_out`,
`mlp`, `block`, `unembed`: the functions `model.Decoder` and the prefill `model.prompt_kv`
run); this module holds only the cache: its layout, the slot writes, the masks of the two
parts and the map from rows to shared prompts. `tests/model/test_decode_step.py` checks the steps
against `Decoder` for each architecture switch.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from restem_jax import model as model_lib

Array = jax.Array

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
    bias_PS = jnp.where(jnp.arange(L)[None, :] < lengths_P[:, None], 0.0, model_lib.NEG_INF)
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


def _rope_cos_sin(cfg: model_lib.ModelConfig, position_B: Array) -> tuple[Array, Array]:
  """cos and sin [B, 1, H/2] of each row's rotary angles, as `model.rope_cos_sin` makes them.

  Looked up in a table of every position's angles, which depends on no input (XLA computes it
  once, outside the decode loop): inside each rotation XLA evaluated them for every head,
  layer and element, every step. The table comes from `model.rotate` itself, applied to the
  vector [1, .., 1, 0, .., 0], whose rotation is [cos | sin]: so it follows its frequencies.
  """
  half = cfg.head_dim // 2
  unit_H = jnp.concatenate([jnp.ones((half,), jnp.float32), jnp.zeros((half,), jnp.float32)])
  cs_1M1H = model_lib.rotate(jnp.broadcast_to(unit_H, (1, cfg.max_len, 1, 2 * half)),
                             *model_lib.rope_cos_sin(jnp.arange(cfg.max_len)[None],
                                                     model_lib.rope_inv_freq(cfg)))
  cs_B1H = jnp.take(cs_1M1H[0], position_B, axis=0)
  return cs_B1H[..., :half], cs_B1H[..., half:]


class _SharedPrompts:
  """The shared prompts' layout in `model.attend` (a `model.KV` group; see `Cache`).

  Rows [B, K, G, ...] <-> prompts [P, K, M * G, ...]: the queries of prompt p's M member rows
  are the M * G rows of one product with its keys.
  """

  def __init__(self, B: int, cache: Cache):
    self.mapped = cache.members_PM is not None
    self.cache = cache
    self.P = cache.shared_bias_PS.shape[0]
    self.M = cache.members_PM.shape[1] if self.mapped else B // self.P

  def to_part(self, x_BKG: Array) -> Array:
    if self.mapped:  # row B (no member) reads zeros
      padded = jnp.concatenate([x_BKG, jnp.zeros((1,) + x_BKG.shape[1:], x_BKG.dtype)])
      x_PMKG = jnp.take(padded, self.cache.members_PM, axis=0)
    else:
      x_PMKG = x_BKG.reshape((self.P, self.M) + x_BKG.shape[1:])
    K, G = x_BKG.shape[1:3]
    return jnp.swapaxes(x_PMKG, 1, 2).reshape((self.P, K, self.M * G) + x_BKG.shape[3:])

  def to_rows(self, x_PKX: Array) -> Array:
    K = x_PKX.shape[1]
    G = x_PKX.shape[2] // self.M
    x_PMKG = jnp.swapaxes(x_PKX.reshape((self.P, K, self.M, G) + x_PKX.shape[3:]), 1, 2)
    if self.mapped:
      return x_PMKG[self.cache.row_prompt_B, self.cache.row_member_B]
    return x_PMKG.reshape((-1,) + x_PMKG.shape[2:])


def _write(cache_BKXY: Array, new_BKH: Array, slot_B: Array, axis: int) -> Array:
  """Writes each row's new key or value at its slot (the slot axis of [K, X, Y] is 1 or 2).

  Written before it is read, as one scatter per cache, batched over rows (so the rows stay
  split over devices as they are): then XLA updates the loop's buffer in place. Reading the old
  buffer first, or a dynamic_update_slice (which XLA may fuse into each of its users), makes it
  copy the whole cache every step.
  """
  return jax.vmap(lambda c, x_KH, s: jax.lax.dynamic_update_slice_in_dim(
      c, jnp.expand_dims(x_KH, axis).astype(c.dtype), s, axis=axis))(cache_BKXY, new_BKH, slot_B)


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
  x_BD = model_lib.embed(cfg, params["embedding"], token_B)
  S = cache.own_v[0].shape[2]
  B = token_B.shape[0]
  slot_S = jnp.arange(S)
  slot_B = jnp.broadcast_to(cache.offset + step, (B,)).astype(jnp.int32)  # where this token goes
  own_valid_BS = ((slot_S[None, :] < cache.own_prompt_len_B[:, None])
                  | ((slot_S[None, :] >= cache.offset) & (slot_S[None, :] <= slot_B[:, None])))
  own_bias_BS = jnp.where(own_valid_BS, 0.0, model_lib.NEG_INF).astype(jnp.float32)
  rope = _rope_cos_sin(cfg, position_B)
  shared = _SharedPrompts(B, cache) if cache.shared_k else None
  own_k, own_v = [], []
  for i, w in enumerate(layers):

    def attention(h_BD, w=w, i=i):
      """[the row's own slots, this token's written first | its shared prompt], one softmax."""
      q_BKGH, k_BKH, v_BKH = model_lib.qkv(cfg, w["attn"], h_BD, *rope)
      k_BKHS = _write(cache.own_k[i], k_BKH, slot_B, axis=2)
      v_BKSH = _write(cache.own_v[i], v_BKH, slot_B, axis=1)
      parts = [model_lib.KV(k_BKHS, v_BKSH, own_bias_BS[:, None, None, :], "BKGH,BKHS->BKGS",
                            "BKGS,BKSH->BKGH")]
      if shared is not None:
        parts.append(model_lib.KV(cache.shared_k[i], cache.shared_v[i],
                                  cache.shared_bias_PS[:, None, None], "PKMH,PKHS->PKMS",
                                  "PKMS,PKSH->PKMH", shared))
      out_BKGH = model_lib.attend(q_BKGH, parts, dtype, normalize_late=True,
                                  matmul_dtype=cfg.matmul_dtype_of("attention"))
      return model_lib.attention_out(cfg, w["attn"], out_BKGH), (k_BKHS, v_BKSH)

    x_BD, (k_BKHS, v_BKSH) = model_lib.block(
        cfg, x_BD, lambda name, w=w: functools.partial(model_lib.norm, cfg, w[name]["scale"]),
        attention, functools.partial(model_lib.mlp, cfg, w["mlp"]))
    own_k.append(k_BKHS)
    own_v.append(v_BKSH)
  x_BD = model_lib.norm(cfg, params["final_norm"]["scale"], x_BD)
  logits_BV = model_lib.unembed(cfg, x_BD, params["embedding"], params.get("unembed"))
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
