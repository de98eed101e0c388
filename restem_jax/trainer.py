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

The step functions are pure and module-level (`train_step`, `eval_step`); `make_train_fns` jits
each once with shardings derived from `jax.eval_shape` and donates the train state.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from etils import epath

from restem_jax import checkpoints
from restem_jax import losses
from restem_jax import metric_writer
from restem_jax import model as model_lib
from restem_jax import optimizers
from restem_jax import partitioning
from restem_jax import train_data as data_lib

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]
RewardFn = Callable[[Any], float]


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
  # Evaluation, best checkpoint, early stopping.
  c.eval_every = 100  # 0: evaluate only after the last step
  c.eval_batch_size = 0  # 0: batch_size
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


def flops_per_token(cfg: model_lib.ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token: 6 x matmul weights + 12 x layers x heads x head_dim x seq_len.

  The PaLM paper's (appendix B) estimate: forward + backward = 3 x forward, with attention
  scores and weighted values counted over the full (not causally halved) sequence. The output
  projection (tied or not) is a matmul and counts; the embedding lookup does not.
  """
  D, F, V, H = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.head_dim
  N, K = cfg.num_heads, cfg.num_kv_heads
  per_layer = D * N * H * 2 + D * K * H * 2 + 3 * D * F  # q, out; k, v; gate, up, down
  matmul_weights = cfg.num_layers * per_layer + D * V
  return 6.0 * matmul_weights + 12.0 * cfg.num_layers * N * H * seq_len


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes; a pytree, saved whole by Orbax."""

  step: jax.Array  # int32 scalar: updates applied so far
  params: Any
  opt_state: optax.OptState


def _forward_loss(params, batch: Batch, rng, model_cfg: model_lib.ModelConfig, z_loss: float,
                  denom: jax.Array):
  """(summed loss / denom, summed stats) of one (micro)batch."""
  logits_BLV, _ = model_lib.Decoder(model_cfg).apply(
      {"params": params}, batch["decoder_input_tokens"],
      positions_BL=batch.get("decoder_positions"),
      segment_ids_BL=batch.get("decoder_segment_ids"),
      rngs={"dropout": rng})
  loss, stats = losses.cross_entropy_with_z_loss(
      logits_BLV, batch["decoder_target_tokens"], batch["decoder_loss_weights"], z_loss)
  return loss / denom, stats


def _split_microbatches(x_BL: jax.Array, num: int) -> jax.Array:
  """[B, ...] -> [num, B / num, ...], microbatch m holding rows m, m + num, m + 2 num, ...

  Strided rather than contiguous: each device's rows then feed every microbatch equally, so with
  rows sharded over the data axes the split moves no data between devices.
  """
  x = x_BL.reshape(x_BL.shape[0] // num, num, *x_BL.shape[1:]).swapaxes(0, 1)
  return nn.with_logical_constraint(
      x, (None, "activation_batch") + (None,) * (x.ndim - 2))


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *,
               model_cfg: model_lib.ModelConfig, tx: optax.GradientTransformation,
               schedule: optimizers.Schedule, z_loss: float, num_microbatches: int
               ) -> tuple[TrainState, Metrics]:
  """One optimizer update on a global batch (pure; jitted by `make_train_fns`).

  The loss is the reward-weighted NLL (+ z-loss) summed over target tokens and divided by the
  number of tokens with non-zero weight in the whole batch, so a sample's reward scales its
  contribution, and accumulating microbatch gradients gives exactly the full-batch gradient.

  Args:
    state: params, optimizer state, step.
    batch: {feature: [B, L]} (train_data's feature names), sharded over the data axes.
    rng: a PRNG key for this step (for dropout-style randomness; folded per microbatch).
    model_cfg, tx, schedule, z_loss, num_microbatches: bound by `make_train_fns`.

  Returns:
    (new state, scalar metrics: loss, nll, z_loss, accuracy, learning_rate, grad_norm,
     num_tokens).
  """
  num_tokens = jnp.sum(batch["decoder_loss_weights"] != 0).astype(jnp.float32)
  denom = jnp.maximum(num_tokens, 1.0)
  grad_fn = jax.value_and_grad(_forward_loss, has_aux=True)
  if num_microbatches == 1:
    (_, stats), grads = grad_fn(state.params, batch, rng, model_cfg, z_loss, denom)
  else:
    micro = {k: _split_microbatches(v, num_microbatches) for k, v in batch.items()}

    def accumulate(carry, xs):
      grads_acc, stats_acc = carry
      microbatch, index = xs
      (_, s), g = grad_fn(state.params, microbatch, jax.random.fold_in(rng, index), model_cfg,
                          z_loss, denom)
      # Accumulate in float32 whatever the parameter dtype: bf16 sums would drop small grads.
      grads_acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads_acc, g)
      stats_acc = jax.tree.map(jnp.add, stats_acc, s)
      return (grads_acc, stats_acc), None

    zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    zero_stats = {k: jnp.zeros((), jnp.float32) for k in ("nll", "z_loss", "weight", "correct")}
    (grads, stats), _ = jax.lax.scan(
        accumulate, (zero_grads, zero_stats), (micro, jnp.arange(num_microbatches)))
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  metrics = {
      "loss": (stats["nll"] + stats["z_loss"]) / denom,
      "nll": stats["nll"] / denom,
      "z_loss": stats["z_loss"] / denom,
      "accuracy": stats["correct"] / jnp.maximum(stats["weight"], 1e-9),
      "learning_rate": schedule(state.step),
      "grad_norm": grad_norm,
      "num_tokens": num_tokens,
  }
  return new_state, metrics


