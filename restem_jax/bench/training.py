"""`python -m restem_jax.bench training`: train-step throughput against PyTorch eager.

Ours: `steps.make_train_fns` (the jitted, donated train step the trainer runs) with AdamW.
Peer: Hugging Face `LlamaForCausalLM` (random init) + `torch.optim.AdamW`, eager, on the same
shapes: our model in the Llama layout (`model.LLAMA_STYLE`: sequential block, RMSNorm) with
the `tiny` and `small` sizes, multi-query attention and tied embeddings as in the presets. Both
run in float32 on the CPU with the same number of threads, one step of each in turn, and the
figure is the median over the timed steps after warm-up (the fastest step of each side is
reported too: on a shared machine it is the figure least affected by other jobs). Same work on both sides: next-token
cross-entropy on every position, no z-loss, no gradient clipping, plain AdamW.

GFLOP/s use the trainer's `flops_per_token` (PaLM's 6N + 12 L H Q T) for both, and are
compared with a float32 matmul ceiling measured in this run: the faster of a JAX and a torch
2048 x 2048 x 2048 matmul, best of the measurements before and after the training steps.

`--dtype bfloat16` is mixed precision on both sides: ours with `model.matmul_dtype =
"bfloat16"` (every product and its gradients on bfloat16 operands, float32 accumulation;
activations, weights, AdamW and the loss float32), the peer under torch's CPU bfloat16 autocast.
Our float32 step runs alternately with them, so the line also gives bfloat16 against float32.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from restem_jax import host_memory
from restem_jax.bench import host
from restem_jax.bench import peers
from restem_jax import model as model_lib
from restem_jax.model import partitioning
from restem_jax.training import steps as train_steps
from restem_jax.training import trainer

BATCH = 16
LENGTH = 256
LR = 1e-4


def _model_config(name: str, dtype: str = "float32",
                  float32_products: str | None = None) -> model_lib.ModelConfig:
  """The preset in the Llama layout, float32; `dtype` "bfloat16": bfloat16 products, but those
  of `float32_products` (None: the model's default, the logits)."""
  extra = {} if float32_products is None else {"float32_products": float32_products}
  return model_lib.preset(name, dtype="float32", param_dtype="float32", remat=False,
                          matmul_dtype="bfloat16" if dtype == "bfloat16" else "",
                          **model_lib.LLAMA_STYLE, **extra)


def _batch(cfg: model_lib.ModelConfig, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, cfg.vocab_size, (BATCH, LENGTH + 1),
                                              dtype=np.int32)


class Ours:
  """One jitted, state-donating train step of the trainer on one CPU device."""

  def __init__(self, cfg: model_lib.ModelConfig):
    config = trainer.default_config()
    config.update(optimizer="adamw", learning_rate=LR, adam_b1=0.9, adam_b2=0.999,
                  adam_eps=1e-8, weight_decay=0.01, clip_grad_norm=0.0, z_loss=0.0,
                  batch_size=BATCH, num_microbatches=1)
    mesh = partitioning.make_mesh((1, 1, 1), jax.devices()[:1])
    self.fns = train_steps.make_train_fns(cfg, config, mesh)
    boxed = jax.jit(lambda k: model_lib.Decoder(cfg).init(k, jnp.zeros((1, 1), jnp.int32)))(
        jax.random.key(0))
    self.state = self.fns.init_state(nn.unbox(boxed)["params"])
    self.rng = jax.random.key(1)

  def batch(self, tokens_BL1: np.ndarray) -> dict[str, jax.Array]:
    return self.fns.put_batch({
        "decoder_input_tokens": tokens_BL1[:, :-1],
        "decoder_target_tokens": tokens_BL1[:, 1:],
        "decoder_loss_weights": np.ones((BATCH, LENGTH), np.float32),
    })

  def step(self, tokens_BL1: np.ndarray) -> float:
    batch = self.batch(tokens_BL1)
    start = time.perf_counter()
    self.state, metrics = self.fns.train_step(self.state, batch, self.rng)
    loss = float(metrics["loss"])  # blocks until the step is done
    jax.block_until_ready(self.state)
    self.seconds = time.perf_counter() - start
    return loss


class Peer:
  """Hugging Face LlamaForCausalLM + torch AdamW, eager; float32, or bfloat16 autocast.

  With `cfg.matmul_dtype == "bfloat16"` the forward and backward run under torch's CPU bfloat16
  autocast (weights and AdamW state stay float32, the loss is taken in float32), the usual
  torch mixed precision and the same split as ours; where ours keeps the logits' product float32
  (`float32_products`), the peer's output layer runs outside autocast on float32 inputs too.
  """

  def __init__(self, cfg: model_lib.ModelConfig):
    import torch  # pylint: disable=g-import-not-at-top: the peer is optional (extras "bench")
    self.torch = torch
    self.model = peers.hf_llama(cfg).train()
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=0.01)
    self.attn = self.model.config._attn_implementation  # pylint: disable=protected-access
    self.bf16 = cfg.matmul_dtype == "bfloat16"
    if self.bf16 and cfg.matmul_dtype_of("logits") == "float32":
      head = self.model.lm_head

      def float32_head(x):
        with torch.autocast("cpu", enabled=False):
          return torch.nn.functional.linear(x.float(), head.weight)

      head.forward = float32_head

  def step(self, tokens_BL1: np.ndarray) -> float:
    torch = self.torch
    tokens = torch.from_numpy(tokens_BL1.astype(np.int64))
    start = time.perf_counter()
    self.opt.zero_grad(set_to_none=True)
    # labels = inputs shifted inside HF: pass the L + 1 row so both sides predict L tokens.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
      out = self.model(input_ids=tokens[:, :-1], labels=None)
    logits = out.logits.float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             tokens[:, 1:].reshape(-1))
    loss.backward()
    self.opt.step()
    value = loss.item()
    self.seconds = time.perf_counter() - start
    return value


