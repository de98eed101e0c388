"""ReST^EM on your own math problems in the generic JSONL format (../shared/DESIGN.md).

  python -m restem_jax.main --config=configs/jsonl_math.py --workdir=runs/mine \\
      --config.data.train_path=train.jsonl --config.data.test_path=test.jsonl \\
      [--config.data.valid_path=valid.jsonl] [--config.base_checkpoint=CKPT_DIR] \\
      [--config.vocab=FILE]

Each line: {"id": str, "question": str, "answer": str, "solution": str (optional)}. Without a
base checkpoint, a small model is trained from scratch on the rows that have a `solution` (the
"human data"), then improved by ReST^EM on all training problems; without a valid file, a slice
of train is held out. With `--config.base_checkpoint`, that model (and its vocabulary) is the
base instead (e.g. an open model imported by `python -m restem_jax.convert hf-to-orbax`);
`--config.vocab` (short for `--config.vocab.path`) gives a vocabulary file instead of the
checkpoint's or a trained one.

The default is a laptop recipe: a ~1M-parameter decoder that a 2-core CPU trains in minutes.
Sizes set to 0 are derived from the data before any training (`restem_jax.data.fit`): the
vocabulary (from the training texts), the model's vocab_size and max_len, the prompt and
solution lengths of fine-tuning rows, max_new_tokens (from the human solutions' lengths), the
base model's steps (epochs over the human solutions) and N, the samples per problem (as many as
a fixed decoding budget allows: 8 for 3000 short word problems); both counts are capped so a
large data set cannot run for hours. A size given explicitly is checked against the data.
Where the worked solutions are chains of equations over the question's numbers ("6 * 8 = 48.
47 + 48 = 95."), the base also trains on number variants of them and on a drill of their
equations (`restem_jax.data.variants`, `data.solution_variants`), for the whole base token
budget; where they are not (LaTeX, prose), that is off, said in one log line. Where they write
`A op B = C` equations, the from-scratch model also samples with a calculator
(`restem_jax.sampling.calculator`, `sampling.calculator`): the value it writes after each such
`=` is exact, as GSM8K's calculator annotations were; it still chooses every equation and writes
the final answer itself. README "A laptop recipe for your own math data" has the figures. `:smoke` is the same loop
shrunk for a few dozen problems (about 100 CPU-seconds).
"""

from restem_jax import config_lib

AUTO = 0  # restem_jax.data.fit.AUTO: derive from the data


def get_config(arg: str | None = None):
  variant = arg or "default"
  if variant not in ("default", "smoke"):
    raise ValueError(f"unknown variant {variant!r} of configs/jsonl_math.py: default or smoke")
  c = config_lib.base_config()
  c.data.kind = "jsonl"
  c.data.pack = True
  c.vocab.size = AUTO
  # The demo's ~1M-parameter decoder (half the tiny preset's width); its vocab_size follows the
  # vocabulary trained on the data (vocab.size AUTO).
  c.model = config_lib.model_config("tiny", max_len=AUTO, d_model=128, head_dim=32, d_ff=512)
  c.data.inputs_length = AUTO
  c.data.targets_length = AUTO
  # From scratch, the base also trains on number variants of the worked solutions
  # (restem_jax.data.variants; AUTO: fit.BASE_EPOCHS - 1 per solution, off with a log line
  # where the solutions are not equation chains); -1 turns them off.
  c.data.solution_variants = AUTO
  c.sampling.max_new_tokens = AUTO
  # From scratch, where the worked solutions write `A op B = C`: the value after each "=" the
  # model writes is exact (restem_jax/sampling/calculator.py), so a model that has learnt which
  # numbers to combine, but not yet multi-digit arithmetic, gets rewards; -1 turns it off.
  c.sampling.calculator = AUTO
  c.sampling.batch_size = 256
  c.base_trainer.update(optimizer="adamw", learning_rate=3e-3, schedule="cosine",
                        warmup_steps=50, num_train_steps=AUTO, eval_every=300)
  c.finetune.update(optimizer="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=10,
                    num_train_steps=120, eval_every=60)
  # From scratch, the base already is the model trained on the human solutions, so sft_human
  # would only train it further on them; with a base checkpoint, --config.baselines.sft_human=True
  # adds that baseline.
  c.baselines.sft_human = False
  # Checkpoints are chosen by greedy accuracy on validation problems: near a weak base's few
  # percent, 100 problems cannot tell checkpoints apart, so use up to 300 (10% of 3000).
  c.trainer_valid_problems = 300
  c.restem.num_iterations = 3
  c.restem.num_samples = AUTO  # N: 4 to 32, as the data's size lets a Generate step fit budget
  c.eval.splits = ("test",)
  c.eval.num_samples = 8
  c.eval.ks = (1, 4, 8)
  c.eval.sampled_problems = 100
  if variant == "smoke":
    c.model = config_lib.model_config("tiny", max_len=AUTO, num_layers=2,
                                      d_model=64, num_heads=2, head_dim=32, d_ff=128)
    c.base_trainer.update(num_train_steps=200, warmup_steps=5, eval_every=100, batch_size=16)
    c.finetune.update(num_train_steps=10, warmup_steps=2, eval_every=10, batch_size=16)
    c.restem.update(num_iterations=1, num_samples=4, max_per_problem=2, shard_problems=8)
    c.trainer_valid_problems = 8
    c.eval.update(num_samples=4, ks=(1, 4), sampled_problems=8)
  c.lock()
  return c
