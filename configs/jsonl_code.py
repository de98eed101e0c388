"""ReST^EM on your own code problems in a generic JSONL code format (README "Running your own").

  python -m restem_jax.main --config=configs/jsonl_code.py --workdir=runs/mycode \\
      --config.data.train_path=train.jsonl --config.data.test_path=test.jsonl \\
      [--config.data.valid_path=valid.jsonl] [--config.base_checkpoint=CKPT_DIR]

One JSON object a line, in one of two styles (one style for all three files; parquet files with
these columns work too):
  HumanEval style  {"task_id": str, "prompt": str (signature + docstring), "test": str defining
                   check(candidate), "entry_point": str, "canonical_solution": str (optional:
                   the function body, the human data)}
  MBPP style       {"task_id": str|int, "text": str (the description), "code": str (optional:
                   a reference program, the human data), "test_list": [assert str, ...],
                   "test_setup_code": str (optional)}
An MBPP-style problem is shown as its description and first test in Python comments (the test
shows the function's name and arguments) and the model writes the whole program; its asserts
then run against that program, like a HumanEval check, in the OS sandbox (bubblewrap or
unshare: the run refuses to start without one). Rows with a reference solution train the
from-scratch base (which is then also the `sft_human` baseline: that one is off); ReST^EM samples
every training problem.

As in configs/jsonl_math.py, sizes set to 0 (AUTO) are derived from the data before any training
(`restem_jax.data.fit`): vocabulary, the model's vocab_size and max_len, prompt and solution
lengths, max_new_tokens, the base model's steps; prompts are 0-shot so they stay short. With
`--config.base_checkpoint` the model and vocabulary come from it. `:smoke` is the same loop in
a minute or two (tests).
"""

from restem_jax import config_lib

AUTO = 0  # restem_jax.data.fit.AUTO: derive from the data


def get_config(arg: str | None = None):
  variant = arg or "default"
  if variant not in ("default", "smoke"):
    raise ValueError(f"unknown variant {variant!r} of configs/jsonl_code.py: default or smoke")
  c = config_lib.base_config()
  c.data.kind = "jsonl_code"
  c.data.num_shots = 0
  c.data.pack = True
  c.vocab.size = AUTO
  # The code demo's ~1M-parameter decoder (configs/demo_code.py); its vocab_size follows the
  # vocabulary trained on the data (vocab.size AUTO).
  c.model = config_lib.model_config("tiny", max_len=AUTO, d_model=128, head_dim=32, d_ff=512)
  c.data.inputs_length = AUTO
  c.data.targets_length = AUTO
  c.sampling.max_new_tokens = AUTO
  c.sampling.batch_size = 256
  c.base_trainer.update(optimizer="adamw", learning_rate=3e-3, schedule="cosine",
                        warmup_steps=50, num_train_steps=AUTO, eval_every=200)
  c.finetune.update(optimizer="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=20,
                    num_train_steps=300, eval_every=100)
  # From scratch, the base already is the model trained on the human solutions.
  c.baselines.sft_human = False
  c.restem.num_iterations = 3
  c.restem.num_samples = 32
  c.eval.num_samples = 8
  c.eval.ks = (1, 4, 8)
  c.eval.sampled_problems = 100
  if variant == "smoke":
    c.model = config_lib.model_config("tiny", max_len=AUTO, num_layers=2, d_model=64,
                                      num_heads=2, head_dim=32, d_ff=128)
    c.base_trainer.update(num_train_steps=150, warmup_steps=5, eval_every=150, batch_size=16)
    c.finetune.update(num_train_steps=10, warmup_steps=2, eval_every=10, batch_size=16)
    c.restem.update(num_iterations=1, num_samples=2, max_per_problem=1, shard_problems=16)
    c.trainer_valid_problems = 4
    c.eval.update(splits=("test",), num_samples=2, ks=(1, 2), sampled_problems=4)
  c.lock()
  return c
