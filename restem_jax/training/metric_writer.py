"""TensorBoard scalar summaries, written with TensorFlow's core summary ops.

`tf.summary.scalar` (and clu's writer) need the `tensorboard` package, which TensorFlow no longer
installs; `tf.summary.write` with the scalars plugin's metadata writes the very same events with
TensorFlow alone (a pinned dependency, already loaded by seqio). Only process 0 writes.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
from etils import epath


class MetricWriter:
  """Writes scalars to TensorBoard event files under `logdir` (process 0 only)."""

  def __init__(self, logdir: epath.PathLike):
    """Args:
      logdir: a directory (local or gs://); created if missing.
    """
    self.logdir = epath.Path(logdir)
    self._writer = None
    if jax.process_index() != 0:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top: only process 0 needs it
    try:
      # JAX owns the accelerators: TensorFlow must not reserve their memory.
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
      pass  # TensorFlow was initialised elsewhere already (e.g. by seqio): nothing to change.
    self._tf = tf
    self.logdir.mkdir(parents=True, exist_ok=True)
    self._writer = tf.summary.create_file_writer(str(self.logdir))
    # Plugin "scalars" with empty content is what tensorboard's own scalar summary writes.
    self._metadata = tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes one value per tag at `step`.

    Args:
      step: the training step.
      scalars: tag -> number.
    """
    if self._writer is None:
      return
    tf = self._tf
    with self._writer.as_default():
      for tag, value in scalars.items():
        tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step),
                         metadata=self._metadata)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def read_scalars(logdir: epath.PathLike) -> dict[str, list[tuple[int, float]]]:
  """Reads back the scalars of all event files under `logdir`: {tag: [(step, value), ...]}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(epath.Path(logdir).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                  else value.simple_value)
        out.setdefault(value.tag, []).append((int(event.step), number))
  return out


# --- the loop's scalars -------------------------------------------------------------------------


def loop_run_and_step(model: str) -> tuple[str, int]:
  """Where a model's loop scalars go: ("restem", 0) for base, ("restem", N) for iterN (so the
  ReST^EM curve is one line over iterations); (MODEL, 0) for any other (sft_human)."""
  if model == "base":
    return "restem", 0
  if model.startswith("iter") and model[4:].isdigit():
    return "restem", int(model[4:])
  return model, 0


def evaluation_scalars(entry: Mapping) -> dict[str, float]:
  """A summary.json evaluation entry as scalars: SPLIT/TASK/{greedy_accuracy, pass@K, maj@K}."""
  prefix = f"{entry['split']}/{entry['task']}"
  out = {f"{prefix}/greedy_accuracy": entry["accuracy"]}
  out.update({f"{prefix}/pass@{k}": v for k, v in entry.get("pass_at_k", {}).items()})
  out.update({f"{prefix}/maj@{k}": v for k, v in entry.get("maj_at_k", {}).items()})
  return out


def iteration_scalars(stats: Mapping) -> dict[str, float]:
  """A summary.json iteration entry as scalars: iteration/{samples, correct, kept,
  train_solve_rate}, and those the entry has of kept_precision (a task with a ground truth),
  problems_with_kept and duplicates_dropped (adaptive budget or dedup)."""
  names = {"num_samples": "samples", "num_correct": "correct", "num_kept": "kept",
           "train_solve_rate": "train_solve_rate", "kept_precision": "kept_precision",
           "problems_with_kept": "problems_with_kept",
           "duplicates_dropped": "duplicates_dropped"}
  return {f"iteration/{tag}": stats[key] for key, tag in names.items()
          if stats.get(key) is not None}
