"""A PaLM-style decoder-only Transformer: its math once, for training, prefill and decoding.

PaLM's choices are the defaults: parallel attention + MLP block, SwiGLU, multi-query attention,
rotary embeddings, tied input/output embeddings, LayerNorm without bias, no biases anywhere. Config
switches cover the open families that a run may start from instead (Llama, Mistral, Qwen2, Gemma):
sequential block, grouped-query or multi-head K/V, RMSNorm, untied embeddings, GeGLU, head_dim
independent of d_model, RoPE theta and scaling, query/key/value biases. `convert.py` imports and
exports their Hugging Face checkpoints.

The layer math exists once, as pure functions of arrays and weights: `embed`, `norm`,
`rope_cos_sin` / `rotate`, `qkv`, `attend` (one softmax over several parts of keys/values, none
copied into another), `attention_out`, `mlp`, `block` (the residual wiring) and `unembed`; each
architecture switch lives in one of them. The Flax modules (`Norm`, `Attention`, `Mlp`, `Block`,
`Decoder`) only declare the parameters (logical axes, initialisers) and call them. Three callers:
  training  `Decoder`: whole sequences, the layers in `nn.scan`;
  prefill   `prompt_kv`: `Decoder`'s embedding, masks and `Block`s over prompts (optionally after
            a cached prefix), keeping the keys/values and skipping what only logits need;
  decoding  `decode_step.py`: one token a row against a split KV cache, on a per-layer copy of
            the weights that fuses key with value and gate with up (the functions take either).

Every parameter and main activation carries logical axis names (T5X style); `partitioning.py`
maps them to the mesh. Shape letters used in names and einsums:
  B batch, L new tokens, S cache slots, D d_model, F d_ff, V vocab,
  N query heads, K key/value heads, G query heads per K/V head (N = K * G), H head dim.
The functions take any leading axes: [B, L, ...] in training and prefill, [B, ...] in decoding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from restem_jax.model.config import ModelConfig

Array = jax.Array
Cache = dict[str, Array]  # {"k": [layers, B, S, K, H], "v": [layers, B, S, K, H]}

NEG_INF = -1e30  # finite, so a fully masked row gives zeros and not NaN


# ---------------------------------------------------------------------------------------------
# The math, as pure functions of activations and weights (the only implementation of each).


def _activation(x: Array, *trailing: str) -> Array:
  """Constrains an activation whose leading axes are the batch and, if any, the tokens."""
  leading = ("activation_batch", "activation_length")[:x.ndim - len(trailing)]
  return nn.with_logical_constraint(x, leading + trailing)


def _spelled_out(spec: str, lhs_ndim: int, rhs_ndim: int) -> tuple[str, str, str]:
  """An einsum spec "lhs,rhs->out" with each `...` replaced by letters of its own."""
  lhs, rest = spec.split(",")
  rhs, out = rest.split("->")
  free = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in spec]
  counts = [ndim - (len(term) - 3) if "..." in term else 0
            for term, ndim in ((lhs, lhs_ndim), (rhs, rhs_ndim))]
  letters = "".join(free[:max(counts)])
  # Right-aligned, as einsum broadcasts the axes that `...` stands for.
  return (lhs.replace("...", letters[len(letters) - counts[0]:]),
          rhs.replace("...", letters[len(letters) - counts[1]:]),
          out.replace("...", letters))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _narrow_product(spec: str, narrow: str, dtypes: tuple[str, str], a: Array, b: Array) -> Array:
  """einsum(spec, a, b) on `narrow` operands, accumulated and returned in float32."""
  del dtypes
  return jnp.einsum(spec, a.astype(narrow), b.astype(narrow), preferred_element_type=jnp.float32)


def _narrow_product_fwd(spec, narrow, dtypes, a, b):
  a, b = a.astype(narrow), b.astype(narrow)  # kept narrow for the gradients: half the memory
  return _narrow_product(spec, narrow, dtypes, a, b), (a, b)


def _narrow_product_bwd(spec, narrow, dtypes, residuals, g):
  """Both gradients as products of `narrow` operands accumulated in float32 (JAX's own
  transpose would multiply the float32 cotangent by a widened operand)."""
  a, b = residuals
  lhs, rhs, out = _spelled_out(spec, a.ndim, b.ndim)
  g = g.astype(narrow)
  da = jnp.einsum(f"{out},{rhs}->{lhs}", g, b, preferred_element_type=jnp.float32)
  db = jnp.einsum(f"{lhs},{out}->{rhs}", a, g, preferred_element_type=jnp.float32)
  return _summed_to(da, a.shape).astype(dtypes[0]), _summed_to(db, b.shape).astype(dtypes[1])


def _summed_to(grad: Array, shape: tuple[int, ...]) -> Array:
  """The gradient of an operand that `...` broadcast (size 1 against the other's size n):
  summed over those axes, back to the operand's shape."""
  axes = tuple(i for i, (g, s) in enumerate(zip(grad.shape, shape)) if s == 1 and g != 1)
  return grad.sum(axes, keepdims=True) if axes else grad


_narrow_product.defvjp(_narrow_product_fwd, _narrow_product_bwd)


def product(spec: str, a: Array, b: Array, matmul_dtype: str = "",
            preferred_element_type=None) -> Array:
  """`jnp.einsum(spec, a, b)` of two operands, in the precision `ModelConfig.matmul_dtype` says.

  "" (or the operands' own dtype): einsum as it is. Otherwise the operands are cast to
  matmul_dtype, and the product and both its gradients are taken on such operands with float32
  accumulation (`_narrow_product`'s custom VJP): XLA:CPU keeps a bfloat16 x bfloat16 -> float32
  product native (the CPU's bfloat16 units) but widens one whose result or operand is otherwise.
  The result is float32 where `preferred_element_type` asks for it, else the operands' dtype.
  """
  dtype = jnp.result_type(a, b)
  if not matmul_dtype or jnp.dtype(matmul_dtype) == dtype:
    return jnp.einsum(spec, a, b, preferred_element_type=preferred_element_type)
  out = _narrow_product(spec, matmul_dtype, (a.dtype.name, b.dtype.name), a, b)
  return out.astype(preferred_element_type or dtype)


def embed(cfg: ModelConfig, embedding_VD: Array, tokens: Array) -> Array:
  """The tokens' embeddings [..., D] in the compute dtype (times sqrt(d_model) for Gemma)."""
  x = jnp.take(embedding_VD, tokens, axis=0).astype(cfg.dtype)
  if cfg.embed_scale:
    x = x * jnp.asarray(cfg.d_model ** 0.5, cfg.dtype)
  return _activation(x, "activation_embed")


def norm(cfg: ModelConfig, scale_D: Array, x: Array) -> Array:
  """LayerNorm without bias (PaLM) or RMSNorm over the last axis, computed in float32.

  The result is scaled by scale_D (by 1 + scale_D with `norm_scale_plus_one`: Gemma) and
  returned in the compute dtype.
  """
  x = x.astype(jnp.float32)
  if cfg.norm == "layernorm":
    x = x - jnp.mean(x, axis=-1, keepdims=True)
  x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + cfg.norm_eps)
  scale = scale_D.astype(jnp.float32)
  if cfg.norm_scale_plus_one:
    scale = 1.0 + scale
  return (x * scale).astype(cfg.dtype)


