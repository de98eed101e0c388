"""The model's shape and architecture switches (`ModelConfig`), and the named sizes (`PRESETS`).

PaLM's choices are the defaults; the switches cover the open families a run may start from
(Llama, Mistral, Qwen2, Gemma). `transformer.py` holds the math these fields select.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The parts of the model whose products `ModelConfig.float32_products` may keep float32.
PRODUCT_PARTS = ("logits", "attention", "projections", "mlp")


def _parts(names: str) -> list[str]:
  return [n.strip() for n in names.split(",") if n.strip()]


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
  # The products' operand dtype. "": the compute dtype, as XLA multiplies it. "bfloat16" (with a
  # float32 `dtype`: mixed precision as torch's autocast does it): the model's products (but
  # float32_products') and both of their gradients take bfloat16 operands and accumulate and
  # return float32, while the activations, norms, softmax, loss and weights stay float32
  # (`transformer.product`). XLA:CPU runs them on the CPU's bfloat16 units (AVX512-BF16, AMX).
  matmul_dtype: str = ""
  # With a matmul_dtype set, the parts of the model whose products (and their gradients) take
  # float32 operands instead, comma-separated: "logits" (the unembedding), "attention" (the scores
  # and the weighted values), "projections" (query, key, value, output), "mlp". With the logits
  # float32 the demo's models scored as float32's on average over five seeds; with every
  # product bfloat16 ("") 3 to 4 points lower (BENCHMARKS.md, "Training").
  float32_products: str = "logits"
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

    if self.matmul_dtype not in ("", "bfloat16", "float32"):
      raise ValueError(f"unknown matmul_dtype {self.matmul_dtype!r}: use '' (the compute dtype), "
                       "'bfloat16' or 'float32'")

    unknown = set(_parts(self.float32_products)) - set(PRODUCT_PARTS)
    if unknown:
      raise ValueError(f"unknown float32_products {sorted(unknown)}: use a comma-separated "
                       f"subset of {', '.join(PRODUCT_PARTS)}")

  def matmul_dtype_of(self, part: str) -> str:
    """The operand dtype of `part`'s products (one of PRODUCT_PARTS): matmul_dtype, or float32
    where float32_products names the part and matmul_dtype is set."""
    if self.matmul_dtype and part in _parts(self.float32_products):
      return "float32"
    return self.matmul_dtype

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
