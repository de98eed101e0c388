"""A PaLM-style decoder-only Transformer in Flax linen, with a KV cache for sampling.

PaLM's choices are the defaults: parallel attention + MLP block, SwiGLU, multi-query attention,
rotary embeddings, tied input/output embeddings, LayerNorm without bias, no biases anywhere. Config
switches cover the open families that a run may start from instead (Llama, Mistral, Qwen2, Gemma):
sequential block, grouped-query or multi-head K/V, RMSNorm, untied embeddings, GeGLU, head_dim
independent of d_model, RoPE theta and scaling, query/key/value biases. `convert.py` imports and
exports their Hugging Face checkpoints.

Every parameter and main activation carries logical axis names (T5X style); `partitioning.py`
maps them to the mesh. Shape letters used in names and einsums:
  B batch, L new tokens, S cache slots, D d_model, F d_ff, V vocab,
  N query heads, K key/value heads, G query heads per K/V head (N = K * G), H head dim.

The cache is kept outside the module as a plain pytree (`init_cache`, `update_cache`). A call
never copies it: attention reads the old slots and the new tokens' keys/values as two parts of one
softmax, and returns the new keys/values for the caller to write. That lets a sampler prefill a
prompt once and share its cache between samples, and keeps the decode step free of cache copies.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Cache = dict[str, Array]  # {"k": [layers, B, S, K, H], "v": [layers, B, S, K, H]}

_NEG_INF = -1e30  # finite, so a fully masked row gives zeros and not NaN


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the decoder. Frozen and hashable, so it can be a static jit argument."""

  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  d_ff: int
  parallel_block: bool = True  # PaLM: y = x + attn(norm(x)) + mlp(norm(x))
  norm: str = "layernorm"  # "layernorm" (no bias, PaLM) or "rmsnorm" (Llama, Gemma)
  norm_eps: float = 1e-6
  norm_scale_plus_one: bool = False  # Gemma stores w and scales by (1 + w)
  tied_embeddings: bool = True
  scale_tied_logits: bool = True  # PaLM/T5X divide tied logits by sqrt(d_model); Llama does not
  embed_scale: bool = False  # Gemma multiplies embeddings by sqrt(d_model)
  embed_init_std: float = 1.0
  mlp_activation: str = "silu"  # gate activation: "silu" (SwiGLU) or "gelu" (GeGLU, tanh approx)
  rope_theta: float = 10_000.0
  # Context extension by rescaled RoPE frequencies: "none", "linear" (positions / factor) or
  # "llama3" (Llama 3.1: low frequencies / factor, high ones kept, a smooth ramp between).
  rope_scaling: str = "none"
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0  # llama3: wavelengths > original_max_len / this are scaled
  rope_high_freq_factor: float = 4.0  # llama3: wavelengths < original_max_len / this are kept
  rope_original_max_len: int = 8192  # llama3: the context length of pre-training
  qkv_bias: bool = False  # Qwen2: biases on the query, key and value projections
  max_len: int = 2048
  dtype: str = "float32"  # compute dtype: bfloat16 on TPU/GPU, float32 on CPU
  param_dtype: str = "float32"
  remat: bool = False  # rematerialise each block in the backward pass

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
    if self.norm not in ("layernorm", "rmsnorm"):
      raise ValueError(f"unknown norm {self.norm!r}: use 'layernorm' or 'rmsnorm'")
    if self.mlp_activation not in ("silu", "gelu"):
      raise ValueError(f"unknown mlp_activation {self.mlp_activation!r}: use 'silu' or 'gelu'")
    if self.rope_scaling not in ("none", "linear", "llama3"):
      raise ValueError(f"unknown rope_scaling {self.rope_scaling!r}: use 'none', 'linear' or "
                       "'llama3'")
    if self.rope_scaling_factor <= 0:
      raise ValueError(f"rope_scaling_factor must be > 0, got {self.rope_scaling_factor}")
    if self.rope_scaling == "llama3" and not (
        0 < self.rope_low_freq_factor < self.rope_high_freq_factor):
      raise ValueError("llama3 rope scaling needs 0 < rope_low_freq_factor < "
                       f"rope_high_freq_factor, got {self.rope_low_freq_factor} and "
                       f"{self.rope_high_freq_factor}")

  def replace(self, **kwargs) -> ModelConfig:
    return dataclasses.replace(self, **kwargs)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown model config keys: {sorted(unknown)}")
    return cls(**dict(d))


