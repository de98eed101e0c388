"""Train state and the pure, sharded train / eval steps (jitted once by `make_train_fns`).

The loss of ReST^EM's M-step is the reward-weighted NLL of the solution tokens (+ PaLM's z-loss):
batches carry per-token weights = loss mask x the sample's reward, so prompt tokens get none.
`train_step` is a pure module-level function `(state, batch, rng) -> (state, metrics)`;
`make_train_fns` derives every sharding from `jax.eval_shape` (parameters from the model's
logical axes, optimizer statistics from the parameter they belong to, batch rows over the data
axes), jits each step once with those shardings, and donates the train state.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from restem_jax import model as model_lib
from restem_jax.model import partitioning
from restem_jax.training import losses
from restem_jax.training import optimizers

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]


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
                  denom: jax.Array, scan_unroll: int = 1):
  """(summed loss / denom, summed stats) of one (micro)batch."""
  logits_BLV, _ = model_lib.Decoder(model_cfg, scan_unroll=scan_unroll).apply(
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
               schedule: optimizers.Schedule, z_loss: float, num_microbatches: int,
               scan_unroll: int = 1) -> tuple[TrainState, Metrics]:
  """One optimizer update on a global batch (pure; jitted by `make_train_fns`).

  The loss is the reward-weighted NLL (+ z-loss) summed over target tokens and divided by the
  number of tokens with non-zero weight in the whole batch, so a sample's reward scales its
  contribution, and accumulating microbatch gradients gives exactly the full-batch gradient.

  Args:
    state: params, optimizer state, step.
    batch: {feature: [B, L]} (train_data's feature names), sharded over the data axes.
    rng: a PRNG key for this step (for dropout-style randomness; folded per microbatch).
    model_cfg, tx, schedule, z_loss, num_microbatches: bound by `make_train_fns`.
    scan_unroll: layers per iteration of the model's layer loop (`model.Decoder.scan_unroll`;
      the same arithmetic whatever its value).

  Returns:
    (new state, scalar metrics: loss, nll, z_loss, accuracy, learning_rate, grad_norm,
     num_tokens).
  """
  num_tokens = jnp.sum(batch["decoder_loss_weights"] != 0).astype(jnp.float32)
  denom = jnp.maximum(num_tokens, 1.0)
  grad_fn = jax.value_and_grad(_forward_loss, has_aux=True)
  if num_microbatches == 1:
    (_, stats), grads = grad_fn(state.params, batch, rng, model_cfg, z_loss, denom, scan_unroll)
  else:
    micro = {k: _split_microbatches(v, num_microbatches) for k, v in batch.items()}

    def accumulate(carry, xs):
      grads_acc, stats_acc = carry
      microbatch, index = xs
      (_, s), g = grad_fn(state.params, microbatch, jax.random.fold_in(rng, index), model_cfg,
                          z_loss, denom, scan_unroll)
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


def eval_step(params, batch: Batch, *, model_cfg: model_lib.ModelConfig, z_loss: float,
              scan_unroll: int = 1) -> Metrics:
  """Summed validation statistics of one batch (pure; jitted by `make_train_fns`).

  Returns:
    {"nll", "z_loss", "weight", "correct", "num_tokens"}: sums, to be added over batches.
  """
  one = jnp.float32(1.0)
  _, stats = _forward_loss(params, batch, jax.random.key(0), model_cfg, z_loss, one, scan_unroll)
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
    """A fresh train state (step 0, new optimizer state) from model parameters (donated)."""
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

  def train_step_hlo(self, state: TrainState, batch: Batch, rng: jax.Array) -> str:
    """The optimised HLO text of `train_step` for these arguments (names a profile's ops)."""
    with partitioning.activate(self.mesh, self.rules):
      return self._train_step.lower(state, batch, rng).compile().as_text()

  def put_batch(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This host's rows of a global batch -> global arrays with rows over the data axes.

    Of P processes, process p gives rows [p R / P, (p + 1) R / P) of the R-row global batch
    (what `train_data` streams give it). When the mesh places other rows on p's devices (a
    model axis spanning processes: several of them hold the same rows), the processes first
    exchange their rows, so every layout of the mesh trains on the same batch.
    """
    host_batch = {k: np.asarray(v) for k, v in host_batch.items()}
    sharding = partitioning.data_sharding(self.mesh, 2)
    count = jax.process_count()
    global_rows = next(iter(host_batch.values())).shape[0] * count
    if count > 1 and not partitioning.rows_follow_processes(self.mesh, global_rows):
      from jax.experimental import multihost_utils
      host_batch = multihost_utils.process_allgather(host_batch, tiled=True)  # global rows
    return {k: jax.make_array_from_process_local_data(sharding, v, (global_rows, *v.shape[1:]))
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


def _compiler_options(mesh: jax.sharding.Mesh, model_cfg: model_lib.ModelConfig
                      ) -> dict[str, str] | None:
  """CPU_COMPILER_OPTIONS for a float32 step on the CPU; XLA's defaults otherwise.

  With bfloat16 products (`model.matmul_dtype`), the option would cost them their bfloat16
  units: XLA:CPU keeps a bfloat16 dot only where it may hand it to the library as a dot of its
  own (the defaults' LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT) and widens every other one to float32.
  The defaults keep all of them bfloat16 and ran the train step 2 to 3% faster than the option
  with INDIVIDUAL_DOT added (bench/training's shapes, BENCHMARKS.md).
  """
  if mesh.devices.flat[0].platform != "cpu" or model_cfg.matmul_dtype == "bfloat16":
    return None
  return dict(CPU_COMPILER_OPTIONS)


def resolve_scan_unroll(config: ml_collections.ConfigDict, model_cfg: model_lib.ModelConfig,
                mesh: jax.sharding.Mesh) -> int:
  """Layers per iteration of the layer loop in the compiled steps (`config.scan_unroll`).

  0 (auto) unrolls every layer on CPU, where the loop's stacked residuals (zeroed, sliced and
  updated each step) cost about a quarter of the train step (XLA:CPU profile of bench/training's
  shapes), and keeps the loop elsewhere (compile time and memory of large models).
  """
  value = int(config.get("scan_unroll", 0))
  if value < 0:
    raise ValueError(f"scan_unroll must be >= 0 (0: auto), got {value}")
  if value == 0:
    return model_cfg.num_layers if mesh.devices.flat[0].platform == "cpu" else 1
  return min(value, model_cfg.num_layers)


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

  unroll = resolve_scan_unroll(config, model_cfg, mesh)
  step_fn = functools.partial(train_step, model_cfg=model_cfg, tx=tx, schedule=schedule,
                              z_loss=float(config.z_loss),
                              num_microbatches=int(config.num_microbatches), scan_unroll=unroll)
  eval_fn = functools.partial(eval_step, model_cfg=model_cfg, z_loss=float(config.z_loss),
                              scan_unroll=unroll)
  options = _compiler_options(mesh, model_cfg)
  return TrainFns(
      mesh=mesh, rules=tuple(rules), abstract_state=abstract_state,
      state_shardings=state_shardings, schedule=schedule,
      # Donated: the state takes over the loaded parameters' buffers instead of copying them.
      _init_state=jax.jit(init_state, in_shardings=(param_shardings,),
                          out_shardings=state_shardings, donate_argnums=(0,)),
      _train_step=jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding, replicated),
                          out_shardings=(state_shardings, replicated), donate_argnums=(0,),
                          compiler_options=options),
      _eval_step=jax.jit(eval_fn, in_shardings=(param_shardings, batch_sharding),
                         out_shardings=replicated, compiler_options=options),
  )


def evaluate_loss(fns: TrainFns, params, batches: Sequence[Batch]) -> dict[str, float]:
  """Validation loss and token accuracy over fixed batches (see `batches.eval_batches`).

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
