"""One process of tests/test_multiprocess.py: training and sampling on meshes spanning processes.

  python tests/multiprocess_worker.py --out=DIR [--num_processes=2 --process_id=I --port=PORT]

With one process (all devices in it) it computes the reference; with two, the same number of
devices is split between two processes joined by `jax.distributed`, and every global
computation goes through the project's own code (partitioning, train_steps, train_data,
sampling, checkpoints, sample_shards). XLA_FLAGS must set the device count before JAX starts:
the test does.

Process 0 writes DIR/result.npz; the sample shards go to DIR/shards, each host writing its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax.model import partitioning
from restem_jax import sampling
from restem_jax.sampling import shards as sample_shards
from restem_jax.training import batches
from restem_jax.training import steps as train_steps
from restem_jax.training import trainer

# As in test_trainer: dims of at least 128 so Adafactor's factored statistics are exercised.
CFG = model_lib.preset("tiny", num_layers=2, d_model=128, num_heads=4, num_kv_heads=1,
                       head_dim=32, d_ff=256, vocab_size=256, max_len=64)
LENGTH = 16
BATCH = 8
STEPS = 2
# Train on the mesh that make_mesh gives (the data axis spans the processes; each host feeds
# its own rows). Evaluate on one where each process holds every other device, so the model axis
# spans the processes and both need every row (put_batch exchanges them).
TRAIN_MESH = (2, 2, 2)
SPREAD_MESH = (2, 1, 4)
# Data and fsdp only: no reduction is split between devices, so tokens must be bit-identical.
SAMPLE_MESH = (4, 2, 1)
PROMPT_LENS = (3, 5, 8, 11, 2, 7)


def _log(msg: str, start: float) -> None:
  print(f"[process {jax.process_index()}] {time.time() - start:5.1f}s {msg}", file=sys.stderr,
        flush=True)


def _spread_devices() -> list:
  """All devices, the processes' k-th devices next to each other."""
  by_process: dict[int, list] = {}
  for d in sorted(jax.devices(), key=lambda d: d.id):
    by_process.setdefault(d.process_index, []).append(d)
  return [d for group in zip(*by_process.values()) for d in group]


def _examples(n: int, seed: int):
  rng = np.random.default_rng(seed)
  return [batches.prefix_lm_example(rng.integers(2, 256, rng.integers(3, 7)),
                                       rng.integers(2, 256, rng.integers(3, 9)), LENGTH,
                                       weight=float(rng.choice([1.0, 0.5])))
          for _ in range(n)]


def _trainer_config():
  config = trainer.default_config()
  config.batch_size = BATCH
  config.learning_rate = 3e-3
  return config


def train(out: dict):
  """STEPS train steps from a sharded init; each host feeds its own rows of every batch."""
  mesh = partitioning.make_mesh(TRAIN_MESH)
  params, _ = partitioning.init_sharded(
      lambda key: model_lib.Decoder(CFG).init(key, jnp.zeros((1, 1), jnp.int32)), mesh,
      partitioning.DEFAULT_RULES, jax.random.key(0))
  fns = train_steps.make_train_fns(CFG, _trainer_config(), mesh)
  # The layout this test means: each host's rows of a batch stay on its own devices.
  assert partitioning.rows_follow_processes(mesh, BATCH), mesh.devices
  state = fns.init_state(params["params"])
  data = batches.ShuffledExamples(_examples(12, seed=1), BATCH, seed=3)
  for step in range(STEPS):
    state, metrics = fns.train_step(state, fns.put_batch(next(data)),
                                    jax.random.fold_in(jax.random.key(7), step))
    for k, v in jax.device_get(metrics).items():
      out[f"train/step{step}/{k}"] = np.asarray(v)
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    out[f"params{jax.tree_util.keystr(path)}"] = partitioning.to_host(leaf)
  return state.params