# Named sizes. tiny/small are the CPU shapes of the tests and benchmarks; palm_* are the PaLM
# paper's Table 1 (8.63B, 62.50B, 540.35B parameters).
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=1024, d_model=256, num_layers=4, num_heads=4, num_kv_heads=1,
                        head_dim=64, d_ff=1024, max_len=1024),
    "small": ModelConfig(vocab_size=8192, d_model=512, num_layers=8, num_heads=8, num_kv_heads=1,
                         head_dim=64, d_ff=2048, max_len=2048),
    "palm_8b": ModelConfig(vocab_size=256_000, d_model=4096, num_layers=32, num_heads=16,
                           num_kv_heads=1, head_dim=256, d_ff=4 * 4096, dtype="bfloat16",
                           remat=True),
    "palm_62b": ModelConfig(vocab_size=256_000, d_model=8192, num_layers=64, num_heads=32,
                            num_kv_heads=1, head_dim=256, d_ff=4 * 8192, dtype="bfloat16",
                            remat=True),
    "palm_540b": ModelConfig(vocab_size=256_000, d_model=18432, num_layers=118, num_heads=48,
                             num_kv_heads=1, head_dim=256, d_ff=4 * 18432, dtype="bfloat16",
                             remat=True),
}

# How to turn a PaLM-shaped config into the Llama layout (used by the benchmarks' HF peer).
LLAMA_STYLE = dict(parallel_block=False, norm="rmsnorm", scale_tied_logits=False,
                   embed_init_std=0.02)


def preset(name: str, **overrides) -> ModelConfig:
  """Returns a named model size, with `overrides` replacing fields."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)


def _kernel(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
            fan_in_axes: tuple[int, ...] = (0,)) -> Array:
  """A weight with logical axis names, fan-in scaled truncated-normal init, in param_dtype."""
  out_axes = tuple(i for i in range(len(shape)) if i not in fan_in_axes)
  init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                          in_axis=fan_in_axes, out_axis=out_axes)
  w = module.param(name, nn.with_logical_partitioning(init, axes), shape,
                   jnp.dtype(module.config.param_dtype))
  return w.astype(module.config.dtype)


def _constrain(x: Array, names: tuple[str | None, ...]) -> Array:
  return nn.with_logical_constraint(x, names)


class Norm(nn.Module):
  """LayerNorm without bias (PaLM) or RMSNorm, with a learned scale."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD: Array) -> Array:
    cfg = self.config
    init = nn.initializers.zeros if cfg.norm_scale_plus_one else nn.initializers.ones
    scale_D = self.param("scale", nn.with_logical_partitioning(init, ("norm",)),
                         (x_BLD.shape[-1],), jnp.dtype(cfg.param_dtype))
    x = x_BLD.astype(jnp.float32)
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


def apply_rope(x_BLNH: Array, positions_BL: Array, theta: float,
               inv_freq_h: Array | None = None) -> Array:
  """Rotary embeddings, in the rotate-half layout that Hugging Face checkpoints use.

  Args:
    x_BLNH: queries or keys.
    positions_BL: their positions.
    theta: the base wavelength, used when `inv_freq_h` is None.
    inv_freq_h: the frequencies (`rope_inv_freq(cfg)`, which applies the config's scaling).
  """
  half = x_BLNH.shape[-1] // 2
  if inv_freq_h is None:
    inv_freq_h = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  angles_BLh = positions_BL[..., None].astype(jnp.float32) * inv_freq_h
  sin, cos = jnp.sin(angles_BLh)[:, :, None, :], jnp.cos(angles_BLh)[:, :, None, :]
  x = x_BLNH.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BLNH.dtype)