def matmul_ceiling_gflops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
  """Best float32 n x n x n matmul rate of JAX and of torch on this machine (GFLOP/s)."""
  import torch  # pylint: disable=g-import-not-at-top
  flops = 2.0 * n ** 3
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  mm(a, b).block_until_ready()
  jax_best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    mm(a, b).block_until_ready()
    jax_best = min(jax_best, time.perf_counter() - start)
  ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
  torch.mm(ta, tb)
  torch_best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(ta, tb)
    torch_best = min(torch_best, time.perf_counter() - start)
  return {"jax": flops / jax_best / 1e9, "torch": flops / torch_best / 1e9}


def _hlo_ops(hlo: str) -> dict[str, tuple[bool, str]]:
  """{instruction: (whether it is or calls a dot, its op_name metadata)} of an HLO module's text."""
  computations, current = {}, None
  for line in hlo.splitlines():
    if line and not line.startswith(" "):
      current = line.split(" ", 1)[0].lstrip("%")
      computations[current] = False
    elif current is not None and " dot(" in line:
      computations[current] = True
  ops = {}
  for line in hlo.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(", line)
    if match:
      calls = re.search(r"calls=%?([\w.\-]+)", line)
      meta = re.search(r'op_name="([^"]*)"', line)
      ops[match.group(1)] = (match.group(2) == "dot" or bool(calls and computations.get(
          calls.group(1))), meta.group(1) if meta else "")
  return ops


def profile(name: str, directory: str, steps: int = 2, top: int = 15) -> None:
  """Prints where ours' train step spends its time: XLA:CPU op time per HLO instruction.

  A `jax.profiler` trace of `steps` steps (kept in `directory`), op durations summed per
  instruction of the compiled step, and shares of matmuls (instructions that are or call a
  `dot`), transposes/copies and the rest, with the top instructions and their model code.
  """
  cfg = _model_config(name)
  ours = Ours(cfg)
  for i in range(2):
    ours.step(_batch(cfg, i))
  ops = _hlo_ops(ours.fns.train_step_hlo(ours.state, ours.batch(_batch(cfg, 0)), ours.rng))
  jax.profiler.start_trace(directory, create_perfetto_trace=True)
  for i in range(steps):
    ours.step(_batch(cfg, 2 + i))
  jax.profiler.stop_trace()
  path = max(glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True),
             key=os.path.getmtime)
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  totals = collections.Counter()
  for e in events:
    args = e.get("args", {})
    if (e.get("ph") == "X" and args.get("hlo_module") == "jit_train_step"
        and args.get("hlo_op") in ops):
      totals[args["hlo_op"]] += e["dur"] / 1e3 / steps  # ms per step
  total = sum(totals.values()) or 1.0
  kinds = collections.Counter()
  for op, ms in totals.items():
    kinds["matmul" if ops[op][0] else "transpose/copy" if ("copy" in op or "transpose" in op)
          else "other"] += ms
  shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in kinds.most_common())
  print(f"{name}: XLA:CPU op time {total:.0f} ms per step ({steps} traced steps, trace in "
        f"{directory}); {shares}")
  for op, ms in totals.most_common(top):
    print(f"  {ms:8.1f} ms {100 * ms / total:5.1f}%  {op:32} {ops[op][1][-90:]}")


