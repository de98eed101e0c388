"""`make demo`: ReST^EM on the embedded code task (`prog`), a tiny model, sandboxed tests.

  make demo   # = python -m restem_jax.main --config=configs/demo_code.py --workdir=runs/demo
  python -m restem_jax.main --config=configs/demo_code.py:smoke --workdir=/tmp/smoke_code

Small list and string transforms of two to four stages, judged by running their unit tests in the
OS sandbox (bubblewrap or unshare; the run refuses to start without one). 1000 training problems
carry unit tests; the first 200 also carry a reference ("human") solution, which is all the base
model and `sft_human` learn from. ReST^EM samples all 1000. The budget is sized for about 15
minutes on two CPU cores. Measured results are in README.md ("What `make demo` does").
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
  # With 200 reference solutions the base model solves a minority of test problems greedily
  # (300 solutions: about half), while 32 samples solve most problems at least once.
  c.data.human_solutions = 200
  c.data.pack = True
  c.data.knobs = config_lib.embedded_task_config("prog")
  c.vocab.size = 512
  # The same ~1M-parameter model as configs/demo.py; prompts reach 112 tokens, bodies 92.
  c.model = config_lib.model_config("tiny", vocab_size=512, max_len=224, d_model=128,
                                    head_dim=32, d_ff=512)
  c.data.inputs_length = 128
  c.data.targets_length = 96
  c.sampling.max_new_tokens = 96
  c.sampling.batch_size = 256
  # Training steps are the demo's largest cost (about 2 CPU-seconds each). After 200 steps on the
  # 200 solutions the base writes well-formed programs and solves about 28% of the test problems
  # greedily (400 steps: about 40%); its samples solve many more.
  c.base_trainer.num_train_steps = 200
  c.base_trainer.learning_rate = 3e-3
  c.base_trainer.warmup_steps = 30
  c.base_trainer.eval_every = 100
  # sft_human and every iteration: the same budget and recipe, always from the base.
  c.finetune.update(optimizer="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=10,
                    num_train_steps=100, eval_every=50)
  # One iteration of N = 8 samples per problem (the paper: 32-64, 3 iterations) fits the
  # 15-minute budget on two cores: sampling and judging 8000 programs, then a fine-tuning as
  # long as sft_human's. More: `--config.restem.num_iterations=3 --config.restem.num_samples=32`.
  c.restem.num_samples = 8
  c.restem.num_iterations = 1
  c.eval.num_samples = 4
  c.eval.ks = (1, 4)
  c.eval.sampled_problems = 100
  if variant == "smoke":
    c.data.sizes = {"train": 32, "valid": 8, "test": 16}
    c.data.human_solutions = 0  # all 32
    # One or two stages: short rows for the smoke model.
    c.data.knobs = config_lib.embedded_task_config("prog", min_stages=1, max_stages=2)
    c.vocab.size = 384
    c.model = config_lib.model_config("tiny", vocab_size=384, max_len=192, num_layers=2,
                                      d_model=64, num_heads=2, head_dim=32, d_ff=128)
    c.data.inputs_length = 128  # the smaller vocabulary spells prompts in more pieces
    c.data.targets_length = 64
    c.sampling.max_new_tokens = 64
    # Long enough that samples pass some training problems' tests, so the iteration trains.
    c.base_trainer.num_train_steps = 300
    c.base_trainer.learning_rate = 3e-3
    c.base_trainer.warmup_steps = 5
    c.base_trainer.eval_every = 300
    c.finetune.num_train_steps = 10
    c.finetune.warmup_steps = 2
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