def eval_step(params, batch: Batch, *, model_cfg: model_lib.ModelConfig, z_loss: float
              ) -> Metrics:
  """Summed validation statistics of one batch (pure; jitted by `make_train_fns`).

  Returns:
    {"nll", "z_loss", "weight", "correct", "num_tokens"}: sums, to be added over batches.
  """
  one = jnp.float32(1.0)
  _, stats = _forward_loss(params, batch, jax.random.key(0), model_cfg, z_loss, one)
  stats["num_tokens"] = jnp.sum(batch["decoder_loss_weights"] != 0).astype(jnp.float32)
  return stats


def _opt_state_shardings(abstract_opt_state, abstract_params, param_shardings, replicated):
  """Shards each optimizer-state leaf like the parameter it belongs to.

  Optax keeps per-parameter statistics (Adam's mu/nu, Adafactor's unfactored v) in trees with
  the parameters' dict keys, so a leaf whose dict-key path and shape match a parameter takes
  that parameter's sharding. Everything else is replicated: step counts, and Adafactor's
  factored row/column statistics, which are O(rows + columns) and so small.
  """
  by_path = {}
  flat_params = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  flat_shardings = jax.tree_util.tree_leaves(param_shardings)
  for (path, leaf), sharding in zip(flat_params, flat_shardings):
    by_path[tuple(k.key for k in path)] = (leaf.shape, sharding)

  def pick(path, leaf):
    keys = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
    match = by_path.get(keys)
    if match is not None and match[0] == leaf.shape:
      return match[1]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


@dataclasses.dataclass(frozen=True)
class TrainFns:
  """The jitted steps of one (model, optimizer, mesh), and the shardings they were built with.

  Call them through these methods: they trace under `partitioning.activate`, so the model's
  activation constraints resolve against the mesh.
  """

  mesh: jax.sharding.Mesh
  rules: partitioning.Rules
  abstract_state: TrainState
  state_shardings: TrainState
  schedule: optimizers.Schedule
  _init_state: Callable[..., TrainState]
  _train_step: Callable[..., tuple[TrainState, Metrics]]
  _eval_step: Callable[..., Metrics]

  def init_state(self, params) -> TrainState:
    """A fresh train state (step 0, new optimizer state) from model parameters."""
    with partitioning.activate(self.mesh, self.rules):
      return self._init_state(params)

  def train_step(self, state: TrainState, batch: Batch, rng: jax.Array
                 ) -> tuple[TrainState, Metrics]:
    """`train_step` on the mesh; `state` is donated (do not use it afterwards)."""
    with partitioning.activate(self.mesh, self.rules):
      return self._train_step(state, batch, rng)

  def eval_step(self, params, batch: Batch) -> Metrics:
    with partitioning.activate(self.mesh, self.rules):
      return self._eval_step(params, batch)

  def put_batch(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This host's rows of a global batch -> global arrays with rows over the data axes."""
    sharding = partitioning.data_sharding(self.mesh, 2)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in host_batch.items()}