def run_shape(name: str, steps: int, warmup: int, dtype: str = "float32",
              float32_products: str | None = None) -> dict[str, float]:
  """Alternates ours and the peer on one shape; returns tokens/s, GFLOP/s and losses."""
  cfg = _model_config(name, dtype, float32_products)
  ours, peer = Ours(cfg), Peer(cfg)
  # With bfloat16 products, our float32 step too (same initial weights and batches).
  ours32 = Ours(_model_config(name)) if dtype == "bfloat16" else None
  ours_s, peer_s, ours32_s = [], [], []
  for i in range(warmup + steps):
    tokens = _batch(cfg, seed=i)
    ours_loss = ours.step(tokens)
    peer_loss = peer.step(tokens)
    if ours32 is not None:
      ours32_loss = ours32.step(tokens)
    if i >= warmup:
      ours_s.append(ours.seconds)
      peer_s.append(peer.seconds)
      if ours32 is not None:
        ours32_s.append(ours32.seconds)
  tokens_per_step = BATCH * LENGTH
  flops_token = train_steps.flops_per_token(cfg, LENGTH)
  ours_tok = tokens_per_step / statistics.median(ours_s)
  peer_tok = tokens_per_step / statistics.median(peer_s)
  extra = {} if ours32 is None else {
      "ours_float32_step_s": ours32_s, "ours_float32_loss": ours32_loss,
      "ratio_vs_float32": statistics.median(ours32_s) / statistics.median(ours_s)}
  return extra | {
      "ours_step_s": ours_s, "peer_step_s": peer_s,
      "ours_tok_s": ours_tok, "peer_tok_s": peer_tok, "ratio": ours_tok / peer_tok,
      "ratio_best": min(peer_s) / min(ours_s),
      "ours_gflops": ours_tok * flops_token / 1e9, "peer_gflops": peer_tok * flops_token / 1e9,
      "ours_loss": ours_loss, "peer_loss": peer_loss, "peer_attn": peer.attn,
      "params": model_lib.count_params(ours.state.params),
  }


