"""Data: problem sets in their published formats, vocabularies, seqio tasks, fine-tuning data.

Modules (import the one you need; this package file imports nothing heavy, so the generators
and prompts load without TensorFlow):

  arith, prog     the embedded tasks' generators (math and code), deterministic by seed
  fewshot         few-shot prompt files (restem_jax/data/*.json) and prompt assembly
  formats         readers of the published problem formats (HumanEval, APPS, MBPP, GSM8K, MATH,
                  the generic JSONL formats): path -> problems with an "id"
  hub             local snapshots of Hugging Face hub data sets, and parquet files
  records         every data set's problems as one flat record layout, read and validated
  vocab           vocabularies: SentencePiece models and Hugging Face tokenizer.json, as seqio's
  hf_tokenizer    tokenizer.json files: their kind, special tokens and token bytes
  fit             sizes that depend on the data: derived from it or checked against it
  truth           ground truth beyond the binary reward, for the embedded tasks
  synthetic_math  generated word problems in the generic JSONL format, for measuring a recipe
  tfds_builders   TFDS builders that read the published files from a manual directory
  sources         where problems come from: prepared TFDS, JSONL files, the generators
  tasks           seqio Task registration for a config's paths, preprocessors, metrics
  finetune        a directory of kept samples -> a seqio Task -> decoder batches
  __main__        `python -m restem_jax.data {prepare,train_vocab,generate}`
"""