# XLA:CPU options for the compiled steps. Profiling the train step (bench/training.py shapes)
# showed the backward pass spending over a third of its time in loop fusions that compute the
# MLP's elementwise gradients while transposing them for the weight-gradient matmuls: the loop
# emitter writes those transposes with a cache-hostile stride. Letting YNNPACK take elementwise
# ops as well as dots (its fusions transpose in tiles) made the step up to ~2x faster, with
# results equal to 1e-7. CPU only: the option means nothing to other backends.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE",
}


def _compiler_options(mesh: jax.sharding.Mesh) -> dict[str, str] | None:
  return dict(CPU_COMPILER_OPTIONS) if mesh.devices.flat[0].platform == "cpu" else None


def make_train_fns(model_cfg: model_lib.ModelConfig, config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh, rules: partitioning.Rules = partitioning.DEFAULT_RULES
                   ) -> TrainFns:
  """Builds the optimizer and jits init / train / eval once, with shardings from eval_shape.

  Args:
    model_cfg: the architecture (static in the compiled steps).
    config: the trainer config (optimizer, z_loss, num_microbatches, batch_size).
    mesh: the device mesh; rules: logical-axis rules.

  Returns:
    A `TrainFns`.
  """
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  rows = config.batch_size // config.num_microbatches
  if config.batch_size % config.num_microbatches or rows % dp:
    raise ValueError(f"batch_size={config.batch_size} must split into num_microbatches="
                     f"{config.num_microbatches} microbatches whose rows divide over the "
                     f"{dp} data-parallel devices")
  tx, schedule = optimizers.make_optimizer(config)
  init_model = lambda key: model_lib.Decoder(model_cfg).init(key, jnp.zeros((1, 1), jnp.int32))
  abstract_vars, var_shardings = partitioning.abstract_and_shardings(
      init_model, mesh, rules, jax.random.key(0))
  abstract_params = nn.unbox(abstract_vars)["params"]
  param_shardings = var_shardings["params"]
  replicated = partitioning.replicated(mesh)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  abstract_state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                              opt_state=abstract_opt)
  state_shardings = TrainState(
      step=replicated, params=param_shardings,
      opt_state=_opt_state_shardings(abstract_opt, abstract_params, param_shardings, replicated))
  batch_sharding = partitioning.data_sharding(mesh, 2)  # a prefix: every feature is [B, L]

  def init_state(params):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  step_fn = functools.partial(train_step, model_cfg=model_cfg, tx=tx, schedule=schedule,
                              z_loss=float(config.z_loss),
                              num_microbatches=int(config.num_microbatches))
  eval_fn = functools.partial(eval_step, model_cfg=model_cfg, z_loss=float(config.z_loss))
  options = _compiler_options(mesh)
  return TrainFns(
      mesh=mesh, rules=tuple(rules), abstract_state=abstract_state,
      state_shardings=state_shardings, schedule=schedule,
      _init_state=jax.jit(init_state, in_shardings=(param_shardings,),
                          out_shardings=state_shardings),
      _train_step=jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding, replicated),
                          out_shardings=(state_shardings, replicated), donate_argnums=(0,),
                          compiler_options=options),
      _eval_step=jax.jit(eval_fn, in_shardings=(param_shardings, batch_sharding),
                         out_shardings=replicated, compiler_options=options),
  )