def rope_inv_freq(cfg: ModelConfig) -> Array:
  """RoPE's rotation frequencies [H/2]: theta's, rescaled as `cfg.rope_scaling` says."""
  half = cfg.head_dim // 2
  inv_freq_h = 1.0 / (cfg.rope_theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  factor = cfg.rope_scaling_factor
  if cfg.rope_scaling == "linear":
    return inv_freq_h / factor
  if cfg.rope_scaling == "llama3":
    # Wavelengths longer than the pre-training context are stretched by `factor`, short ones
    # kept, and those in between interpolated by where the context length falls among them.
    context = cfg.rope_original_max_len
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    wavelen_h = 2 * jnp.pi / inv_freq_h
    smooth_h = (context / wavelen_h - low) / (high - low)
    ramp_h = (1 - smooth_h) * inv_freq_h / factor + smooth_h * inv_freq_h
    return jnp.where(wavelen_h < context / high, inv_freq_h,
                     jnp.where(wavelen_h > context / low, inv_freq_h / factor, ramp_h))
  return inv_freq_h


def rope_cos_sin(positions: Array, inv_freq_h: Array) -> tuple[Array, Array]:
  """cos and sin [..., 1, H/2] of the rotary angles at `positions` [...] (1: broadcast over heads)."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq_h
  sin = jnp.sin(angles)[..., None, :]
  return jnp.cos(angles)[..., None, :], sin


def rotate(x: Array, cos: Array, sin: Array) -> Array:
  """Rotary embedding of x [..., heads, H] by `rope_cos_sin`'s angles, in the rotate-half layout
  that Hugging Face checkpoints use; computed in float32, returned in x's dtype."""
  half = x.shape[-1] // 2
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def qkv(cfg: ModelConfig, w, h: Array, cos: Array, sin: Array) -> tuple[Array, Array, Array]:
  """An attention's queries, keys and values of its (normed) input h [..., D].

  Args:
    cfg: the architecture.
    w: "query" [D, N, H]; "key" and "value" [D, K, H], or "key_value" [D, 2, K, H] (one product:
      `decode_step.split_layers`); with `qkv_bias` (Qwen2) also "query_bias" [N, H] and
      "key_bias", "value_bias" [K, H] or "key_value_bias" [2, K, H].
    h: the input.
    cos, sin: `rope_cos_sin` of the tokens' positions.

  Returns:
    (queries [..., K, G, H], rotated and scaled by H**-0.5; keys [..., K, H], rotated;
    values [..., K, H]).
  """
  N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  q = product("...D,DNH->...NH", h, w["query"], cfg.matmul_dtype_of("projections"))
  if "key_value" in w:
    kv = product("...D,DCKH->...CKH", h, w["key_value"], cfg.matmul_dtype_of("projections"))
    if cfg.qkv_bias:
      q, kv = q + w["query_bias"], kv + w["key_value_bias"]
    k, v = kv[..., 0, :, :], kv[..., 1, :, :]
  else:
    k = product("...D,DKH->...KH", h, w["key"], cfg.matmul_dtype_of("projections"))
    v = product("...D,DKH->...KH", h, w["value"], cfg.matmul_dtype_of("projections"))
    if cfg.qkv_bias:
      q, k, v = q + w["query_bias"], k + w["key_bias"], v + w["value_bias"]
  q = _activation(rotate(q, cos, sin), "activation_heads", "activation_kv")
  k = rotate(k, cos, sin)
  return (q * (H ** -0.5)).reshape(q.shape[:-2] + (K, N // K, H)), k, v


class KV(NamedTuple):
  """One part of what an attention's queries read: keys and values, and the einsums that do.

  keys, values: in any layout; `scores` is the einsum "queries,keys->scores" and `mix` the
    einsum "weights,values->outputs" (the weights are laid out as the scores).
  mask: where a query may attend, broadcastable to the scores: bool, or a float32 bias to add
    (0 or NEG_INF).
  group: None when this part's queries are laid out as the other parts' (the rows). Else it
    maps between the rows and this part's layout (e.g. a prompt shared by several rows, read in
    one product): `group.to_part(x)` and `group.to_rows(x)`, over the axes before the slots.
  """

  keys: Array
  values: Array
  mask: Array
  scores: str
  mix: str
  group: Any = None


def attend(q: Array, parts: Sequence[KV], dtype, *, normalize_late: bool = False,
           matmul_dtype: str = "") -> Array:
  """Softmax attention of queries over several parts of keys/values, as one softmax.

  Args:
    q: the queries (`qkv`'s), laid out for the parts' `scores` einsums.
    parts: the keys/values: [a cached prefix, the new tokens] in training and prefill, [the row's
      own slots, its shared prompt] in a decode step. Scores are float32.
    dtype: the compute dtype.
    normalize_late: False: the weights are normalised before the value products
      (`jax.nn.softmax`, whose gradient training takes); parts must not have a `group`. True:
      after them, in float32, so each score tensor is read once by exp and once by its product
      and the division is on the [.., H] outputs, not on the [.., S] weights (one query a row:
      the decode step); the `mix` outputs must then be laid out as the scores without their
      slots, plus H. The two round differently in the last bits.
    matmul_dtype: the products' operand dtype (`ModelConfig.matmul_dtype`, `product`).

  Returns:
    The outputs in the compute dtype, laid out as the rows' `mix` einsums make them.
  """
  if not normalize_late and any(part.group is not None for part in parts):
    raise ValueError("attend: grouped parts need normalize_late=True")
  scores = []
  for part in parts:
    s = product(part.scores, q if part.group is None else part.group.to_part(q), part.keys,
                matmul_dtype, preferred_element_type=jnp.float32)
    scores.append(jnp.where(part.mask, s, NEG_INF) if part.mask.dtype == jnp.bool_
                  else s + part.mask)
  if not normalize_late:
    weights = jax.nn.softmax(scores[0] if len(scores) == 1 else jnp.concatenate(scores, -1),
                             axis=-1).astype(dtype)
    out, start = None, 0
    for part, s in zip(parts, scores):
      w = weights if len(parts) == 1 else weights[..., start:start + s.shape[-1]]
      start += s.shape[-1]
      o = product(part.mix, w, part.values, matmul_dtype)
      out = o if out is None else out + o
    return out

  def rows(part, x):
    return x if part.group is None else part.group.to_rows(x)

  def of_part(part, x):
    return x if part.group is None else part.group.to_part(x)

  m = None
  for part, s in zip(parts, scores):
    m = rows(part, s.max(-1)) if m is None else jnp.maximum(m, rows(part, s.max(-1)))
  out = denom = None
  for part, s in zip(parts, scores):
    e = jnp.exp(s - of_part(part, m)[..., None])
    d = rows(part, e.sum(-1))
    o = rows(part, product(part.mix, e.astype(dtype), part.values, matmul_dtype,
                           preferred_element_type=jnp.float32))
    out, denom = (o, d) if out is None else (out + o, denom + d)
  return (out / denom[..., None]).astype(dtype)


def attention_out(cfg: ModelConfig, w, out: Array) -> Array:
  """The output projection of `attend`'s outputs [..., K, G, H] to [..., D].

  w["out"]: [N, H, D], or [N*H, D] (`decode_step.split_layers`: one plain product).
  """
  N, H = cfg.num_heads, cfg.head_dim
  lead = out.shape[:-3]
  narrow = cfg.matmul_dtype_of("projections")
  if w["out"].ndim == 2:
    return product("...X,XD->...D", out.reshape(lead + (N * H,)), w["out"], narrow)
  return product("...NH,NHD->...D", out.reshape(lead + (N, H)), w["out"], narrow)


def mlp(cfg: ModelConfig, w, h: Array) -> Array:
  """Gated MLP of h [..., D]: SwiGLU (PaLM, Llama) or GeGLU (Gemma, tanh approximation).

  w: "wi_gate" and "wi_up" [D, F], or "wi_gate_up" [D, 2, F] (one product:
  `decode_step.split_layers`); "wo" [F, D].
  """
  if "wi_gate_up" in w:
    gate_up = product("...D,DCF->...CF", h, w["wi_gate_up"], cfg.matmul_dtype_of("mlp"))
    gate, up = gate_up[..., 0, :], gate_up[..., 1, :]
  else:
    gate = product("...D,DF->...F", h, w["wi_gate"], cfg.matmul_dtype_of("mlp"))
    up = product("...D,DF->...F", h, w["wi_up"], cfg.matmul_dtype_of("mlp"))
  act = jax.nn.silu if cfg.mlp_activation == "silu" else functools.partial(
      jax.nn.gelu, approximate=True)
  return product("...F,FD->...D", _activation(act(gate) * up, "activation_mlp"), w["wo"],
                 cfg.matmul_dtype_of("mlp"))


def block(cfg: ModelConfig, x: Array, norm_fn: Callable[[str], Callable[[Array], Array]],
          attention: Callable[[Array], tuple[Array, Any]], mlp_fn: Callable[[Array], Array]
          ) -> tuple[Array, Any]:
  """One decoder layer's residual wiring: PaLM's parallel block or the sequential one.

  Args:
    cfg: the architecture.
    x: the layer's input [..., D].
    norm_fn: the layer's norm by name ("pre_attn_norm"; "pre_mlp_norm" when sequential).
    attention: normed input -> (output [..., D], anything else, returned as is).
    mlp_fn: normed input -> output [..., D].

  Returns:
    (the layer's output, what `attention` returned beside its output).
  """
  h = norm_fn("pre_attn_norm")(x)
  attn, extra = attention(h)
  if cfg.parallel_block:  # PaLM: y = x + attn(norm(x)) + mlp(norm(x))
    x = x + attn + mlp_fn(h)
  else:
    x = x + attn
    x = x + mlp_fn(norm_fn("pre_mlp_norm")(x))
  return _activation(x, "activation_embed"), extra


def unembed(cfg: ModelConfig, x: Array, embedding_VD: Array, unembed_DV: Array | None = None
            ) -> Array:
  """Logits [..., V] in float32 of the final-normed x: tied to the embedding (divided by
  sqrt(d_model) with `scale_tied_logits`: PaLM, T5X) or through the untied unembed_DV."""
  narrow = cfg.matmul_dtype_of("logits")
  if cfg.tied_embeddings:
    logits = product("...D,VD->...V", x, embedding_VD.astype(cfg.dtype), narrow,
                     preferred_element_type=jnp.float32)
    if cfg.scale_tied_logits:
      logits = logits * (cfg.d_model ** -0.5)
  else:
    logits = product("...D,DV->...V", x, unembed_DV.astype(cfg.dtype), narrow,
                     preferred_element_type=jnp.float32)
  return _activation(logits, "activation_vocab")


def masks(positions_BL: Array, segment_ids_BL: Array | None = None,
          cache_len: int | None = None) -> tuple[Array, Array | None]:
  """The masks all layers share: (self [B, L, L], cache [B, L, S] or None without a cache).

  A token attends to the new tokens at positions <= its own (within its segment, for packed
  rows), and to the cache slots before its row's first new position (slot s holds position s).
  """
  self_mask_BLL = positions_BL[:, None, :] <= positions_BL[:, :, None]
  if segment_ids_BL is not None:
    self_mask_BLL &= segment_ids_BL[:, None, :] == segment_ids_BL[:, :, None]
  if cache_len is None:
    return self_mask_BLL, None
  B, L = positions_BL.shape
  start_B1 = positions_BL[:, :1]
  return self_mask_BLL, jnp.broadcast_to(
      (jnp.arange(cache_len, dtype=jnp.int32)[None, :] < start_B1)[:, None, :], (B, L, cache_len))


def _positions(positions_BL: Array | None, B: int, L: int) -> Array:
  if positions_BL is None:
    positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
  return positions_BL.astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# The Flax modules: they declare the parameters (logical axes, initialisers) and call the math.


def _kernel(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
            fan_in_axes: tuple[int, ...] = (0,)) -> Array:
  """A weight with logical axis names, fan-in scaled truncated-normal init, in param_dtype."""
  out_axes = tuple(i for i in range(len(shape)) if i not in fan_in_axes)
  init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                          in_axis=fan_in_axes, out_axis=out_axes)
  w = module.param(name, nn.with_logical_partitioning(init, axes), shape,
                   jnp.dtype(module.config.param_dtype))
  return w.astype(module.config.dtype)


def _bias(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...]) -> Array:
  b = module.param(name, nn.with_logical_partitioning(nn.initializers.zeros, axes), shape,
                   jnp.dtype(module.config.param_dtype))
  return b.astype(module.config.dtype)


class Norm(nn.Module):
  """`norm` with a learned scale."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    init = nn.initializers.zeros if cfg.norm_scale_plus_one else nn.initializers.ones
    scale_D = self.param("scale", nn.with_logical_partitioning(init, ("norm",)),
                         (x.shape[-1],), jnp.dtype(cfg.param_dtype))
    return norm(cfg, scale_D, x)


class Attention(nn.Module):
  """Multi-query / grouped-query / multi-head attention of L new tokens over an optional cache."""

  config: ModelConfig

  @nn.compact
  def __call__(self, h_BLD, positions_BL, self_mask_BLL, cache_k_BSKH=None, cache_v_BSKH=None,
               cache_mask_BLS=None):
    """Returns (output [B, L, D], the new tokens' keys and values [B, L, K, H])."""
    cfg = self.config
    N, K, H, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    w = {"query": _kernel(self, "query", (D, N, H), ("embed", "heads", "kv")),
         "key": _kernel(self, "key", (D, K, H), ("embed", "kv_heads", "kv")),
         "value": _kernel(self, "value", (D, K, H), ("embed", "kv_heads", "kv")),
         "out": _kernel(self, "out", (N, H, D), ("heads", "kv", "embed"), fan_in_axes=(0, 1))}
    if cfg.qkv_bias:
      w["query_bias"] = _bias(self, "query_bias", (N, H), ("heads", "kv"))
      w["key_bias"] = _bias(self, "key_bias", (K, H), ("kv_heads", "kv"))
      w["value_bias"] = _bias(self, "value_bias", (K, H), ("kv_heads", "kv"))
    q_BLKGH, k_BLKH, v_BLKH = qkv(cfg, w, h_BLD,
                                  *rope_cos_sin(positions_BL, rope_inv_freq(cfg)))
    parts = [KV(k_BLKH, v_BLKH, self_mask_BLL[:, None, None], "BLKGH,BMKH->BKGLM",
                "BKGLM,BMKH->BLKGH")]
    if cache_k_BSKH is not None:
      parts.insert(0, KV(cache_k_BSKH.astype(cfg.dtype), cache_v_BSKH.astype(cfg.dtype),
                         cache_mask_BLS[:, None, None], "BLKGH,BSKH->BKGLS", "BKGLS,BSKH->BLKGH"))
    out = attend(q_BLKGH, parts, cfg.dtype, matmul_dtype=cfg.matmul_dtype_of("attention"))
    return attention_out(cfg, w, out), k_BLKH, v_BLKH


class Mlp(nn.Module):
  """`mlp` with its weights."""

  config: ModelConfig

  @nn.compact
  def __call__(self, h_BLD: Array) -> Array:
    cfg = self.config
    D, F = cfg.d_model, cfg.d_ff
    w = {"wi_gate": _kernel(self, "wi_gate", (D, F), ("embed", "mlp")),
         "wi_up": _kernel(self, "wi_up", (D, F), ("embed", "mlp")),
         "wo": _kernel(self, "wo", (F, D), ("mlp", "embed"))}
    return mlp(cfg, w, h_BLD)


class Block(nn.Module):
  """One decoder layer, the unit that `nn.scan` stacks: `block` over its modules."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, positions_BL, self_mask_BLL, cache_mask_BLS, cache_kv):
    """Returns (output [B, L, D], (keys, values) [B, L, K, H] of the new tokens)."""
    cfg = self.config
    cache_k, cache_v = (None, None) if cache_kv is None else cache_kv

    def attention(h_BLD):
      out_BLD, k_BLKH, v_BLKH = Attention(cfg, name="attn")(
          h_BLD, positions_BL, self_mask_BLL, cache_k, cache_v, cache_mask_BLS)
      return out_BLD, (k_BLKH, v_BLKH)
    return block(cfg, x_BLD, lambda name: Norm(cfg, name=name), attention, Mlp(cfg, name="mlp"))


class Decoder(nn.Module):
  """The language model over whole sequences (training, evaluation, scoring)."""

  config: ModelConfig
  # Layers per iteration of the layer loop (`nn.scan`'s unroll): 1 keeps a loop (small programs,
  # fast compiles); num_layers unrolls it, which XLA:CPU runs faster in training (no stacked
  # residual buffers to zero, slice and update). Parameters are laid out the same either way.
  scan_unroll: int = 1

  @nn.compact
  def __call__(self, tokens_BL: Array, positions_BL: Array | None = None,
               segment_ids_BL: Array | None = None) -> tuple[Array, Cache]:
    """Runs the model on L tokens per row.

    Args:
      tokens_BL: int token ids.
      positions_BL: position of each token; defaults to 0..L-1.
      segment_ids_BL: for packed training rows: tokens attend only within their segment.

    Returns:
      (logits [B, L, V] in float32, {"k", "v": [layers, B, L, K, H]}: the tokens' keys/values).
    """
    cfg = self.config
    B, L = tokens_BL.shape
    positions_BL = _positions(positions_BL, B, L)
    self_mask_BLL, _ = masks(positions_BL, segment_ids_BL)
    # As an additive bias (0 or NEG_INF): XLA:CPU fuses the add into the scores' product, where a
    # bool mask costs a separate select pass over every [L, L] score tensor. The same scores
    # (s + 0 = s; s + NEG_INF rounds to NEG_INF for any |s| < 1e22) and the same gradients.
    self_bias_BLL = jnp.where(self_mask_BLL, jnp.float32(0.0), jnp.float32(NEG_INF))
    embedding = self.param(
        "embedding", nn.with_logical_partitioning(
            nn.initializers.normal(stddev=cfg.embed_init_std), ("vocab", "embed")),
        (cfg.vocab_size, cfg.d_model), jnp.dtype(cfg.param_dtype))
    x_BLD = embed(cfg, embedding, tokens_BL)

    layer = Block
    if cfg.remat:
      layer = nn.remat(Block, prevent_cse=False,
                       policy=jax.checkpoint_policies.nothing_saveable)
    stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
                    length=cfg.num_layers, unroll=max(1, min(self.scan_unroll, cfg.num_layers)),
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x_BLD, (k, v) = stack(cfg, name="layers")(x_BLD, positions_BL, self_bias_BLL, None, None)
    x_BLD = Norm(cfg, name="final_norm")(x_BLD)
    unembed_DV = None if cfg.tied_embeddings else _kernel(
        self, "unembed", (cfg.d_model, cfg.vocab_size), ("embed", "vocab"))
    return unembed(cfg, x_BLD, embedding, unembed_DV), {"k": k, "v": v}


def prompt_kv(cfg: ModelConfig, params, tokens_BL: Array, positions_BL: Array | None = None,
              cache: Cache | None = None, last_layer=None) -> Cache:
  """The prefill: keys/values [layers, B, L, K, H] of tokens_BL (after `cache`), no logits.

  `Decoder`'s embedding, masks and `Block`s, minus what only the logits need: the last layer's
  keys and values need only its input, and its attention and MLP (a layer's work for every
  prompt token) and the unembedding would only feed logits that nobody reads (each prompt's last
  token goes through the decode step instead). The layers run in a `lax.scan` that indexes the
  stacked parameters itself (running `Decoder` on a slice of the first layers copied them).

  Args:
    cfg: the architecture.
    params: the decoder's "params" collection.
    tokens_BL: int token ids.
    positions_BL: defaults to 0..L-1. After a cache, row b's tokens sit at consecutive positions
      from the number of slots it has filled.
    cache: {"k", "v"}: [layers, B, S, K, H] of earlier tokens (slot s holds position s), e.g. a
      prefix that every prompt of a batch starts with.
    last_layer: the last layer's weights in either layout that `qkv` takes (the sampler passes
      `decode_step.split_layers`'s); default: sliced out of params.
  """
  B, L = tokens_BL.shape
  positions_BL = _positions(positions_BL, B, L)
  self_mask_BLL, cache_mask_BLS = masks(
      positions_BL, cache_len=None if cache is None else cache["k"].shape[2])
  x_BLD = embed(cfg, params["embedding"], tokens_BL)

  def layer(x_BLD, i):
    w = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False),
                     params["layers"])
    cache_kv = None if cache is None else tuple(
        jax.lax.dynamic_index_in_dim(cache[name], i, keepdims=False) for name in ("k", "v"))
    return Block(cfg).apply({"params": w}, x_BLD, positions_BL, self_mask_BLL, cache_mask_BLS,
                            cache_kv)

  x_BLD, (k_lBLKH, v_lBLKH) = jax.lax.scan(layer, x_BLD, jnp.arange(cfg.num_layers - 1))
  if last_layer is None:
    last_layer = jax.tree.map(lambda a: a[-1], params["layers"])
  h_BLD = norm(cfg, last_layer["pre_attn_norm"]["scale"], x_BLD)
  _, k_BLKH, v_BLKH = qkv(cfg, last_layer["attn"], h_BLD,
                          *rope_cos_sin(positions_BL, rope_inv_freq(cfg)))
  return {"k": jnp.concatenate([k_lBLKH, k_BLKH[None].astype(k_lBLKH.dtype)]),
          "v": jnp.concatenate([v_lBLKH, v_BLKH[None].astype(v_lBLKH.dtype)])}


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
