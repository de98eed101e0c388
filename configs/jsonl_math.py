"""ReST^EM on your own math problems in the generic JSONL format (../shared/DESIGN.md).

  python -m restem_jax.main --config=configs/jsonl_math.py --workdir=runs/mine \\
      --config.data.train_path=train.jsonl --config.data.test_path=test.jsonl \\
      [--config.data.valid_path=valid.jsonl] [--config.base_checkpoint=CKPT_DIR] \\
      [--config.vocab=FILE]

Each line: {"id": str, "question": str, "answer": str, "solution": str (optional)}. Without a
base checkpoint, a tiny model is trained from scratch on the rows that have a `solution` (the
"human data"), then improved by ReST^EM on all training problems; without a valid file, a slice
of train is held out. With `--config.base_checkpoint`, that model (and its vocabulary) is the
base instead (e.g. an open model imported by `python -m restem_jax.convert hf-to-orbax`);
`--config.vocab` (short for `--config.vocab.path`) gives a vocabulary file instead of the
checkpoint's or a trained one.
"""

from restem_jax import config_lib


def get_config(arg: str | None = None):
  del arg
  c = config_lib.base_config()
  c.data.kind = "jsonl"
  c.model = config_lib.model_config("tiny", vocab_size=1024, max_len=512)
  c.vocab.size = 1024
  c.data.inputs_length = 192
  c.data.targets_length = 256
  c.sampling.max_new_tokens = 256
  c.base_trainer.num_train_steps = 2000
  c.finetune.num_train_steps = 500
  c.lock()
  return c
