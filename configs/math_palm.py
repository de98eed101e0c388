"""The paper's MATH setting: N = 32 samples per problem, K = 10, top-k 40, temperature 0.7,
3 iterations, 4-shot Minerva prompt, greedy test decoding; GSM8K as the transfer evaluation.

  python -m restem_jax.data prepare --dataset=math --manual_dir=/data/MATH --data_dir=gs://B/tfds
  python -m restem_jax.main --config=configs/math_palm.py --workdir=gs://B/runs/math \\
      --config.base_checkpoint=gs://B/ckpt/base --config.data.data_dir=gs://B/tfds \\
      [--config.transfer.gsm8k.manual_dir=/data/gsm8k]

PaLM weights are not public: the base checkpoint is any model checkpoint directory (e.g. an
imported open model); its vocabulary travels with it. The `variant` picks the architecture used
when no checkpoint is given: PaLM-shaped (`palm_8b`, `palm_62b`, `palm_540b`) or `llama31_8b`,
the shape `convert hf-to-orbax` gives Llama 3.1 8B (for checking an imported 8B model with
`python -m restem_jax.aot`); and with it the mesh, the microbatches and the sampling batch that
the fit check showed to fit (README "Will it fit?"). Neither changes the paper's settings.
"""

import ml_collections

from restem_jax import config_lib

# Llama 3.1 8B's config.json (the fields our decoder reads).
LLAMA31_8B = {
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}

# variant -> (mesh (data, fsdp, model), fine-tuning microbatches, sampling rows), from the
# per-chip memory `python -m restem_jax.aot` reports (README "Will it fit?"): palm_8b fits
# v5e-16 and v4-32, palm_62b v4-128, llama31_8b v5e-16 with a model axis of 4 (on FSDP alone
# the sampler's decode keeps every layer's gathered weights: 16 GB a chip); palm_540b is not
# checked.
SCALE = {
    "palm_8b": ((1, -1, 8), 8, 128),
    "llama31_8b": ((1, -1, 4), 8, 64),
    "palm_62b": ((1, -1, 8), 8, 256),
    "palm_540b": ((1, -1, 8), 1, 512),
}


def model(variant: str) -> ml_collections.ConfigDict:
  """The variant's architecture; llama31_8b rematerialises its blocks, as fine-tuning at 2048
  tokens a row needs (without, the attention scores kept for the backward pass take ~48 GB a
  v5e chip): import the real checkpoint with `convert hf-to-orbax --remat` (a run fine-tunes
  with its base checkpoint's config)."""
  if variant == "llama31_8b":
    from restem_jax.model import convert
    cfg = convert.model_config_from_hf(LLAMA31_8B).replace(remat=True)
    return ml_collections.ConfigDict(cfg.to_dict())
  return config_lib.model_config(variant)


def get_config(arg: str | None = None):
  variant = arg or "palm_62b"
  if variant not in SCALE:
    raise ValueError(f"unknown variant {variant!r} of configs/math_palm.py: {', '.join(SCALE)}")
  mesh_shape, microbatches, sampling_rows = SCALE[variant]
  c = config_lib.base_config()
  c.model = model(variant)
  c.mesh_shape = mesh_shape
  c.data.kind = "math"
  c.data.inputs_length = 1536  # the 4-shot Minerva prompt + the question
  c.data.targets_length = 512
  c.sampling.max_new_tokens = 512
  c.sampling.batch_size = sampling_rows
  c.restem.num_samples = 32
  c.restem.max_per_problem = 10
  c.restem.num_iterations = 3
  c.restem.shard_problems = 256
  # Not stated in the paper: T5X-style fine-tuning defaults, selected on validation reward.
  c.finetune = config_lib.trainer_config(
      optimizer="adafactor", learning_rate=1e-4, schedule="constant", num_train_steps=2000,
      batch_size=64, num_microbatches=microbatches, eval_every=250, early_stop_patience=3,
      mesh_shape=mesh_shape)
  c.baselines.sft_human = True
  c.trainer_valid_problems = 500
  c.eval.num_samples = 64  # the paper's maj@64 / pass@k curves
  c.eval.ks = (1, 4, 16, 64)
  c.eval.temperature = 1.0  # the paper's pass@k: temperature 1.0, top-p 0.95
  c.eval.top_k = 0
  c.eval.top_p = 0.95
  c.eval.transfer_tasks = ("gsm8k",)
  c.transfer = {"gsm8k": {"data_dir": "", "manual_dir": "", "prompt": "", "num_shots": -1}}
  c.lock()
  return c