def main(argv: list[str]) -> int:
  """Runs the benchmark; prints a table and, last, one JSON line."""
  parser = argparse.ArgumentParser(prog="python -m restem_jax.bench training")
  parser.add_argument("--shapes", default="tiny,small")
  parser.add_argument("--steps", type=int, default=7, help="timed steps per side (median)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="products of both sides (bfloat16: ours with model.matmul_dtype "
                           "bfloat16, everything else float32, and our float32 step alongside; "
                           "the peer under torch's bfloat16 autocast)")
  parser.add_argument("--float32_products", default=None,
                      help="with --dtype bfloat16: the model parts whose products stay float32 "
                           "(model.float32_products; default the model's, 'logits'; '' none), "
                           "the peer's output layer with them when they hold 'logits'")
  parser.add_argument("--profile", default="",
                      help="a directory: instead of the benchmark, trace ours' float32 step on "
                           "each shape and print its op time per HLO instruction")
  args = parser.parse_args(argv)
  if args.profile:
    for name in args.shapes.split(","):
      profile(name, os.path.join(args.profile, name))
    return 0

  import torch  # pylint: disable=g-import-not-at-top
  threads = os.cpu_count() or 1
  torch.set_num_threads(threads)  # XLA's CPU client also uses one thread per core
  # XLA's CPU runtime flushes denormals to zero; the peer gets the same arithmetic (denormal
  # gradients of a freshly initialised model would otherwise slow it down).
  torch.set_flush_denormal(True)
  ceiling = matmul_ceiling_gflops()
  results = {name: run_shape(name, args.steps, args.warmup, args.dtype, args.float32_products)
             for name in args.shapes.split(",")}
  # Measured again at the end and the best kept: on a shared machine a single measurement may
  # land in a busy moment and flatter the fractions below.
  ceiling = {k: max(v, matmul_ceiling_gflops()[k]) for k, v in ceiling.items()}
  best_ceiling = max(ceiling.values())

  kept = (_model_config("tiny", args.dtype, args.float32_products).float32_products
          if args.dtype == "bfloat16" else "")
  print(f"train step, {args.dtype} CPU ({host.cpu_model()}), "
        + (f"float32 products: {kept or 'none'}, " if args.dtype == "bfloat16" else "")
        + f"batch {BATCH} x {LENGTH} tokens, "
        f"{threads} threads, "
        f"median of {args.steps} steps after {args.warmup} warm-up, AdamW; "
        f"C allocator {host_memory.status()}")
  print(f"float32 matmul ceiling: jax {ceiling['jax']:.1f} GFLOP/s, "
        f"torch {ceiling['torch']:.1f} GFLOP/s")
  print(f"{'shape':6} {'params':>10} {'ours tok/s':>11} {'peer tok/s':>11} {'ratio':>6} "
        f"{'ours GFLOP/s':>13} {'peer GFLOP/s':>13} {'ours/ceil':>9} {'peer/ceil':>9}")
  for name, r in results.items():
    print(f"{name:6} {r['params']:>10,} {r['ours_tok_s']:>11.0f} {r['peer_tok_s']:>11.0f} "
          f"{r['ratio']:>5.2f}x {r['ours_gflops']:>13.1f} {r['peer_gflops']:>13.1f} "
          f"{r['ours_gflops'] / best_ceiling:>9.2f} {r['peer_gflops'] / best_ceiling:>9.2f}")
  for name, r in results.items():
    print(f"{name} step seconds, ours: {' '.join(f'{t:.2f}' for t in r['ours_step_s'])}; "
          f"peer: {' '.join(f'{t:.2f}' for t in r['peer_step_s'])}; "
          f"fastest-step ratio {r['ratio_best']:.2f}x; "
          f"loss after the last step: ours {r['ours_loss']:.3f}, peer {r['peer_loss']:.3f}")
    if "ratio_vs_float32" in r:
      print(f"{name} our float32 step seconds: "
            f"{' '.join(f'{t:.2f}' for t in r['ours_float32_step_s'])}; bfloat16 products "
            f"{r['ratio_vs_float32']:.2f}x of float32; loss after the last step: float32 "
            f"{r['ours_float32_loss']:.4f}, bfloat16 products {r['ours_loss']:.4f}")
  summary = {"bench": "training", "cpu_model": host.cpu_model(), "dtype": args.dtype,
             "float32_products": kept,
             "batch": BATCH, "length": LENGTH, "threads": threads,
             "load_average": os.getloadavg()[0], "host_malloc": host_memory.status(),
             "matmul_ceiling_gflops": best_ceiling}
  for name, r in results.items():
    summary[f"ours_tok_s_{name}"] = r["ours_tok_s"]
    summary[f"peer_tok_s_{name}"] = r["peer_tok_s"]
    summary[f"ratio_{name}"] = r["ratio"]
    summary[f"ratio_best_step_{name}"] = r["ratio_best"]
    summary[f"ours_gflops_{name}"] = r["ours_gflops"]
    summary[f"peer_gflops_{name}"] = r["peer_gflops"]
    summary[f"ceiling_fraction_{name}"] = r["ours_gflops"] / best_ceiling
    summary[f"peer_ceiling_fraction_{name}"] = r["peer_gflops"] / best_ceiling
    if "ratio_vs_float32" in r:
      summary[f"ratio_vs_float32_{name}"] = r["ratio_vs_float32"]
  summary["peer_attn_implementation"] = next(iter(results.values()))["peer_attn"]
  print(json.dumps(summary))
  return 0
