"""The Improve step: a T5X-style trainer (train state, sharded train/eval steps, the loop).

ReST^EM fine-tunes the BASE model on the kept samples at every iteration, with a fresh optimizer,
minimising the reward-weighted NLL of the solution tokens. So the entry point, `train`, takes a
base model checkpoint directory and an output directory: a new iteration is simply a new output
directory, and re-running `train` on a directory it has already started resumes it exactly
(params, optimizer state, step, data position, RNG, best-so-far and early-stopping counters).

Layout of the output directory:
  trainer_config.json   the trainer config used
  checkpoints/          Orbax CheckpointManager: {state, meta} at each evaluation (and every
                        `checkpoint_every` steps); keeps the last `keep_last` and the best
  tensorboard/          event files: loss, accuracy, learning rate, grad norm, tokens/s, MFU,
                        validation loss and reward
  best_model/           a model checkpoint directory (`checkpoints.save`) of the best step
  train_result.json     written last; `train` on a finished directory just returns it

The steps themselves (train state, pure train / eval steps, shardings) are in `steps.py`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from etils import epath

from restem_jax import file_io
from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax.model import partitioning
from restem_jax.training import batches as data_lib
from restem_jax.training import metric_writer
from restem_jax.training.steps import (Batch, Metrics, TrainFns, evaluate_loss, flops_per_token,
                                       make_train_fns)

RewardFn = Callable[[object], float]


def default_config() -> ml_collections.ConfigDict:
  """The trainer's config schema with defaults; loop configs embed it as `config.trainer`."""
  c = ml_collections.ConfigDict()
  # Optimizer (see optimizers.py). Adafactor with parameter scaling takes a relative step size:
  # 1e-3 is T5X's fine-tuning default.
  c.optimizer = "adafactor"  # "adafactor" | "adamw"
  c.learning_rate = 1e-3
  c.schedule = "constant"  # "constant" | "cosine" | "rsqrt", each after a linear warm-up
  c.warmup_steps = 0
  c.cosine_end_fraction = 0.1  # cosine ends at this fraction of learning_rate
  c.clip_grad_norm = 1.0  # global-norm clip of the gradient; 0 turns it off
  c.weight_decay = 0.0  # decoupled: param -= lr * weight_decay * param
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  c.adafactor_decay_rate = 0.8
  c.adafactor_parameter_scale = True
  c.adafactor_clipping_threshold = 1.0  # update clipping; 0 turns it off
  c.adafactor_momentum = 0.0  # 0: none (PaLM/T5X default)
  c.adafactor_factored = True
  # Steps and batches.
  c.num_train_steps = 1000
  c.batch_size = 32  # global rows per step
  c.num_microbatches = 1  # gradient accumulation: batch_size rows in this many scan steps
  c.z_loss = 1e-4  # PaLM's auxiliary log(Z)^2 coefficient
  # Layers per iteration of the model's layer loop in the compiled steps (same results):
  # 0 = auto (all layers unrolled on CPU, a loop elsewhere); see train_steps.scan_unroll.
  c.scan_unroll = 0
  # Evaluation, best checkpoint, early stopping.
  c.eval_every = 100  # 0: evaluate only after the last step
  c.early_stop_patience = 0  # stop after this many evaluations without improvement; 0: never
  # Checkpoints.
  c.keep_last = 2
  c.checkpoint_every = 0  # extra train-state saves between evaluations; 0: at evaluations only
  c.async_checkpointing = True
  # Run.
  c.seed = 0
  c.mesh_shape = (-1, 1, 1)  # (data, fsdp, model)
  c.log_every = 10
  c.peak_flops_per_device = 0.0  # for MFU; 0: look the device kind up in PEAK_FLOPS
  c.progress_bar = True
  c.lock()  # a typo in an override is an error, not a new key
  return c


# Dense bf16 peak FLOP/s by `jax.Device.device_kind`, for the MFU estimate.
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H200": 989e12,
}


@dataclasses.dataclass
class _KeepStep:
  """Orbax preservation policy: keeps the checkpoint of `step` (the best one, chosen by us).

  Orbax's BestN breaks ties between equal scores towards the latest step, while early stopping
  counts only strict improvements; tracking the best step here keeps the two the same.
  """

  step: int = -1

  def should_preserve(self, checkpoints, *, context):  # pylint: disable=unused-argument
    return [info.step == self.step for info in checkpoints]


def _selection_key(record: Mapping[str, float]) -> tuple[float, ...]:
  """Higher is better: validation reward, then lower validation loss, then the later step.

  The loss breaks ties between equal rewards, which are common early on (a model that solves
  nothing yet scores 0 at every evaluation) and would otherwise keep the first, least trained
  step. Without either signal the last step wins.
  """
  if "valid_reward" not in record and "valid_loss" not in record:
    return (float(record["step"]),)
  return (record.get("valid_reward", 0.0), -record.get("valid_loss", 0.0))


