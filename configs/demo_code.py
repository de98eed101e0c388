"""The embedded code task (`prog`): ReST^EM with a tiny from-scratch model and sandboxed tests.

  python -m restem_jax.main --config=configs/demo_code.py --workdir=runs/demo_code
  python -m restem_jax.main --config=configs/demo_code.py:smoke --workdir=/tmp/smoke_code

Small list and string transforms, judged by running their unit tests in the OS sandbox
(bubblewrap or unshare; the run refuses to start without one).
"""

from restem_jax import config_lib


def get_config(arg: str | None = None):
  variant = arg or "default"
  if variant not in ("default", "smoke"):
    raise ValueError(f"unknown variant {variant!r} of configs/demo_code.py: default or smoke")
  c = config_lib.base_config()
  c.data.kind = "prog"
  c.data.seed = 0
  c.data.sizes = {"train": 1000, "valid": 100, "test": 500}
  c.data.knobs = config_lib.embedded_task_config("prog")
  c.vocab.size = 512
  c.model = config_lib.model_config("tiny", vocab_size=512, max_len=160)
  c.data.inputs_length = 96
  c.data.targets_length = 64
  c.sampling.max_new_tokens = 64
  c.sampling.batch_size = 256
  c.base_trainer.num_train_steps = 800
  c.base_trainer.warmup_steps = 50
  c.base_trainer.eval_every = 200
  c.finetune.num_train_steps = 200
  c.finetune.eval_every = 100
  c.eval.num_samples = 8
  c.eval.ks = (1, 4, 8)
  c.eval.sampled_problems = 100
  if variant == "smoke":
    c.data.sizes = {"train": 32, "valid": 8, "test": 16}
    c.vocab.size = 384
    c.model = config_lib.model_config("tiny", vocab_size=384, max_len=160, num_layers=2,
                                      d_model=64, num_heads=2, head_dim=32, d_ff=128)
    c.base_trainer.num_train_steps = 30
    c.base_trainer.warmup_steps = 5
    c.base_trainer.eval_every = 30
    c.finetune.num_train_steps = 10
    c.finetune.eval_every = 10
    c.base_trainer.batch_size = c.finetune.batch_size = 16
    c.restem.num_iterations = 1
    c.restem.num_samples = 4
    c.restem.max_per_problem = 2
    c.restem.shard_problems = 16
    c.trainer_valid_problems = 4
    c.eval.num_samples = 2
    c.eval.ks = (1, 2)
    c.eval.sampled_problems = 8
  c.lock()
  return c
