"""ReST^EM on GSM8K: 8-shot chain of thought, N = 32, K = 10, top-k 40, temperature 0.7.

  python -m restem_jax.main --config=configs/gsm8k.py --workdir=gs://B/runs/gsm8k \\
      --config.base_checkpoint=gs://B/ckpt/base --config.data.manual_dir=/data/gsm8k

GSM8K is read from TFDS's catalog `gsm8k` when prepared in `data.data_dir`, else from the
published train.jsonl / test.jsonl in `data.manual_dir`; a validation slice is held out of train.
"""

from restem_jax import config_lib


def get_config(arg: str | None = None):
  variant = arg or "palm_8b"
  c = config_lib.base_config()
  c.model = config_lib.model_config(variant)
  c.mesh_shape = (1, -1, 1)
  c.data.kind = "gsm8k"
  c.data.inputs_length = 1536
  c.data.targets_length = 384
  c.sampling.max_new_tokens = 384
  c.sampling.batch_size = 512
  c.restem.num_samples = 32
  c.restem.max_per_problem = 10
  c.restem.num_iterations = 3
  c.restem.shard_problems = 256
  c.finetune = config_lib.trainer_config(
      optimizer="adafactor", learning_rate=1e-4, schedule="constant", num_train_steps=1000,
      batch_size=64, eval_every=200, early_stop_patience=3, mesh_shape=(1, -1, 1))
  c.trainer_valid_problems = 300
  c.eval.num_samples = 32
  c.eval.ks = (1, 4, 16, 32)
  c.lock()
  return c
