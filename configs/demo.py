"""The embedded math demo (`make demo-math`): ReST^EM on `arith` with a tiny from-scratch model.

  make demo-math   # = python -m restem_jax.main --config=configs/demo.py --workdir=runs/demo_math
  python -m restem_jax.main --config=configs/demo.py:smoke --workdir=/tmp/smoke   # < 2 minutes

A tiny model is trained from scratch on the worked ("human") solutions of 1000 of the 2000
training problems, then improved by 3 ReST^EM iterations over all 2000 (N = 32 samples per
problem, K = 10 kept, top-k 40, temperature 0.7), beside the `sft_human` baseline with the same
fine-tuning budget. Measured results are in README.md ("The math demo").
"""

from restem_jax import config_lib


def get_config(arg: str | None = None):
  variant = arg or "default"
  if variant not in ("default", "smoke"):
    raise ValueError(f"unknown variant {variant!r} of configs/demo.py: default or smoke")
  c = config_lib.base_config()
  c.data.kind = "arith"
  c.data.seed = 0
  # 2000 training problems with answers, of which the first 1000 also have a worked ("human")
  # solution: the base model and sft_human learn from those; ReST^EM samples all 2000.
  c.data.sizes = {"train": 2000, "valid": 100, "test": 500}
  c.data.human_solutions = 1000
  c.data.pack = True
  # Two or three additions and subtractions of a digit, within 0..99: a from-scratch model
  # learns the format fast and slips on carries and borrows, so samples beat greedy decoding.
  c.data.knobs = config_lib.embedded_task_config("arith", ops="+-", max_value=99)
  c.vocab.size = 384
  # The tiny preset at half width: ~1M parameters, so 3 iterations fit a laptop CPU's minutes.
  c.model = config_lib.model_config("tiny", vocab_size=384, max_len=128, d_model=128,
                                    head_dim=32, d_ff=512)
  c.data.inputs_length = 48
  c.data.targets_length = 64
  c.sampling.max_new_tokens = 64
  c.sampling.batch_size = 256
  c.base_trainer.num_train_steps = 600
  c.base_trainer.learning_rate = 3e-3
  c.base_trainer.warmup_steps = 50
  c.base_trainer.eval_every = 200
  # sft_human and every iteration: the same budget and recipe, always from the base.
  c.finetune.update(optimizer="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=20,
                    num_train_steps=300, eval_every=100)
  c.eval.num_samples = 8
  c.eval.ks = (1, 4, 8)
  c.eval.sampled_problems = 100
  if variant == "smoke":
    c.data.sizes = {"train": 48, "valid": 16, "test": 32}
    c.data.human_solutions = 32
    c.vocab.size = 320
    c.model = config_lib.model_config("tiny", vocab_size=320, max_len=192, num_layers=2,
                                      d_model=64, num_heads=2, head_dim=32, d_ff=128)
    c.data.inputs_length = 64  # the smaller vocabulary spells prompts in more pieces
    c.base_trainer.num_train_steps = 300
    c.base_trainer.learning_rate = 3e-3
    c.base_trainer.warmup_steps = 5
    c.base_trainer.eval_every = 100
    c.finetune.num_train_steps = 10
    c.finetune.warmup_steps = 2
    c.finetune.eval_every = 10
    c.base_trainer.batch_size = c.finetune.batch_size = 16
    c.restem.num_iterations = 2
    c.restem.num_samples = 4
    c.restem.max_per_problem = 2
    c.restem.shard_problems = 8
    # One or two single-digit additions: even a briefly trained model samples right answers.
    c.data.knobs = config_lib.embedded_task_config(
        "arith", min_steps=1, max_steps=2, start_digits=1, operand_digits=1, ops="+",
        max_value=30)
    c.sampling.max_new_tokens = 64
    c.trainer_valid_problems = 8
    c.eval.num_samples = 4
    c.eval.ks = (1, 4)
  c.lock()
  return c
