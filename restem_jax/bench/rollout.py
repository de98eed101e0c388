"""`python -m restem_jax.bench rollout`: the whole E-step workload, continuous vs static batching.

Workload: P problems with prompts of 64 to 512 tokens (uniform), n samples each, top-k 40 at
temperature 0.7 (the paper's Generate step), `max_new_tokens` 512, EOS ending samples at spread
lengths. The model (presets tiny/small in the Llama layout, float32, random init) is made to end
samples at roughly geometric lengths: embedding dimension 0 is a constant channel (every token's
embedding has 1.0 there and no layer writes to it), so after the final norm it is nearly
constant, and EOS's embedding gets an extra `b` in it, a logit bonus found by bisection so that
EOS's probability per step on random-token contexts is 1/`--eos_calibration` (90). The model's
own samples are not random contexts: calibrated to 1/128 the measured mean length was 260 (29%
at the limit), to 1/50 it was 52 (tiny), so 90 is set for a mean near 128; the lengths measured
in the run are reported (`length_stats`). Every side runs the same weights
(`convert.hf_tensors`).

Sides, each given the same rows (capacity) and thread count, alternating in one process:
  engine    `rollout.RolloutEngine` (continuous batching);
  static    `sampling.Sampler.generate` (today's static batches of P' prompts x n samples);
  hf        transformers' `generate` (static batches, left padding, num_return_sequences=n);
  hf_cb     transformers' continuous batching (`generate_batch`, paged attention), if it runs
            on this machine (else its error is reported as hf_cb_error).
With `--estep_run=DIR` (a finished run of configs/demo_code.py, e.g. `make demo`'s runs/demo) it
times the loop's own Generate step of iteration 1 instead (`loop.Run.generate`: every training
problem's N samples from DIR's base model into resumable shards), continuous vs static, sides
alternating in one process, each into a fresh directory, and compares the sample shards.

Useful tokens = each sample's tokens up to and including its EOS (or all 512); tokens/s is that
over the call's wall time (prefill included). Peak memory: the process's peak resident set
during each side's timed run (reset before it through /proc/self/clear_refs), over the resident
set at its start. `useful_fraction`: the engine's useful tokens / rows x decode steps it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from restem_jax.bench import host
from restem_jax import model as model_lib
from restem_jax.model import convert
from restem_jax.model import partitioning
from restem_jax import sampling
from restem_jax.sampling import rollout

EOS = 1
TOP_K, TEMPERATURE = 40, 0.7


def _reset_peak() -> float:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets VmHWM to the current RSS
  except OSError:
    pass
  return host.rss_mb("VmRSS")


def _eos_params(cfg: model_lib.ModelConfig, mean: float):
  """Random parameters with the constant channel and an EOS bonus calibrated to ~1/mean."""
  params = jax.jit(lambda k: model_lib.Decoder(cfg).init(k, jnp.zeros((1, 1), jnp.int32)))(
      jax.random.key(0))["params"]
  params = jax.tree.map(np.array, nn.unbox(params))
  params["embedding"][:, 0] = 1.0
  params["layers"]["attn"]["out"][..., 0] = 0.0
  params["layers"]["mlp"]["wo"][..., 0] = 0.0
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, (8, 256)).astype(np.int32)
  forward = jax.jit(lambda p, x: model_lib.Decoder(cfg).apply({"params": p}, x)[0])

  def eos_prob(bonus: float) -> float:
    p = dict(params, embedding=params["embedding"].copy())
    p["embedding"][EOS, 0] = 1.0 + bonus
    logits = np.asarray(forward(p, tokens), np.float64).reshape(-1, cfg.vocab_size)
    logits /= TEMPERATURE
    kth = np.sort(logits, axis=-1)[:, -TOP_K][:, None]
    kept = np.where(logits >= kth, logits, -np.inf)
    probs = np.exp(kept - kept.max(-1, keepdims=True))
    return float(np.mean(probs[:, EOS] / probs.sum(-1)))

  lo, hi = 0.0, 64.0
  for _ in range(30):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if eos_prob(mid) < 1.0 / mean else (lo, mid)
  params["embedding"][EOS, 0] = 1.0 + 0.5 * (lo + hi)
  return params, 0.5 * (lo + hi)


class _Ours:
  def __init__(self, cfg, params, capacity, steps_per_visit, refill):
    mesh = partitioning.make_mesh((1, 1, 1), jax.devices()[:1])
    self.sampler = sampling.Sampler(params, cfg, mesh=mesh, eos_id=EOS, batching="static")
    self.engine = rollout.RolloutEngine(self.sampler, capacity=capacity,
                                        steps_per_visit=steps_per_visit, refill=refill)
    self.capacity = capacity

  def run(self, side, prompts, n, max_new, seed):
    ids = [f"problem-{i}" for i in range(len(prompts))]
    args = dict(num_samples=n, strategy=sampling.TopK(TOP_K, TEMPERATURE),
                max_new_tokens=max_new, seed=seed)
    if side == "engine":
      return self.engine.generate(ids, prompts, batch_size=self.capacity, **args)
    return self.sampler.generate(ids, prompts, batch_size=self.capacity, **args)


class _Hf:
  def __init__(self, cfg, params):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    self.torch, self.transformers = torch, transformers
    hf_cfg = transformers.LlamaConfig(**{
        k: v for k, v in convert.hf_config_from_model_config(cfg, eos_id=EOS).items()
        if k not in ("architectures", "model_type")})
    self.model = transformers.LlamaForCausalLM(hf_cfg).float().eval()
    state = {name: torch.from_numpy(np.array(x)) for name, x in convert.hf_tensors(params, cfg)}
    missing, unexpected = self.model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m and "rotary" not in m]:
      raise RuntimeError(f"HF state mismatch: missing {missing}, unexpected {unexpected}")
    self.model.tie_weights()

  def _config(self, n, max_new):
    return self.transformers.GenerationConfig(
        do_sample=True, top_k=TOP_K, temperature=TEMPERATURE, max_new_tokens=max_new,
        eos_token_id=EOS, pad_token_id=0, num_return_sequences=n)

  def generate(self, prompts, n, max_new, capacity) -> list[int]:
    """Static batches of capacity // n prompts x n samples; useful tokens per sample."""
    torch = self.torch
    per = max(1, capacity // n)
    lengths = []
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # as ours: less padding
    for k in range(0, len(order), per):
      batch = [prompts[i] for i in order[k:k + per]]
      L = max(map(len, batch))
      ids = torch.zeros((len(batch), L), dtype=torch.long)
      mask = torch.zeros((len(batch), L), dtype=torch.long)
      for r, p in enumerate(batch):  # left padding
        ids[r, L - len(p):] = torch.tensor(p)
        mask[r, L - len(p):] = 1
      with torch.inference_mode():
        out = self.model.generate(ids, attention_mask=mask, generation_config=self._config(
            n, max_new))
      for row in out[:, L:].tolist():
        lengths.append(row.index(EOS) + 1 if EOS in row else len(row))
    return lengths

  def generate_cb(self, prompts, n, max_new, capacity) -> list[int]:
    torch = self.torch
    # As many requests at once as our rows, and pages for all of them at full length (its
    # default sizes the cache from the machine's free memory: gigabytes here).
    longest = max(map(len, prompts)) + max_new
    cb_config = self.transformers.ContinuousBatchingConfig(
        max_requests_per_batch=capacity, max_batch_tokens=max(capacity, 256), page_size=64,
        num_blocks=capacity * -(-longest // 64) + 8)
    with torch.inference_mode():
      out = self.model.generate_batch(inputs=[list(p) for p in prompts],
                                      generation_config=self._config(n, max_new),
                                      continuous_batching_config=cb_config, progress_bar=False)
    if len(out) != len(prompts) * n:
      raise RuntimeError(f"generate_batch returned {len(out)} of {len(prompts) * n} samples")
    lengths = []
    for result in out.values():
      if result.error is not None:
        raise RuntimeError(f"generate_batch: {result.error}")
      toks = list(result.generated_tokens)
      lengths.append(toks.index(EOS) + 1 if EOS in toks else len(toks))
    return lengths


def _useful(results) -> list[int]:
  return [len(s.tokens) for per in results for s in per]


def run_shape(name: str, args) -> dict:
  cfg = model_lib.preset(name, dtype="float32", param_dtype="float32", remat=False,
                         **model_lib.LLAMA_STYLE)
  params, bonus = _eos_params(cfg, args.eos_calibration)
  rng = np.random.default_rng(1)
  lengths = rng.integers(args.prompt_min, args.prompt_max + 1, args.problems)
  prompts = [rng.integers(3, cfg.vocab_size, int(n)).tolist() for n in lengths]
  ours = _Ours(cfg, params, args.capacity, args.steps_per_visit, args.refill)
  hf = None if {"hf", "hf_cb"} <= args.skip else _Hf(cfg, params)
  out: dict = {"eos_bonus": bonus, "params": model_lib.count_params(ours.sampler.params)}
  # Warm-up (compiles) with one seed on both of ours: the engine must equal the static sampler.
  first = {}
  for side in ("engine", "static"):
    start = time.perf_counter()
    first[side] = ours.run(side, prompts, args.samples, args.max_new, seed=0)
    out[f"{side}_first_s"] = time.perf_counter() - start
    host.progress(f"{name} warm-up {side}: {out[f'{side}_first_s']:.1f} s")
  out["identical_to_static"] = all(
      [s.tokens for s in e] == [s.tokens for s in t]
      for e, t in zip(first["engine"], first["static"]))
  lens = np.array(_useful(first["static"]))
  out["length_stats"] = {"mean": float(lens.mean()), "median": float(np.median(lens)),
                         "p90": float(np.percentile(lens, 90)), "max": int(lens.max()),
                         "at_limit": float(np.mean(lens == args.max_new))}
  sides = ["engine", "static"] + [s for s in ("hf", "hf_cb") if s not in args.skip]
  if "hf_cb" in sides:
    try:  # warm-up, and whether it runs here at all
      hf.generate_cb(prompts[:2], 2, 8, args.capacity)
    except Exception as e:  # pylint: disable=broad-except
      out["hf_cb_error"] = f"{type(e).__name__}: {e}"[:500]
      sides.remove("hf_cb")
      host.progress(f"hf_cb error: {out['hf_cb_error']}")
  timed = {side: [] for side in sides}
  tokens = {side: [] for side in sides}
  peaks = {side: [] for side in sides}
  for r in range(args.runs):
    order = sides[r % len(sides):] + sides[:r % len(sides)]  # rotate who goes first
    for side in order:
      base = _reset_peak()
      start = time.perf_counter()
      if side in ("engine", "static"):
        got = _useful(ours.run(side, prompts, args.samples, args.max_new, seed=r + 1))
        if side == "engine":
          out["useful_fraction"] = ours.engine.stats.useful_fraction
          out["visits"] = ours.engine.stats.visits
      elif side == "hf":
        got = hf.generate(prompts, args.samples, args.max_new, args.capacity)
      else:
        got = hf.generate_cb(prompts, args.samples, args.max_new, args.capacity)
      seconds = time.perf_counter() - start
      timed[side].append(seconds)
      tokens[side].append(sum(got))
      peaks[side].append(host.rss_mb("VmHWM") - base)
      host.progress(f"{name} run {r} {side}: {sum(got)} useful tokens in {seconds:.1f} s "
                f"({sum(got) / seconds:.0f} tok/s), mean length {np.mean(got):.1f}")
  for side in sides:
    out[f"{side}_tok_s"] = sum(tokens[side]) / sum(timed[side])
    out[f"{side}_peak_mb"] = max(peaks[side])
    out[f"{side}_mean_len"] = sum(tokens[side]) / (len(tokens[side]) * args.problems
                                                    * args.samples)
  if args.sweep:
    out["sweep"] = _sweep(name, ours, prompts, args)
  for peer, key in (("static", "ratio_vs_static"), ("hf", "ratio_vs_hf"),
                    ("hf_cb", "ratio_vs_hf_cb")):
    if peer in sides:
      out[key] = out["engine_tok_s"] / out[f"{peer}_tok_s"]
  return out


def _sweep(name, ours, prompts, args) -> dict[str, dict[str, float]]:
  """The engine alone at other (steps_per_visit, refill): tokens/s, visits, useful fraction."""
  out, compiled = {}, {args.steps_per_visit}
  engine = ours.engine
  for steps, refill in ((args.steps_per_visit, 1), (args.steps_per_visit, 16), (4, 4),
                        (64, 4), (args.steps_per_visit, args.refill)):
    engine.steps_per_visit, engine.refill = steps, refill
    if steps not in compiled:
      ours.run("engine", prompts[:4], args.samples, args.max_new, seed=99)
      compiled.add(steps)
    start = time.perf_counter()
    got = sum(_useful(ours.run("engine", prompts, args.samples, args.max_new, seed=1)))
    seconds = time.perf_counter() - start
    out[f"S{steps}_refill{refill}"] = {"tok_s": got / seconds, "visits": engine.stats.visits,
                                       "useful_fraction": engine.stats.useful_fraction}
    host.progress(f"{name} sweep S={steps} refill={refill}: {out[f'S{steps}_refill{refill}']}")
  return out


def estep(run_dir: str, out_dir: str, rounds: int) -> dict:
  """The Generate step of iteration 1 of the configs/demo_code.py run in `run_dir`, both ways.

  The run's vocabulary and base model are reused (its config must equal today's
  configs/demo_code.py in the fields that decide the samples); each side writes its shards into
  OUT_DIR/SIDE{round}. Returns seconds per side and round and whether the shards agree: token
  for token (ids, text, finish reason) and byte for byte (the summed logprob is float32
  arithmetic in programs of different shapes, so its last bits may differ).
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from restem_jax import loop  # pylint: disable=g-import-not-at-top
  run_dir, out = epath.Path(run_dir), epath.Path(out_dir)
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "configs", "demo_code.py")
  spec = importlib.util.spec_from_file_location("demo_code", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  saved = json.loads((run_dir / "config.json").read_text())
  for key in ("model", "data", "vocab", "sampling", "seed", "mesh_shape"):
    mine = config[key].to_dict() if hasattr(config[key], "to_dict") else config[key]
    if json.loads(json.dumps(mine)) != saved[key]:
      raise SystemExit(f"{run_dir}: its config.{key} differs from configs/demo_code.py's")
  config.unlock()
  config.progress_bar = False
  for key in ("num_samples", "temperature", "top_k", "top_p", "shard_problems"):
    config.restem[key] = saved["restem"][key]
  if out.exists():
    shutil.rmtree(out)
  (out / "setup" / "stages").mkdir(parents=True)
  shutil.copy(run_dir / "stages" / "vocab.json", out / "setup" / "stages" / "vocab.json")
  run = loop.Run(config, out / "setup", loop.prepare(config, out / "setup"))
  base = json.loads((run_dir / "stages" / "train_base.json").read_text())["model_dir"]
  sampler = run.sampler(base)
  seconds: dict[str, list[float]] = {"continuous": [], "static": []}
  for r in range(rounds):
    for side in (("continuous", "static") if r % 2 == 0 else ("static", "continuous")):
      run.workdir = out / f"{side}{r}"
      sampler.batching = side
      start = time.perf_counter()
      run.generate(1, base)
      seconds[side].append(time.perf_counter() - start)
      host.progress(f"estep round {r} {side}: {seconds[side][-1]:.1f} s")
  shards = sorted(p.name for p in (out / "continuous0" / "iter1" / "samples").glob("samples-*"))
  dirs = [out / f"{side}{r}" / "iter1" / "samples" for side in seconds for r in range(rounds)]
  same_bytes = all((d / n).read_bytes() == (dirs[0] / n).read_bytes()
                   for d in dirs for n in shards)
  same_tokens, samples = True, 0
  for n in shards:
    rows = [[json.loads(line) for line in (d / n).read_text().splitlines()] for d in dirs]
    samples += len(rows[0])
    for other in rows[1:]:
      same_tokens &= [{k: v for k, v in x.items() if k != "logprob"} for x in rows[0]] == [
          {k: v for k, v in x.items() if k != "logprob"} for x in other]
  return {"bench": "rollout_estep", "run": str(run_dir), "shards": len(shards),
          "samples": samples, "seconds": seconds,
          "ratio_static_over_continuous": [s / c for s, c in zip(seconds["static"],
                                                                  seconds["continuous"])],
          "identical_samples": same_tokens, "identical_bytes": same_bytes,
          "load_avg": os.getloadavg()[0]}


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m restem_jax.bench rollout")
  parser.add_argument("--shapes", default="tiny,small")
  parser.add_argument("--problems", type=int, default=32)
  parser.add_argument("--samples", type=int, default=8, help="samples per problem")
  parser.add_argument("--capacity", type=int, default=64, help="rows decoded together, all sides")
  parser.add_argument("--max_new", type=int, default=512)
  parser.add_argument("--prompt_min", type=int, default=64)
  parser.add_argument("--prompt_max", type=int, default=512)
  parser.add_argument("--eos_calibration", type=float, default=90.0,
                      help="EOS probability per step on random contexts: 1/this")
  parser.add_argument("--runs", type=int, default=2, help="timed rounds (sides rotate)")
  parser.add_argument("--steps_per_visit", type=int, default=16)
  parser.add_argument("--refill", type=int, default=4)
  parser.add_argument("--skip", default="", help="comma list of: hf,hf_cb")
  parser.add_argument("--sweep", action="store_true",
                      help="also time the engine at other steps_per_visit / refill settings")
  parser.add_argument("--quick", action="store_true",
                      help="a short run: tiny only, 16 problems x 8 samples, 32 rows, 1 round")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--estep_run", default="",
                      help="time the Generate step of this configs/demo_code.py run instead")
  parser.add_argument("--estep_out", default="/tmp/restem_estep_bench",
                      help="where --estep_run's sides write their shards (replaced)")
  args = parser.parse_args(argv)
  if args.estep_run:
    result = estep(args.estep_run, args.estep_out, args.runs)
    print(json.dumps(result))
    return 0
  if args.quick:
    args.shapes, args.problems, args.samples, args.capacity, args.runs = "tiny", 16, 8, 32, 1
  args.skip = set(filter(None, args.skip.split(",")))
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the sampling benchmark's peer
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  torch.set_flush_denormal(True)
  load_start = os.getloadavg()[0]
  results = {name: run_shape(name, args) for name in args.shapes.split(",")}
  load_end = os.getloadavg()[0]
  print(f"rollout, float32 CPU, {args.threads} threads, {args.problems} problems x "
        f"{args.samples} samples, prompts {args.prompt_min}-{args.prompt_max} tokens, "
        f"max_new_tokens {args.max_new}, top-k {TOP_K} T={TEMPERATURE}, {args.capacity} rows, "
        f"{args.runs} timed rounds; load {load_start:.1f} -> {load_end:.1f}")
  print(f"{'shape':6} {'side':7} {'tok/s':>8} {'peak MB':>8} {'mean len':>9}")
  for name, r in results.items():
    for side in ("engine", "static", "hf", "hf_cb"):
      if f"{side}_tok_s" in r:
        print(f"{name:6} {side:7} {r[side + '_tok_s']:>8.0f} {r[side + '_peak_mb']:>8.0f} "
              f"{r[side + '_mean_len']:>9.1f}")
    print(f"{name:6} lengths {r['length_stats']}, useful fraction "
          f"{r.get('useful_fraction', 0):.3f}, identical_to_static {r['identical_to_static']}"
          + (f", hf_cb_error: {r['hf_cb_error']}" if "hf_cb_error" in r else ""))
  summary = {"bench": "rollout", "threads": args.threads, "problems": args.problems,
             "samples": args.samples, "capacity": args.capacity, "max_new_tokens": args.max_new,
             "steps_per_visit": args.steps_per_visit, "refill": args.refill,
             "load_avg_start": load_start, "load_avg_end": load_end}
  for name, r in results.items():
    for key, value in r.items():
      summary[f"{key}_{name}"] = value
  summary["shapes"] = results  # the same figures per shape: {"tiny": {"ratio_vs_static", ..}}
  print(json.dumps(summary))
  return 0