def _bias(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...]) -> Array:
  b = module.param(name, nn.with_logical_partitioning(nn.initializers.zeros, axes), shape,
                   jnp.dtype(module.config.param_dtype))
  return b.astype(module.config.dtype)


class Attention(nn.Module):
  """Multi-query / grouped-query / multi-head attention over an optional cache."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, positions_BL, self_mask_BLL, cache_k_BSKH, cache_v_BSKH,
               cache_mask_BLS):
    cfg = self.config
    N, K, H, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model
    w_q_DNH = _kernel(self, "query", (D, N, H), ("embed", "heads", "kv"))
    w_k_DKH = _kernel(self, "key", (D, K, H), ("embed", "kv_heads", "kv"))
    w_v_DKH = _kernel(self, "value", (D, K, H), ("embed", "kv_heads", "kv"))
    w_o_NHD = _kernel(self, "out", (N, H, D), ("heads", "kv", "embed"), fan_in_axes=(0, 1))
    q_BLNH = jnp.einsum("BLD,DNH->BLNH", x_BLD, w_q_DNH)
    k_BLKH = jnp.einsum("BLD,DKH->BLKH", x_BLD, w_k_DKH)
    v_BLKH = jnp.einsum("BLD,DKH->BLKH", x_BLD, w_v_DKH)
    if cfg.qkv_bias:
      q_BLNH = q_BLNH + _bias(self, "query_bias", (N, H), ("heads", "kv"))
      k_BLKH = k_BLKH + _bias(self, "key_bias", (K, H), ("kv_heads", "kv"))
      v_BLKH = v_BLKH + _bias(self, "value_bias", (K, H), ("kv_heads", "kv"))
    inv_freq_h = rope_inv_freq(cfg)
    q_BLNH = apply_rope(q_BLNH, positions_BL, cfg.rope_theta, inv_freq_h)
    k_BLKH = apply_rope(k_BLKH, positions_BL, cfg.rope_theta, inv_freq_h)
    q_BLNH = _constrain(q_BLNH, ("activation_batch", "activation_length", "activation_heads",
                                 "activation_kv"))

    B, L = x_BLD.shape[:2]
    G = N // K
    q_BLKGH = (q_BLNH * (H ** -0.5)).reshape(B, L, K, G, H)
    # One softmax over [old cache slots | new tokens]; the cache itself is never copied.
    logits_new = jnp.einsum("BLKGH,BMKH->BKGLM", q_BLKGH, k_BLKH,
                            preferred_element_type=jnp.float32)
    logits_new = jnp.where(self_mask_BLL[:, None, None], logits_new, _NEG_INF)
    if cache_k_BSKH is not None:
      logits_old = jnp.einsum("BLKGH,BSKH->BKGLS", q_BLKGH, cache_k_BSKH.astype(cfg.dtype),
                              preferred_element_type=jnp.float32)
      logits_old = jnp.where(cache_mask_BLS[:, None, None], logits_old, _NEG_INF)
      S = logits_old.shape[-1]
      probs = jax.nn.softmax(jnp.concatenate([logits_old, logits_new], axis=-1), axis=-1)
      probs = probs.astype(cfg.dtype)
      out_BLKGH = (jnp.einsum("BKGLS,BSKH->BLKGH", probs[..., :S],
                              cache_v_BSKH.astype(cfg.dtype))
                   + jnp.einsum("BKGLM,BMKH->BLKGH", probs[..., S:], v_BLKH))
    else:
      probs = jax.nn.softmax(logits_new, axis=-1).astype(cfg.dtype)
      out_BLKGH = jnp.einsum("BKGLM,BMKH->BLKGH", probs, v_BLKH)
    out_BLNH = out_BLKGH.reshape(B, L, N, H)
    out_BLD = jnp.einsum("BLNH,NHD->BLD", out_BLNH, w_o_NHD)
    return out_BLD, k_BLKH, v_BLKH


class Mlp(nn.Module):
  """Gated MLP: SwiGLU (PaLM, Llama) or GeGLU (Gemma)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD: Array) -> Array:
    cfg = self.config
    D, F = cfg.d_model, cfg.d_ff
    gate_BLF = jnp.einsum("BLD,DF->BLF", x_BLD, _kernel(self, "wi_gate", (D, F), ("embed", "mlp")))
    up_BLF = jnp.einsum("BLD,DF->BLF", x_BLD, _kernel(self, "wi_up", (D, F), ("embed", "mlp")))
    act = jax.nn.silu if cfg.mlp_activation == "silu" else functools.partial(
        jax.nn.gelu, approximate=True)
    h_BLF = _constrain(act(gate_BLF) * up_BLF,
                       ("activation_batch", "activation_length", "activation_mlp"))
    return jnp.einsum("BLF,FD->BLD", h_BLF, _kernel(self, "wo", (F, D), ("mlp", "embed")))