def evaluate_spread(params, out: dict) -> None:
  """The validation loss on a mesh whose model axis spans the processes."""
  mesh = partitioning.make_mesh(SPREAD_MESH, _spread_devices())
  fns = train_steps.make_train_fns(CFG, _trainer_config(), mesh)
  # ... and here both processes hold every row.
  assert jax.process_count() == 1 or not partitioning.rows_follow_processes(mesh, BATCH)
  params = jax.device_put(params, fns.state_shardings.params)
  valid = batches.eval_batches(_examples(10, seed=2), BATCH)  # this host's rows
  for k, v in train_steps.evaluate_loss(fns, params, valid).items():
    out[f"spread/{k}"] = np.asarray(v)


def _problems():
  rng = np.random.default_rng(5)
  return ([f"problem-{i}" for i in range(len(PROMPT_LENS))],
          [rng.integers(3, 256, n).tolist() for n in PROMPT_LENS])


def sample_global(params, out: dict) -> None:
  """Every process passes the same problems to one Sampler on a mesh spanning them all."""
  mesh = partitioning.make_mesh(SAMPLE_MESH)
  sampler = sampling.Sampler(params, CFG, mesh=mesh, eos_id=None)
  ids, prompts = _problems()
  results = sampler.generate(ids, prompts, num_samples=4, strategy=sampling.TopK(8, 1.5),
                             max_new_tokens=6, batch_size=8)
  out["global/tokens"] = np.array([[s.tokens for s in per] for per in results])
  out["global/logprobs"] = np.array([[s.logprob for s in per] for per in results])


def sample_per_host(params, workdir: str) -> None:
  """The Generate step's layout: a saved model; each host samples its own shards locally."""
  model_dir = os.path.join(workdir, "model")
  checkpoints.save(model_dir, params, CFG)  # returns on every host once COMPLETE is written
  assert checkpoints.is_complete(model_dir)
  local_mesh = partitioning.make_mesh((-1, 1, 1), jax.local_devices())
  local_params, cfg = checkpoints.load(model_dir, local_mesh)
  sampler = sampling.Sampler(local_params, cfg, mesh=local_mesh, eos_id=None)
  ids, prompts = _problems()
  sample_shards.write_samples(os.path.join(workdir, "shards"), sampler,
                              [{"id": i, "inputs": p} for i, p in zip(ids, prompts)],
                              num_samples=2, strategy=sampling.Temperature(1.0),
                              max_new_tokens=5, batch_size=4, problems_per_shard=2,
                              progress=False)


def run(args, start: float) -> None:
  partitioning.maybe_initialize_distributed(
      args.num_processes > 1, coordinator_address=f"127.0.0.1:{args.port}",
      num_processes=args.num_processes, process_id=args.process_id,
      initialization_timeout=args.timeout)
  if jax.process_count() != args.num_processes:
    raise RuntimeError(f"expected {args.num_processes} processes, JAX has "
                       f"{jax.process_count()}")
  _log(f"{jax.local_device_count()} local of {jax.device_count()} devices", start)
  out: dict[str, np.ndarray] = {}
  params = train(out)
  _log(f"trained {STEPS} steps on mesh {TRAIN_MESH}", start)
  evaluate_spread(params, out)
  _log(f"evaluated on spread mesh {SPREAD_MESH}", start)
  sample_global(params, out)
  _log(f"sampled on mesh {SAMPLE_MESH}", start)
  sample_per_host(params, args.out)
  _log("sampled per host", start)
  if jax.process_index() == 0:
    np.savez(os.path.join(args.out, "result.npz"), **out)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--timeout", type=int, default=60,
                      help="seconds to wait for the other processes to connect")
  args = parser.parse_args()
  start = time.time()
  try:
    run(args, start)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    sys.stderr.flush()
    # Skip jax.distributed's shutdown barrier: it would wait minutes for the other process.
    os._exit(1)
  _log("done", start)
  if jax.process_count() > 1:
    jax.distributed.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)


if __name__ == "__main__":
  main()
