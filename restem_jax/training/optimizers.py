"""Optimizers and learning-rate schedules for the trainer (optax).

Adafactor is PaLM's optimizer (factored second moments, update clipping, no momentum by
default); AdamW is the usual choice for open models. Both get the schedule and an optional
global-norm gradient clip from the same flat trainer config (`trainer.default_config()`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("constant", "cosine", "rsqrt")


def make_schedule(config: ml_collections.ConfigDict) -> Schedule:
  """The learning rate as a function of the optimizer's update count (0 for the first update).

  All schedules warm up linearly over `warmup_steps`, reaching `learning_rate` at the end of it;
  the warm-up counts updates from 1, so the very first update already moves the weights.
    constant: flat after the warm-up.
    cosine:   cosine decay from `learning_rate` to `learning_rate * cosine_end_fraction` at
              `num_train_steps`.
    rsqrt:    `learning_rate * sqrt(warmup / step)` after the warm-up (T5's inverse square
              root), i.e. continuous at the end of the warm-up.

  Args:
    config: the trainer config (fields `learning_rate`, `schedule`, `warmup_steps`,
      `num_train_steps`, `cosine_end_fraction`).

  Returns:
    A jittable `count -> learning rate` function.
  """
  lr = float(config.learning_rate)
  warmup = int(config.warmup_steps)
  total = int(config.num_train_steps)
  kind = config.schedule
  if kind not in SCHEDULES:
    raise ValueError(f"unknown schedule {kind!r}; known: {SCHEDULES}")
  end_fraction = float(config.cosine_end_fraction)

  def schedule(count):
    step = jnp.asarray(count, jnp.float32) + 1.0
    warm = jnp.minimum(1.0, step / warmup) if warmup > 0 else jnp.float32(1.0)
    if kind == "constant":
      decay = jnp.float32(1.0)
    elif kind == "cosine":
      span = max(total - warmup, 1)
      progress = jnp.clip((step - warmup) / span, 0.0, 1.0)
      decay = end_fraction + (1.0 - end_fraction) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    else:  # rsqrt
      decay = jnp.sqrt(max(warmup, 1) / jnp.maximum(step, max(warmup, 1)))
    return lr * warm * decay

  return schedule


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, Schedule]:
  """The optax optimizer of the trainer config, with its schedule and gradient clipping.

  Args:
    config: the trainer config (`optimizer`, schedule fields, `clip_grad_norm` (0: off),
      `weight_decay`, `adam_b1/b2/eps`, `adafactor_*`).

  Returns:
    (gradient transformation, learning-rate schedule): the schedule is returned so the train
    step can log the rate that the update used.
  """
  schedule = make_schedule(config)
  name = config.optimizer
  if name == "adamw":
    tx = optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                     weight_decay=config.weight_decay)
  elif name == "adafactor":
    # optax adds Adafactor's decay after the learning-rate scaling, so it would be an absolute
    # per-step rate; scheduling it as weight_decay * lr makes one `weight_decay` field mean the
    # same decoupled decay as AdamW's (param -= lr * weight_decay * param).
    wd = float(config.weight_decay)
    tx = optax.adafactor(
        schedule,
        decay_rate=config.adafactor_decay_rate,
        multiply_by_parameter_scale=config.adafactor_parameter_scale,
        clipping_threshold=config.adafactor_clipping_threshold or None,
        momentum=config.adafactor_momentum or None,
        factored=config.adafactor_factored,
        weight_decay_rate=(lambda count: wd * schedule(count)) if wd else None,
    )
  else:
    raise ValueError(f"unknown optimizer {name!r}; known: {OPTIMIZERS}")
  if config.clip_grad_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.clip_grad_norm), tx)
  return tx, schedule
