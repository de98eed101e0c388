"""The paper's MATH setting: N = 32 samples per problem, K = 10, top-k 40, temperature 0.7,
3 iterations, 4-shot Minerva prompt, greedy test decoding; GSM8K as the transfer evaluation.

  python -m restem_jax.data prepare --dataset=math --manual_dir=/data/MATH --data_dir=gs://B/tfds
  python -m restem_jax.main --config=configs/math_palm.py --workdir=gs://B/runs/math \\
      --config.base_checkpoint=gs://B/ckpt/base --config.data.data_dir=gs://B/tfds \\
      [--config.transfer.gsm8k.manual_dir=/data/gsm8k]

PaLM weights are not public: the base checkpoint is any model checkpoint directory (e.g. an
imported open model); its vocabulary travels with it. The `variant` picks the PaLM-shaped
architecture used when no checkpoint is given (`palm_8b`, `palm_62b`, `palm_540b`); the mesh
defaults to FSDP over all devices with 8-way model parallelism.
"""

from restem_jax import config_lib


def get_config(arg: str | None = None):
  variant = arg or "palm_62b"
  c = config_lib.base_config()
  c.model = config_lib.model_config(variant)
  c.mesh_shape = (1, -1, 8)
  c.data.kind = "math"
  c.data.inputs_length = 1536  # the 4-shot Minerva prompt + the question
  c.data.targets_length = 512
  c.sampling.max_new_tokens = 512
  c.sampling.batch_size = 512
  c.restem.num_samples = 32
  c.restem.max_per_problem = 10
  c.restem.num_iterations = 3
  c.restem.shard_problems = 256
  # Not stated in the paper: T5X-style fine-tuning defaults, selected on validation reward.
  c.finetune = config_lib.trainer_config(
      optimizer="adafactor", learning_rate=1e-4, schedule="constant", num_train_steps=2000,
      batch_size=64, eval_every=250, early_stop_patience=3, mesh_shape=(1, -1, 8))
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