@dataclasses.dataclass
class TrainResult:
  """What one call of `train` produced."""

  model_dir: str  # the best step's model checkpoint directory
  best_step: int
  best_score: float | None  # validation reward (or -validation loss without a reward fn)
  steps: int  # steps trained
  stopped_early: bool
  evaluations: list[dict[str, float]]  # {"step", "valid_loss", "valid_reward", ...} in order

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str) -> TrainResult:
    return cls(**json.loads(text))


RESULT_FILE = "train_result.json"


def _peak_flops(config, mesh: jax.sharding.Mesh) -> float | None:
  if config.peak_flops_per_device:
    return float(config.peak_flops_per_device)
  return PEAK_FLOPS.get(mesh.devices.flat[0].device_kind)


def train(config: ml_collections.ConfigDict, *, base_checkpoint: epath.PathLike,
          workdir: epath.PathLike, train_data: data_lib.TrainData,
          valid_batches: Sequence[Batch] | None = None, valid_reward_fn: RewardFn | None = None,
          mesh: jax.sharding.Mesh | None = None,
          rules: partitioning.Rules = partitioning.DEFAULT_RULES,
          model_config: model_lib.ModelConfig | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
  """Fine-tunes the base model into `workdir`, resuming there if a run was interrupted.

  The best step is chosen by `valid_reward_fn` (higher is better), ties broken by validation
  loss (lower is better); with neither signal it is the last step (see `_selection_key`).
  Evaluations happen every `eval_every` steps and after the last step; with
  `early_stop_patience` = P the run stops after P evaluations in a row without a strict
  improvement of that key.

  Args:
    config: the trainer config (`default_config()`).
    base_checkpoint: model checkpoint directory to start from (params, model config, vocab).
    workdir: this run's output directory (see the module docstring).
    train_data: the training stream; its position is saved and restored with the state.
    valid_batches: fixed validation batches for the validation loss (host rows, like
      `batches.eval_batches` gives).
    valid_reward_fn: `params -> reward` on the validation problems (greedy decode + reward).
    mesh: defaults to `make_mesh(config.mesh_shape)`.
    rules: logical-axis rules.
    model_config: overrides the base checkpoint's config (e.g. remat, compute dtype).
    on_step: called as `on_step(step, metrics)` with each step's host metrics, in order.

  Returns:
    A `TrainResult`; `model_dir` is the exported best model.
  """
  workdir = checkpoints.absolute(workdir)  # Orbax needs absolute paths
  result_path = workdir / RESULT_FILE
  if result_path.exists():
    return TrainResult.from_json(result_path.read_text())
  workdir.mkdir(parents=True, exist_ok=True)
  config_path = workdir / "trainer_config.json"
  if jax.process_index() == 0 and not config_path.exists():  # a restart keeps the first one
    file_io.write_text_atomic(config_path, config.to_json(indent=2))
  mesh = mesh or partitioning.make_mesh(tuple(config.mesh_shape))
  model_cfg = model_config or checkpoints.load_config(base_checkpoint)
  fns = make_train_fns(model_cfg, config, mesh, rules)
  keep_best = _KeepStep()
  manager = ocp.CheckpointManager(
      workdir / "checkpoints", item_names=("state", "meta"),
      options=ocp.CheckpointManagerOptions(
          enable_async_checkpointing=config.async_checkpointing,
          preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
              [ocp.checkpoint_managers.LatestN(n=max(config.keep_last, 1)), keep_best])))
  writer = metric_writer.MetricWriter(workdir / "tensorboard")
  try:
    return _run(config, fns, manager, keep_best, writer, model_cfg, base_checkpoint, workdir,
                train_data, valid_batches, valid_reward_fn, on_step)
  finally:
    # Also on an exception: a half-written async save must finish (or be abandoned as a temp
    # directory) before another manager opens the same directory.
    manager.wait_until_finished()
    manager.close()
    writer.close()


