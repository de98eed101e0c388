"""Improve: a T5X-style trainer that fine-tunes a model on decoder rows.

  trainer.py        `train(base_dir, out_dir, rows, config)`: resumable, keeps the best step
  steps.py          the train state and the pure, sharded train / eval steps (`make_train_fns`)
  batches.py        training batches with a resumable position, fixed validation batches
  optimizers.py     optimizers and learning-rate schedules (optax)
  losses.py         token cross-entropy with PaLM's z-loss
  metric_writer.py  TensorBoard scalars

Import the module you need (`from restem_jax.training import trainer`); this file imports nothing.
"""