def evaluate_loss(fns: TrainFns, params, batches: Sequence[Batch]) -> dict[str, float]:
  """Validation loss and token accuracy over fixed batches (see `train_data.eval_batches`).

  Returns:
    {"valid_loss": reward-weighted NLL per target token, "valid_accuracy"}.
  """
  totals = None
  for batch in batches:
    sums = fns.eval_step(params, fns.put_batch(batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  return {"valid_loss": float(totals["nll"] / max(totals["num_tokens"], 1.0)),
          "valid_accuracy": float(totals["correct"] / max(totals["weight"], 1e-9))}


@dataclasses.dataclass
class _KeepStep:
  """Orbax preservation policy: keeps the checkpoint of `step` (the best one, chosen by us).

  Orbax's BestN breaks ties between equal scores towards the latest step, while early stopping
  counts only strict improvements; tracking the best step here keeps the two the same.
  """

  step: int = -1

  def should_preserve(self, checkpoints, *, context):  # pylint: disable=unused-argument
    return [info.step == self.step for info in checkpoints]


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


def _peak_flops(config) -> float | None:
  if config.peak_flops_per_device:
    return float(config.peak_flops_per_device)
  return PEAK_FLOPS.get(jax.devices()[0].device_kind)


def train(config: ml_collections.ConfigDict, *, base_checkpoint: epath.PathLike,
          workdir: epath.PathLike, train_data: data_lib.TrainData,
          valid_batches: Sequence[Batch] | None = None, valid_reward_fn: RewardFn | None = None,
          mesh: jax.sharding.Mesh | None = None,
          rules: partitioning.Rules = partitioning.DEFAULT_RULES,
          model_config: model_lib.ModelConfig | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
  """Fine-tunes the base model into `workdir`, resuming there if a run was interrupted.

  The best step is chosen by `valid_reward_fn` (higher is better), else by validation loss
  (lower is better), else it is the last step. Evaluations happen every `eval_every` steps and
  after the last step; with `early_stop_patience` = P the run stops after P evaluations in a row
  without a strict improvement.

  Args:
    config: the trainer config (`default_config()`).
    base_checkpoint: model checkpoint directory to start from (params, model config, vocab).
    workdir: this run's output directory (see the module docstring).
    train_data: the training stream; its position is saved and restored with the state.
    valid_batches: fixed validation batches for the validation loss (host rows, like
      `train_data.eval_batches` gives).
    valid_reward_fn: `params -> reward` on the validation problems (greedy decode + reward).
    mesh: defaults to `make_mesh(config.mesh_shape)`.
    rules: logical-axis rules.
    model_config: overrides the base checkpoint's config (e.g. remat, compute dtype).
    on_step: called as `on_step(step, metrics)` with each step's host metrics, in order.

  Returns:
    A `TrainResult`; `model_dir` is the exported best model.
  """
  workdir = epath.Path(workdir)
  result_path = workdir / RESULT_FILE
  if result_path.exists():
    return TrainResult.from_json(result_path.read_text())
  workdir.mkdir(parents=True, exist_ok=True)
  config_path = workdir / "trainer_config.json"
  if jax.process_index() == 0 and not config_path.exists():  # a restart keeps the first one
    checkpoints.write_text_atomic(config_path, config.to_json(indent=2))
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
  peak = _peak_flops(config)
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
      if meta["best_score"] is None or score > meta["best_score"]:
        meta.update(best_step=step, best_score=score, bad_evals=0)
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
  return _finish(manager, fns, state, meta, model_cfg, base_checkpoint, workdir, target)


def _evaluate(fns: TrainFns, params, step: int, valid_batches, valid_reward_fn
              ) -> dict[str, float]:
  record: dict[str, float] = {"step": step}
  if valid_batches:
    record.update(evaluate_loss(fns, params, valid_batches))
  if valid_reward_fn is not None:
    record["valid_reward"] = float(valid_reward_fn(params))
  logging.info("evaluation at step %d: %s", step, record)
  return record


def _finish(manager, fns: TrainFns, state: TrainState, meta, model_cfg, base_checkpoint,
            workdir, target) -> TrainResult:
  """Exports the best step as a model checkpoint directory and writes the result file."""
  manager.wait_until_finished()
  best_step = meta["best_step"] if meta["best_step"] >= 0 else meta["step"]
  model_dir = workdir / "best_model"
  if not checkpoints.is_complete(model_dir):
    if best_step == int(jax.device_get(state.step)):
      params = state.params
    else:
      del state  # the best step's full state is restored next: do not hold two
      restored = manager.restore(best_step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
      params = restored.state.params
    checkpoints.save(model_dir, params, model_cfg, checkpoints.vocab_path(base_checkpoint))
  result = TrainResult(model_dir=str(model_dir), best_step=best_step,
                       best_score=meta["best_score"], steps=meta["step"],
                       stopped_early=bool(meta["stopped"]), evaluations=meta["evaluations"])
  if jax.process_index() == 0:
    checkpoints.write_text_atomic(workdir / RESULT_FILE, result.to_json())
  return result
