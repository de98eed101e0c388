"""Data: seqio tasks, TFDS builders, few-shot prompts, the embedded tasks, fine-tuning data.

Modules (import the one you need; this package file imports nothing heavy, so the generators
and prompts load without TensorFlow):

  arith, prog     the embedded tasks' generators (math and code), deterministic by seed
  fewshot         few-shot prompt files (restem_jax/data/*.json) and prompt assembly
  records         every data set's problems as one flat record layout, read and validated
  tfds_builders   TFDS builders that read the published files from a manual directory
  sources         where problems come from: prepared TFDS, JSONL files, the generators
  tasks           seqio Task registration for a config's paths, preprocessors, metrics
  finetune        a directory of kept samples -> a seqio Task -> decoder batches
  __main__        `python -m restem_jax.data {prepare,train_vocab,generate}`
"""
