"""`python -m restem_jax.bench sampling`: sampling throughput against Hugging Face generate.

Ours: `sampling.Sampler.generate` (jitted prefill + `lax.while_loop` decode) on one CPU device.
Peer: Hugging Face `LlamaForCausalLM.generate` (PyTorch, eager, random init), do_sample with
top-k 40 and temperature 0.7, the paper's Generate-step setting, which ours uses too. Our model is
configured the Llama way (`model.LLAMA_STYLE`: sequential block, RMSNorm, SwiGLU, RoPE, tied
embeddings, one K/V head as in the presets), float32 on both sides, with the same number of
threads. torch runs with OMP_WAIT_POLICY=PASSIVE by default: on a machine shared with other
work its default (spinning) wait makes it several times slower, which would flatter ours. Shapes `tiny` and `small`; batch 64 distinct prompts of 64 tokens, 64 new tokens, and
all 64 are generated (no EOS on either side). Runs alternate ours / peer; the figure is the
median of the timed runs after one warm-up run each; our compile time (first call minus the
median) is reported apart. Tokens/s counts generated tokens over the whole call (prefill
included) on both sides.

More rows, ours only:
  prefix    8 problems x 32 samples, prompt = a 384-token few-shot prefix + a 32-token question,
            against the same with the 32-token question alone (64 new tokens each): with the
            prompt prefilled once per problem and read once per problem per step, the long
            prompt should cost little; also with the prefix declared (`shared_prefix`);
  scaling   8 problems x 8, 32, 128 samples (tiny): time should grow about linearly;
  memory    peak resident memory of a process that runs one shape (one side per process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from restem_jax.bench import host
from restem_jax.bench import peers
from restem_jax import model as model_lib
from restem_jax.model import partitioning
from restem_jax import sampling

BATCH = 64
PROMPT = 64
NEW = 64
TOP_K, TEMPERATURE = 40, 0.7
PREFIX_PROBLEMS, PREFIX_SAMPLES, PREFIX_LEN, QUESTION_LEN = 8, 32, 384, 32
SCALING_PROBLEMS, SCALING_SAMPLES = 8, (8, 32, 128)
ROWS = 256  # rows decoded together in the prefix and scaling rows


def _model_config(name: str) -> model_lib.ModelConfig:
  return model_lib.preset(name, dtype="float32", param_dtype="float32", remat=False,
                          **model_lib.LLAMA_STYLE)


def _prompts(cfg: model_lib.ModelConfig, count: int, length: int, seed: int) -> np.ndarray:
  # Ids from 3 up: no pad/EOS/UNK in the prompts.
  return np.random.default_rng(seed).integers(3, cfg.vocab_size, (count, length), np.int32)


class Ours:
  """The sampler on one CPU device, EOS off, top-k 40 at temperature 0.7."""

  def __init__(self, cfg: model_lib.ModelConfig):
    params = jax.jit(lambda k: model_lib.Decoder(cfg).init(k, jnp.zeros((1, 1), jnp.int32)))(
        jax.random.key(0))["params"]
    mesh = partitioning.make_mesh((1, 1, 1), jax.devices()[:1])
    self.sampler = sampling.Sampler(nn.unbox(params), cfg, mesh=mesh, eos_id=None)
    self.seed = 0

  def generate(self, prompts_PL: np.ndarray, num_samples: int = 1, batch_size: int = BATCH,
               shared_prefix: tuple[int, ...] = ()) -> float:
    """Seconds for one call; checks that every sample got all NEW tokens."""
    self.seed += 1  # fresh samples each run, as each ReST^EM iteration draws
    start = time.perf_counter()
    results = self.sampler.generate(
        [f"problem-{i}" for i in range(len(prompts_PL))], prompts_PL.tolist(),
        num_samples=num_samples, strategy=sampling.TopK(TOP_K, TEMPERATURE),
        max_new_tokens=NEW, seed=self.seed, batch_size=batch_size, shared_prefix=shared_prefix)
    seconds = time.perf_counter() - start
    lengths = {len(s.tokens) for per in results for s in per}
    if lengths != {NEW}:
      raise AssertionError(f"ours generated {lengths} tokens, expected {NEW}")
    return seconds


class Peer:
  """Hugging Face LlamaForCausalLM.generate, float32, eager, sampling without EOS."""

  def __init__(self, cfg: model_lib.ModelConfig):
    import torch  # pylint: disable=g-import-not-at-top: the peer is optional (extras "bench")
    self.torch = torch
    self.model = peers.hf_llama(cfg).eval()
    # No EOS: every row generates all NEW tokens, as ours does.
    self.model.generation_config.eos_token_id = None
    self.attn = self.model.config._attn_implementation  # pylint: disable=protected-access

  def generate(self, prompts_PL: np.ndarray) -> float:
    torch = self.torch
    tokens = torch.from_numpy(prompts_PL.astype(np.int64))
    start = time.perf_counter()
    with torch.inference_mode():
      out = self.model.generate(tokens, attention_mask=torch.ones_like(tokens), do_sample=True,
                                top_k=TOP_K, temperature=TEMPERATURE, max_new_tokens=NEW,
                                pad_token_id=0)
    seconds = time.perf_counter() - start
    if out.shape[1] != prompts_PL.shape[1] + NEW:
      raise AssertionError(f"peer generated {out.shape[1] - prompts_PL.shape[1]} tokens")
    return seconds


def run_shape(name: str, runs: int) -> dict[str, float]:
  """Ours vs the peer on one shape, alternating; tokens/s of generated tokens."""
  cfg = _model_config(name)
  ours, peer = Ours(cfg), Peer(cfg)
  prompts = _prompts(cfg, BATCH, PROMPT, seed=1)
  first = ours.generate(prompts)  # compiles
  peer.generate(prompts)
  ours_s, peer_s = [], []
  for i in range(runs):
    # Each round times both back to back, the first one alternating, so that a change in the
    # machine's load hits both sides of a round alike.
    if i % 2:
      peer_s.append(peer.generate(prompts))
      ours_s.append(ours.generate(prompts))
    else:
      ours_s.append(ours.generate(prompts))
      peer_s.append(peer.generate(prompts))
  tokens = BATCH * NEW
  ours_med, peer_med = statistics.median(ours_s), statistics.median(peer_s)
  host.progress(f"{name}: ours {ours_s} s, peer {peer_s} s")
  return {"ours_tok_s": tokens / ours_med, "peer_tok_s": tokens / peer_med,
          # the median of the rounds' ratios: robust to load that drifts during the run
          "ratio": statistics.median(p / o for p, o in zip(peer_s, ours_s)),
          "compile_s": first - ours_med,
          "ours_s": ours_s, "peer_s": peer_s, "peer_attn": peer.attn,
          "params": model_lib.count_params(ours.sampler.params)}


def run_prefix(name: str, runs: int) -> dict[str, float]:
  """8 problems x 32 samples: 384-token prefix + 32-token question vs the question alone.

  "long" prefills each problem's whole prompt once for its 32 samples (the default);
  "declared" also passes the prefix as `shared_prefix`, so a batch computes it once.
  """
  cfg = _model_config(name)
  ours = Ours(cfg)
  questions = _prompts(cfg, PREFIX_PROBLEMS, QUESTION_LEN, seed=2)
  prefix = _prompts(cfg, 1, PREFIX_LEN, seed=3)
  long = np.concatenate([np.repeat(prefix, PREFIX_PROBLEMS, axis=0), questions], axis=1)
  shared = tuple(int(t) for t in prefix[0])
  timed = {"long": [], "declared": [], "short": []}
  variants = [("long", long, ()), ("declared", long, shared), ("short", questions, ())]
  for i in range(runs + 1):
    for kind, prompts, declared in variants[i % 3:] + variants[:i % 3]:  # rotate the order
      seconds = ours.generate(prompts, num_samples=PREFIX_SAMPLES, batch_size=ROWS,
                              shared_prefix=declared)
      if i:  # the first of each compiles
        timed[kind].append(seconds)
  tokens = PREFIX_PROBLEMS * PREFIX_SAMPLES * NEW
  host.progress(f"prefix {name}: {timed}")
  long_tok = tokens / statistics.median(timed["long"])
  declared_tok = tokens / statistics.median(timed["declared"])
  short_tok = tokens / statistics.median(timed["short"])
  # Ratios: the median of the rounds' ratios (robust to load that drifts during the run).
  return {"with_prefix_tok_s": long_tok, "declared_prefix_tok_s": declared_tok,
          "without_prefix_tok_s": short_tok,
          "ratio": statistics.median(s / l for s, l in zip(timed["short"], timed["long"])),
          "declared_ratio": statistics.median(
              s / d for s, d in zip(timed["short"], timed["declared"]))}


def run_scaling(name: str, runs: int) -> dict[int, float]:
  """Seconds for 8 problems x N samples, N in SCALING_SAMPLES."""
  cfg = _model_config(name)
  ours = Ours(cfg)
  prompts = _prompts(cfg, SCALING_PROBLEMS, PROMPT, seed=4)
  out = {}
  for n in SCALING_SAMPLES:
    ours.generate(prompts, num_samples=n, batch_size=ROWS)
    out[n] = statistics.median(ours.generate(prompts, num_samples=n, batch_size=ROWS)
                               for _ in range(runs))
    host.progress(f"scaling N={n}: {out[n]:.3f} s")
  return out


def memory_child(side: str, name: str) -> dict[str, float]:
  """In a fresh process: resident memory after building the model, and the peak over 2 runs."""
  cfg = _model_config(name)
  runner = Ours(cfg) if side == "ours" else Peer(cfg)
  prompts = _prompts(cfg, BATCH, PROMPT, seed=1)
  base = host.rss_mb("VmRSS")
  for _ in range(2):
    runner.generate(prompts)
  return {"base_mb": base, "peak_mb": host.rss_mb("VmHWM")}


def run_memory(name: str, threads: int) -> dict[str, dict[str, float]]:
  out = {}
  for side in ("ours", "peer"):
    result = subprocess.run(
        [sys.executable, "-m", "restem_jax.bench", "sampling", f"--memory_child={side}:{name}",
         f"--threads={threads}"], capture_output=True, text=True, check=False)
    if result.returncode:
      raise RuntimeError(f"memory run {side}:{name} failed:\n{result.stderr[-3000:]}")
    out[side] = json.loads(result.stdout.strip().splitlines()[-1])
    host.progress(f"memory {name} {side}: {out[side]}")
  return out


def main(argv: list[str]) -> int:
  """Runs the benchmark; prints a table and, last, one JSON line."""
  parser = argparse.ArgumentParser(prog="python -m restem_jax.bench sampling")
  parser.add_argument("--shapes", default="tiny,small")
  parser.add_argument("--runs", type=int, default=3, help="timed runs per side (median)")
  parser.add_argument("--prefix_shapes", default="tiny,small")
  parser.add_argument("--scaling_shape", default="tiny")
  parser.add_argument("--skip", default="", help="comma list of: prefix,scaling,memory")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--peer_omp_wait_policy", default="PASSIVE",
                      help="OMP_WAIT_POLICY for torch; ACTIVE (its default) spins, and on a "
                           "machine shared with other work that slows it down many times")
  parser.add_argument("--memory_child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  # Read by torch's OpenMP runtime when it loads, so set before the import (and inherited by
  # the memory runs' processes).
  os.environ["OMP_WAIT_POLICY"] = args.peer_omp_wait_policy
  import torch  # pylint: disable=g-import-not-at-top
  # XLA's CPU client runs one thread per core it may use; torch gets as many.
  torch.set_num_threads(args.threads)
  # XLA's CPU runtime flushes denormals to zero; the peer gets the same arithmetic.
  torch.set_flush_denormal(True)
  if args.memory_child:
    side, name = args.memory_child.split(":")
    print(json.dumps(memory_child(side, name)))
    return 0
  skip = set(filter(None, args.skip.split(",")))
  shapes = args.shapes.split(",")
  # Other work on the machine slows the peer's thread pool far more than ours: record it.
  load_start = os.getloadavg()[0]
  results = {name: run_shape(name, args.runs) for name in shapes}
  prefix = ({} if "prefix" in skip else
            {name: run_prefix(name, args.runs) for name in args.prefix_shapes.split(",")})
  scaling = {} if "scaling" in skip else run_scaling(args.scaling_shape, args.runs)
  memory = {} if "memory" in skip else {name: run_memory(name, args.threads) for name in shapes}

  load_end = os.getloadavg()[0]
  print(f"sampling, float32 CPU, {args.threads} threads (torch.set_num_threads and XLA's CPU "
        f"client), batch {BATCH} x {PROMPT} prompt tokens, {NEW} new tokens, top-k {TOP_K} "
        f"T={TEMPERATURE}, median of {args.runs} runs after a warm-up, alternating ours/peer; "
        f"1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the end; "
        f"peer OMP_WAIT_POLICY={args.peer_omp_wait_policy}")
  print(f"{'shape':6} {'params':>10} {'ours tok/s':>11} {'peer tok/s':>11} {'ratio':>7} "
        f"{'compile s':>10}")
  for name, r in results.items():
    print(f"{name:6} {r['params']:>10,} {r['ours_tok_s']:>11.0f} {r['peer_tok_s']:>11.0f} "
          f"{r['ratio']:>6.2f}x {r['compile_s']:>10.1f}")
  if prefix:
    print(f"prefix sharing: {PREFIX_PROBLEMS} problems x {PREFIX_SAMPLES} samples, "
          f"{PREFIX_LEN}-token prefix + {QUESTION_LEN}-token question vs question only")
    for name, r in prefix.items():
      print(f"  {name:6} with prefix {r['with_prefix_tok_s']:>8.0f} tok/s, without "
            f"{r['without_prefix_tok_s']:>8.0f} tok/s, ratio {r['ratio']:.2f}; prefix declared "
            f"as shared_prefix {r['declared_prefix_tok_s']:>8.0f} tok/s, ratio "
            f"{r['declared_ratio']:.2f}")
  if scaling:
    base = scaling[SCALING_SAMPLES[0]]
    print(f"scaling ({args.scaling_shape}, {SCALING_PROBLEMS} problems, {ROWS} rows a batch): "
          + ", ".join(f"N={n}: {s:.2f}s ({s / base:.1f}x)" for n, s in scaling.items()))
  for name, m in memory.items():
    print(f"peak memory ({name}, one process per side): " + ", ".join(
        f"{side} {v['peak_mb']:.0f} MB peak RSS ({v['peak_mb'] - v['base_mb']:+.0f} MB over "
        f"the model loaded)" for side, v in m.items()))

  summary = {"bench": "sampling", "threads": args.threads, "batch": BATCH,
             "prompt_tokens": PROMPT, "new_tokens": NEW, "load_avg_start": load_start,
             "load_avg_end": load_end, "peer_omp_wait_policy": args.peer_omp_wait_policy}
  for name, r in results.items():
    summary[f"ours_tok_s_{name}"] = r["ours_tok_s"]
    summary[f"peer_tok_s_{name}"] = r["peer_tok_s"]
    summary[f"ratio_{name}"] = r["ratio"]
    summary[f"compile_s_{name}"] = r["compile_s"]
  for name, r in prefix.items():
    summary[f"prefix_ratio_{name}"] = r["ratio"]
    summary[f"prefix_tok_s_{name}"] = r["with_prefix_tok_s"]
    summary[f"noprefix_tok_s_{name}"] = r["without_prefix_tok_s"]
    summary[f"prefix_ratio_declared_{name}"] = r["declared_ratio"]
  if prefix:
    # The default path (prefix not declared) on the weaker shape.
    summary["prefix_ratio"] = min(r["ratio"] for r in prefix.values())
    summary["prefix_ratio_declared"] = min(r["declared_ratio"] for r in prefix.values())
  if scaling:
    summary["scaling_s"] = {str(n): s for n, s in scaling.items()}
  for name, m in memory.items():
    for side, v in m.items():
      summary[f"{side}_peak_rss_mb_{name}"] = v["peak_mb"]
      summary[f"{side}_rss_over_model_mb_{name}"] = v["peak_mb"] - v["base_mb"]
  summary["peer_attn_implementation"] = next(iter(results.values()))["peer_attn"]
  print(json.dumps(summary))
  return 0