class Block(nn.Module):
  """One decoder layer; the unit that `nn.scan` stacks."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, positions_BL, self_mask_BLL, cache_mask_BLS, cache_kv):
    cfg = self.config
    cache_k, cache_v = (None, None) if cache_kv is None else cache_kv
    h_BLD = Norm(cfg, name="pre_attn_norm")(x_BLD)
    attn_BLD, k_BLKH, v_BLKH = Attention(cfg, name="attn")(
        h_BLD, positions_BL, self_mask_BLL, cache_k, cache_v, cache_mask_BLS)
    if cfg.parallel_block:
      x_BLD = x_BLD + attn_BLD + Mlp(cfg, name="mlp")(h_BLD)
    else:
      x_BLD = x_BLD + attn_BLD
      x_BLD = x_BLD + Mlp(cfg, name="mlp")(Norm(cfg, name="pre_mlp_norm")(x_BLD))
    x_BLD = _constrain(x_BLD, ("activation_batch", "activation_length", "activation_embed"))
    return x_BLD, (k_BLKH, v_BLKH)


class Decoder(nn.Module):
  """The language model: tokens -> logits, and the new tokens' keys/values for the cache."""

  config: ModelConfig
  # Layers per iteration of the layer loop (`nn.scan`'s unroll): 1 keeps a loop (small programs,
  # fast compiles); num_layers unrolls it, which XLA:CPU runs faster in training (no stacked
  # residual buffers to zero, slice and update). Parameters are laid out the same either way.
  scan_unroll: int = 1

  @nn.compact
  def __call__(self, tokens_BL: Array, positions_BL: Array | None = None,
               segment_ids_BL: Array | None = None, cache: Cache | None = None
               ) -> tuple[Array, Cache]:
    """Runs the model on L new tokens per row.

    Args:
      tokens_BL: int token ids.
      positions_BL: position of each token; defaults to 0..L-1. With a cache, row b's new tokens
        must sit at consecutive positions starting at the number of slots already filled.
      segment_ids_BL: for packed training rows: tokens attend only within their segment.
      cache: keys/values of earlier tokens, [layers, B, S, K, H] each (see `init_cache`). Slot s
        holds position s; a new token at position p attends to slots s < its row's first new
        position and to the new tokens at positions <= p.

    Returns:
      (logits [B, L, V] in float32, {"k", "v": [layers, B, L, K, H]} for `update_cache`).
    """
    cfg = self.config
    B, L = tokens_BL.shape
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    positions_BL = positions_BL.astype(jnp.int32)

    # Masks are shared by all layers: built once here.
    self_mask_BLL = positions_BL[:, None, :] <= positions_BL[:, :, None]
    if segment_ids_BL is not None:
      self_mask_BLL &= segment_ids_BL[:, None, :] == segment_ids_BL[:, :, None]
    cache_mask_BLS = None
    if cache is not None:
      S = cache["k"].shape[2]
      start_B1 = positions_BL[:, :1]
      cache_mask_BLS = jnp.broadcast_to(
          (jnp.arange(S, dtype=jnp.int32)[None, :] < start_B1)[:, None, :], (B, L, S))

    embedding = self.param(
        "embedding", nn.with_logical_partitioning(
            nn.initializers.normal(stddev=cfg.embed_init_std), ("vocab", "embed")),
        (cfg.vocab_size, cfg.d_model), jnp.dtype(cfg.param_dtype))
    x_BLD = jnp.take(embedding, tokens_BL, axis=0).astype(cfg.dtype)
    if cfg.embed_scale:
      x_BLD = x_BLD * jnp.asarray(cfg.d_model ** 0.5, cfg.dtype)
    x_BLD = _constrain(x_BLD, ("activation_batch", "activation_length", "activation_embed"))

    block = Block
    if cfg.remat:
      block = nn.remat(Block, prevent_cse=False,
                       policy=jax.checkpoint_policies.nothing_saveable)
    stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                    in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
                    length=cfg.num_layers, unroll=max(1, min(self.scan_unroll, cfg.num_layers)),
                    metadata_params={nn.PARTITION_NAME: "layers"})
    cache_kv = None if cache is None else (cache["k"], cache["v"])
    x_BLD, (new_k, new_v) = stack(cfg, name="layers")(
        x_BLD, positions_BL, self_mask_BLL, cache_mask_BLS, cache_kv)

    x_BLD = Norm(cfg, name="final_norm")(x_BLD)
    if cfg.tied_embeddings:
      logits_BLV = jnp.einsum("BLD,VD->BLV", x_BLD, embedding.astype(cfg.dtype),
                              preferred_element_type=jnp.float32)
      if cfg.scale_tied_logits:
        logits_BLV = logits_BLV * (cfg.d_model ** -0.5)
    else:
      unembed_DV = _kernel(self, "unembed", (cfg.d_model, cfg.vocab_size), ("embed", "vocab"))
      logits_BLV = jnp.einsum("BLD,DV->BLV", x_BLD, unembed_DV,
                              preferred_element_type=jnp.float32)
    logits_BLV = _constrain(logits_BLV,
                            ("activation_batch", "activation_length", "activation_vocab"))
    return logits_BLV, {"k": new_k, "v": new_v}


CACHE_AXES = ("layers", "cache_batch", "cache_length", "cache_kv_heads", "kv")


def init_cache(config: ModelConfig, batch: int, length: int, dtype=None) -> Cache:
  """An empty cache of `length` slots for `batch` rows."""
  shape = (config.num_layers, batch, length, config.num_kv_heads, config.head_dim)
  dtype = jnp.dtype(dtype or config.dtype)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def update_cache(cache: Cache, new_kv: Cache, start_B: Array) -> Cache:
  """Writes new keys/values of each row into slots start_B[b] .. start_B[b] + L - 1.

  The caller keeps start_B + L <= S: `dynamic_update_slice` clamps out-of-range starts.
  """
  def write(c_LyrBSKH, n_LyrBLKH):
    per_row = jax.vmap(lambda c, n, s: jax.lax.dynamic_update_slice_in_dim(c, n, s, axis=1),
                       in_axes=(1, 1, 0), out_axes=1)
    return per_row(c_LyrBSKH, n_LyrBLKH.astype(c_LyrBSKH.dtype), start_B.astype(jnp.int32))
  return {"k": write(cache["k"], new_kv["k"]), "v": write(cache["v"], new_kv["v"])}


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