def _run(config, fns: TrainFns, manager, keep_best: _KeepStep, writer, model_cfg,
         base_checkpoint, workdir, train_data, valid_batches, valid_reward_fn, on_step
         ) -> TrainResult:
  """The loop of `train`, once its directory, mesh, steps and checkpoint manager exist."""
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        fns.abstract_state, fns.state_shardings)
  latest = manager.latest_step()
  if latest is not None:
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    state, meta = restored.state, dict(restored.meta)
    train_data.set_state(meta["data"])
    logging.info("resumed %s at step %d", workdir, meta["step"])
  else:
    # Every ReST^EM iteration: the base model's weights and a brand-new optimizer state.
    params, _ = checkpoints.load(base_checkpoint, fns.mesh, fns.rules, config=model_cfg)
    state = fns.init_state(params)
    del params
    meta = {"step": 0, "rng": jax.random.key_data(jax.random.key(config.seed)).tolist(),
            "best_step": -1, "best_score": None, "bad_evals": 0, "stopped": False,
            "evaluations": []}
  keep_best.step = meta["best_step"]
  base_rng = jax.random.wrap_key_data(np.asarray(meta["rng"], np.uint32))
  step = meta["step"]
  total = int(config.num_train_steps)
  eval_every = int(config.eval_every) or total
  ckpt_every = int(config.checkpoint_every)
  tokens_per_step = None
  flops_token = None
  peak = _peak_flops(config, fns.mesh)
  num_devices = fns.mesh.devices.size
  progress = tqdm.tqdm(total=total, initial=step, desc="train", unit="step",
                       disable=not config.progress_bar or jax.process_index() != 0)
  pending: tuple[int, Metrics] | None = None
  timer = {"t": time.perf_counter(), "steps": 0}

  def read(pending_step: int, device_metrics: Metrics) -> None:
    """Host side of one step's metrics: runs after the NEXT step has been dispatched."""
    host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    now = time.perf_counter()
    timer["steps"] += 1
    # The first step after a (re)start or an evaluation pays for compilation / the pause.
    if timer["steps"] > 1:
      seconds = now - timer["t"]
      host["tokens_per_sec"] = tokens_per_step / seconds
      host["achieved_tflops_per_device"] = (
          host["tokens_per_sec"] * flops_token / num_devices / 1e12)
      if peak:
        host["mfu"] = host["tokens_per_sec"] * flops_token / (peak * num_devices)
    timer["t"] = now
    if pending_step % max(int(config.log_every), 1) == 0 or pending_step == total:
      writer.write_scalars(pending_step, {f"train/{k}": v for k, v in host.items()})
    progress.update(1)
    progress.set_postfix(loss=f"{host['loss']:.4f}", refresh=False)
    if on_step is not None:
      on_step(pending_step, host)

  def flush() -> None:
    nonlocal pending
    if pending is not None:
      read(*pending)
      pending = None

  def save(with_score: float | None) -> None:
    meta.update(step=step, data=train_data.get_state())
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)),
                 metrics=None if with_score is None else {"score": with_score}, force=True)

  while step < total and not meta["stopped"]:
    host_batch = next(train_data)
    if tokens_per_step is None:
      length = host_batch["decoder_target_tokens"].shape[1]
      tokens_per_step = config.batch_size * length
      flops_token = flops_per_token(model_cfg, length)
    state, metrics = fns.train_step(state, fns.put_batch(host_batch),
                                    jax.random.fold_in(base_rng, step))
    step += 1
    flush()  # step N is queued on the device: now block on step N-1's metrics
    pending = (step, metrics)
    if step % eval_every == 0 or step == total:
      flush()
      record = _evaluate(fns, state.params, step, valid_batches, valid_reward_fn)
      score = record.get("valid_reward", -record["valid_loss"] if "valid_loss" in record
                         else float(step))
      key = _selection_key(record)
      if meta.get("best_key") is None or key > tuple(meta["best_key"]):
        meta.update(best_step=step, best_score=score, best_key=list(key), bad_evals=0)
      else:
        meta["bad_evals"] += 1
      patience = int(config.early_stop_patience)
      meta["stopped"] = bool(patience and meta["bad_evals"] >= patience)
      meta["evaluations"].append(record)
      writer.write_scalars(step, {f"valid/{k[len('valid_'):]}": v for k, v in record.items()
                                  if k.startswith("valid_")})
      writer.flush()
      keep_best.step = meta["best_step"]
      save(score)
      timer["steps"] = 0
    elif ckpt_every and step % ckpt_every == 0:
      flush()
      save(None)
      timer["steps"] = 0
  flush()
  progress.close()
  best_step = meta["best_step"] if meta["best_step"] >= 0 else step
  final_params = state.params if best_step == step else None
  del state  # an earlier best step's state is restored next: do not hold two
  return _finish(manager, final_params, best_step, meta, model_cfg, base_checkpoint, workdir,
                 target)


def _evaluate(fns: TrainFns, params, step: int, valid_batches, valid_reward_fn
              ) -> dict[str, float]:
  record: dict[str, float] = {"step": step}
  if valid_batches:
    record.update(evaluate_loss(fns, params, valid_batches))
  if valid_reward_fn is not None:
    record["valid_reward"] = float(valid_reward_fn(params))
  logging.info("evaluation at step %d: %s", step, record)
  return record


def _finish(manager, final_params, best_step: int, meta, model_cfg, base_checkpoint, workdir,
            target) -> TrainResult:
  """Exports the best step as a model checkpoint directory and writes the result file.

  `final_params` are the last step's parameters when that step is the best one, else None (the
  best step is then restored from its checkpoint, which the preservation policy kept).
  """
  manager.wait_until_finished()
  model_dir = workdir / "best_model"
  if not checkpoints.is_complete(model_dir):
    params = final_params
    if params is None:
      restored = manager.restore(best_step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
      params = restored.state.params
    checkpoints.save(model_dir, params, model_cfg, checkpoints.vocab_path(base_checkpoint))
  result = TrainResult(model_dir=str(model_dir), best_step=best_step,
                       best_score=meta["best_score"], steps=meta["step"],
                       stopped_early=bool(meta["stopped"]), evaluations=meta["evaluations"])
  if jax.process_index() == 0:
    file_io.write_text_atomic(workdir / RESULT_FILE, result.to_json())
  return result
