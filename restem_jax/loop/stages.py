"""The ReST^EM loop as a state machine on disk: generate -> score -> filter -> improve -> evaluate.

Every stage writes its outputs atomically and then a marker `DIR/stages/NAME.json` holding its
result; a stage whose marker exists is not run again, and the long stages (generation, scoring,
training) also resume inside themselves (sample shards, score shards, the trainer's Orbax
checkpoints). So `kill -9` at any moment and re-running the same command continues the run, and
with the same seed the final summary equals an uninterrupted run's.

Run directory:
  config.json                the resolved config (a resume with a different one is refused)
  vocab.model                the vocabulary used (SentencePiece, or a copy of a tokenizer.json)
  models/init/               from-scratch runs: the random initial model
  train/{base,sft_human,iterN}/   trainer directories (best_model/ inside is the model)
  iterN/samples/samples-*.jsonl   the Generate step's samples (sample_shards), scored
                                  shard by shard into iterN/scores/
  iterN/samples/round-RR/, iterN/scores/round-RR/   the same per round, for
                             restem.budget="adaptive" (`adaptive.py`)
  iterN/kept/kept.jsonl      the filtered fine-tuning data (a seqio Task reads it)
  eval/MODEL/TASK-SPLIT-{greedy,sampled}.jsonl   evaluation samples with verdicts, each with
                             its problem's question and reference answer (greedy: the prompt)
  tensorboard/restem/        loop scalars per model (base at step 0, iterN at step N: greedy
                             accuracy, pass@k, maj@k per split and task) and per iteration
                             (samples, correct, kept, solve rate); tensorboard/MODEL/ for the
                             other models (sft_human); the trainers' own under train/NAME/
  stages/finished.json       the run finished (a rerun of the same command only reports)
  summary.json, report.md, *.png, log.txt

Inputs are checked before the first stage (`preflight`): a missing, empty or malformed data file
or a missing checkpoint stops the run in seconds with a `cli.UserError`, leaving no finished
stage, so the corrected command runs in the same directory (`run_dir`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from etils import epath

from restem_jax import cli
from restem_jax import config_lib
from restem_jax.data import finetune
from restem_jax.data import truth
from restem_jax.data import variants
from restem_jax import file_io
from restem_jax.loop import adaptive
from restem_jax.loop import estep
from restem_jax.loop import evaluation
from restem_jax.loop import inputs
from restem_jax.loop import preflight
from restem_jax.loop import report
from restem_jax.loop import run_dir
from restem_jax.loop import stopping
from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax.model import partitioning
from restem_jax import sampling
from restem_jax.sampling import shards as sample_shards
from restem_jax.training import batches
from restem_jax.training import metric_writer
from restem_jax.training import trainer as trainer_lib

# Keys a resumed run may change: they extend or re-run later stages without touching earlier
# ones' results (run_dir also never locks settings that do not change results).
RESUMABLE_CHANGES = run_dir.RESUMABLE_CHANGES


def check_and_save_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
  """Saves the resolved config; refuses (`cli.UserError`) one that would change finished work.

  See `run_dir.check_and_save_config`: a workdir where no stage finished takes any config.
  """
  run_dir.check_and_save_config(json.loads(config.to_json_best_effort()), workdir,
                                write=jax.process_index() == 0)


def complete_saved_config(workdir: epath.Path) -> None:
  """Adds `config_lib.ADDED_DEFAULTS` to a run directory's saved config and finished marker
  where they lack them (a run from before those keys existed), so the same command resumes or
  reports it instead of refusing a "different config"."""
  for path, key in ((workdir / run_dir.CONFIG_FILE, None),
                    (workdir / run_dir.STAGES_DIR / run_dir.FINISHED_MARKER, "config")):
    if not path.exists():
      continue
    data = json.loads(path.read_text())
    saved = data[key] if key else data
    missing = {(section, k): v for section, defaults in config_lib.ADDED_DEFAULTS.items()
               if isinstance(saved.get(section), dict)
               for k, v in defaults.items() if k not in saved[section]}
    for (section, k), v in missing.items():
      saved[section][k] = v
    if missing:  # every host writes the same bytes (atomically): none reads a half-done file
      file_io.write_text_atomic(path, json.dumps(data, indent=2) + "\n")


class Run:
  """One ReST^EM run in a directory, on the inputs `inputs.prepare` returned. `run()` drives it."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.PathLike,
               data: inputs.RunData):
    self.config = config
    self.workdir = checkpoints.absolute(workdir)
    self.data = data
    self.mesh = partitioning.make_mesh(tuple(config.mesh_shape))
    self.summary = report.load_summary(self.workdir)
    self._samplers: dict[tuple[str, bool], sampling.Sampler] = {}
    self._writers: dict[str, metric_writer.MetricWriter] = {}

  @property
  def plan(self) -> estep.Plan:
    """The E-step's plan (`inputs.prepare` has derived a num_samples left at 0)."""
    return estep.Plan.from_config(self.config.restem)

  # --- stage bookkeeping -------------------------------------------------------------------

  def stage(self, name: str, fn):
    """Runs `fn()` once: its JSON-able result is stored in stages/NAME.json and reused."""
    return run_dir.stage(self.workdir, name, fn, write=jax.process_index() == 0)

  # --- data --------------------------------------------------------------------------------

  def _decoder_rows(self, task_name: str, split: str):
    seq = {"inputs": self.config.data.inputs_length, "targets": self.config.data.targets_length}
    return finetune.decoder_examples(task_name, seq, split=split, pack=self.config.data.pack)

  # --- models ------------------------------------------------------------------------------

  def model_config(self) -> model_lib.ModelConfig:
    return model_lib.ModelConfig.from_dict(self.config.model.to_dict())

  def sampler(self, model_dir: str, *, for_training: bool = False) -> sampling.Sampler:
    """A sampler holding the model in `model_dir`; one lives at a time (memory).

    `for_training`: the sampler of a trainer's validation reward, whose parameters are replaced
    by the trained ones at each evaluation; it is never returned for sampling `model_dir` itself.
    """
    key = (model_dir, for_training)
    if key not in self._samplers:
      self._samplers.clear()
      params, cfg = checkpoints.load(model_dir, self.mesh)
      vocab = self.data.vocab
      self._samplers[key] = sampling.Sampler(
          params, cfg, mesh=self.mesh, vocab=vocab, eos_id=vocab.eos_id,
          calculator_on=self.config.sampling.get("calculator", -1) > 0)
    return self._samplers[key]

  def _valid_reward_fn(self, start_dir: str):
    """params -> greedy accuracy on the validation problems (the trainer's selection signal)."""
    problems = self.data.problems["valid"][:self.config.trainer_valid_problems]
    if not problems:
      return None
    sampler = self.sampler(start_dir, for_training=True)
    s = self.config.sampling

    def reward_fn(new_params) -> float:
      sampler.set_params(new_params)
      records = evaluation.sample_and_score(
          sampler, problems, self.data.reward, num_samples=1, strategy=sampling.Greedy(),
          max_new_tokens=s.max_new_tokens, seed=self.config.seed, iteration=0,
          stop_strings=self.data.stop_strings, batch_size=s.batch_size)
      return float(np.mean([r["passed"] for r in records]))
    return reward_fn

  def train_model(self, name: str, base_dir: str, rows, trainer_config) -> str:
    """Fine-tunes `base_dir` on decoder `rows` into train/NAME; returns the best model dir."""
    def fn():
      data = batches.ShuffledExamples(rows, trainer_config.batch_size,
                                         seed=self.config.seed)
      valid_rows = None
      try:
        valid_rows = self._decoder_rows(self.data.task_name, "valid")
      except ValueError:  # no human solutions in valid: select by reward only
        pass
      valid_batches = (batches.eval_batches(valid_rows, trainer_config.batch_size)
                       if valid_rows is not None else None)
      config = trainer_config
      if not self.config.progress_bar and config.progress_bar:  # the run's switch wins
        config = ml_collections.ConfigDict({**trainer_config.to_dict(), "progress_bar": False})
      result = trainer_lib.train(
          config, base_checkpoint=base_dir, workdir=self.workdir / "train" / name,
          train_data=data, valid_batches=valid_batches,
          valid_reward_fn=self._valid_reward_fn(base_dir), mesh=self.mesh)
      return {"model_dir": result.model_dir, "best_step": result.best_step,
              "best_score": result.best_score, "steps": result.steps,
              "examples": int(next(iter(rows.values())).shape[0])}
    return self.stage(f"train_{name}", fn)["model_dir"]

  def base_model(self) -> str:
    """The base checkpoint: given, or trained from scratch on the human solutions."""
    if self.config.base_checkpoint:
      return str(self.config.base_checkpoint)

    def init():
      cfg = self.model_config()
      if cfg.vocab_size < self.data.vocab.vocab_size:
        raise ValueError(f"model vocab_size {cfg.vocab_size} < vocabulary size "
                         f"{self.data.vocab.vocab_size}")
      params, _ = partitioning.init_sharded(
          lambda key: model_lib.Decoder(cfg).init(key, np.zeros((1, 1), np.int32)),
          self.mesh, partitioning.DEFAULT_RULES, jax.random.key(self.config.seed))
      out = self.workdir / "models" / "init"
      # save() replaces an interrupted save itself, on process 0 only: another host deleting
      # the directory here could remove process 0's model_config.json mid-save (seen on two
      # processes under load). No host can see COMPLETE before all have entered save().
      if not checkpoints.is_complete(out):
        checkpoints.save(out, params["params"], cfg, vocab_path=self.data.vocab_path)
      return {"model_dir": str(out)}
    init_dir = self.stage("init", init)["model_dir"]
    rows, d = self.human_rows(), self.config.data
    if d.get("solution_variants", 0) > 0:  # configs/jsonl_math.py: number variants of them too
      solved = [p for p in self.data.problems["train"] if p.get("solution")]
      extra = variants.variant_rows(
          solved[:d.human_solutions or None], self.data.vocab,
          per_solution=d.solution_variants, inputs_length=d.inputs_length,
          targets_length=d.targets_length, pack=d.pack, seed=self.config.seed)
      rows = rows if extra is None else {k: np.concatenate([v, extra[k]]) for k, v in rows.items()}
    return self.train_model("base", init_dir, rows, self.config.base_trainer)

  def human_rows(self):
    """Decoder rows of the train problems' human solutions (the first `human_solutions`)."""
    rows = self._decoder_rows(self.data.task_name, "train")
    n = self.config.data.human_solutions
    return {k: v[:n] for k, v in rows.items()} if n > 0 else rows

  # --- evaluation --------------------------------------------------------------------------

  def evaluate(self, model: str, model_dir: str) -> None:
    """Greedy accuracy per split and pass@k / maj@k on test, for the task and transfer tasks.

    Every sample and its verdict is kept in eval/MODEL/TASK-SPLIT-{greedy,sampled}.jsonl;
    summary.json and the report are rewritten.
    """
    def fn():
      entries = []
      for task in (self.data.main,) + self.data.transfer:
        for split in self.config.eval.splits:
          if split in task.problems:
            entries.append(self._evaluate_split(model, model_dir, task, split))
      for entry in entries:
        self.write_scalars(model, metric_writer.evaluation_scalars(entry))
      return {"entries": entries}
    for entry in self.stage(f"eval_{model}", fn)["entries"]:
      report.upsert(self.summary["evaluations"], entry, ("model", "split", "task"))
    self.save_summary()

  def _evaluate_split(self, model: str, model_dir: str, task: inputs.EvalTask, split: str):
    e, s = self.config.eval, self.config.sampling
    sampler = self.sampler(model_dir)
    out_dir = self.workdir / "eval" / model
    problems = task.problems[split][:e.max_problems or None]
    common = dict(max_new_tokens=s.max_new_tokens, iteration=0, stop_strings=task.stop_strings,
                  batch_size=s.batch_size)
    greedy = evaluation.sample_and_score(sampler, problems, task.reward, num_samples=1,
                                         strategy=sampling.Greedy(), seed=self.config.seed,
                                         **common)
    file_io.write_jsonl(out_dir / f"{task.kind}-{split}-greedy.jsonl",
                        evaluation.with_prompts(greedy, problems))
    sampled = []
    if split == "test" and e.num_samples > 0:
      sampled = evaluation.sample_and_score(
          sampler, problems[:e.sampled_problems or None], task.reward,
          num_samples=e.num_samples, seed=self.config.seed + 1,
          strategy=sampling.make_strategy(e.temperature, e.top_k, e.top_p), **common)
      file_io.write_jsonl(out_dir / f"{task.kind}-{split}-sampled.jsonl", sampled)
    entry = evaluation.summarize(model, split, task.kind, greedy, sampled, tuple(e.ks))
    if not any(r["key"] is not None for r in sampled):
      entry["maj_at_k"] = {}  # no extracted answers (code): majority vote is undefined
    logging.info("eval %s %s %s: greedy accuracy %.1f%% on %d problems%s", model, task.kind,
                 split, 100 * entry["accuracy"], entry["num_problems"],
                 "".join(f", pass@{k} {100 * v:.1f}%" for k, v in entry["pass_at_k"].items()))
    return entry

  def write_scalars(self, model: str, scalars: dict[str, float],
                    step: int | None = None) -> None:
    """Loop-level TensorBoard scalars of `model` (see the module docstring for the layout)."""
    run, model_step = metric_writer.loop_run_and_step(model)
    if run not in self._writers:
      self._writers[run] = metric_writer.MetricWriter(self.workdir / "tensorboard" / run)
    self._writers[run].write_scalars(model_step if step is None else step, scalars)
    self._writers[run].flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    self._writers.clear()

  def save_summary(self) -> None:
    if jax.process_index() == 0:
      report.write_summary(self.workdir, self.summary)
      report.write_report(self.workdir, self.summary)

  # --- one ReST^EM iteration ---------------------------------------------------------------

  def estep(self, it: int, generator_dir: str) -> tuple[list[str], dict[str, Any]]:
    """E-step: samples of every training problem and their rewards, resumable.

    Returns the scored shards and, for the adaptive budget, how it was spread
    (samples_per_problem_histogram and the rounds; {} for the uniform budget).
    """
    if self.plan.budget == "uniform":
      self.generate(it, generator_dir)
      return self.score(it), {}

    def fn():
      # The prompts as the Generate step reads them: the seqio Task's, EOS removed.
      prompts = dict(sample_shards.iter_problems(self.data.task_name, split="train",
                                                 eos_id=self.data.vocab.eos_id))
      iter_dir = self.workdir / f"iter{it}"

      def draw(out: epath.Path, ranges) -> None:
        sample_shards.write_ranges(out, self.sampler(generator_dir), ranges,
                                   **self._generate_options(it, generator_dir))
        partitioning.sync_hosts(f"generate_iter{it}_{out.name}")

      def score(samples_dir: epath.Path, scores_dir: epath.Path) -> list[str]:
        return self._score_shards(samples_dir, scores_dir, f"iter{it} {samples_dir.name}")

      result = adaptive.run_rounds(iter_dir, self.data.problems["train"], prompts, self.plan,
                                   draw=draw, score=score)
      hist = estep.histogram(result.samples_per_problem[p["id"]]
                             for p in self.data.problems["train"])
      logging.info("iter%d: %d adaptive rounds, %d samples; samples per problem: %s", it,
                   len(result.rounds), sum(r["samples"] for r in result.rounds), hist)
      return {"score_paths": result.score_paths,
              "spread": {"samples_per_problem_histogram": hist, "rounds": result.rounds}}
    out = self.stage(f"estep_iter{it}", fn)
    return out["score_paths"], out["spread"]

  def _generate_options(self, it: int, generator_dir: str) -> dict[str, Any]:
    """The Generate step's sampling settings (`shards.write_samples` arguments)."""
    r, s = self.config.restem, self.config.sampling
    # The run's mesh spans every host: all hosts run every batch together, process 0 writes.
    spans_hosts = any(d.process_index != jax.process_index() for d in self.mesh.devices.flat)
    hosts = dict(process_index=0, process_count=1,
                 write=jax.process_index() == 0) if spans_hosts else {}
    return dict(strategy=sampling.make_strategy(r.temperature, r.top_k, r.top_p),
                max_new_tokens=s.max_new_tokens, seed=self.config.seed, iteration=it,
                stop_strings=self.data.stop_strings, batch_size=s.batch_size,
                problems_per_shard=r.shard_problems, progress=self.config.progress_bar,
                extra_spec={"generator": generator_dir}, **hosts)

  def generate(self, it: int, generator_dir: str) -> None:
    """Uniform E-step: N samples per training problem from the seqio Task, in resumable shards."""
    out = self.workdir / f"iter{it}" / "samples"
    if sample_shards.is_complete(out):
      return
    sample_shards.write_samples(out, self.sampler(generator_dir), self.data.task_name,
                                split="train",
                                num_samples=self.config.restem.num_samples,
                                **self._generate_options(it, generator_dir))
    partitioning.sync_hosts(f"generate_iter{it}")

  def score(self, it: int) -> list[str]:
    """Rewards of every sample, shard by shard into iterN/scores/ (resumable)."""
    return self._score_shards(self.workdir / f"iter{it}" / "samples",
                              self.workdir / f"iter{it}" / "scores", f"iter{it}")

  def _score_shards(self, sample_dir: epath.Path, score_dir: epath.Path, name: str) -> list[str]:
    """Scores each sample shard of `sample_dir` into `score_dir` (this host's, those missing);
    returns every scored shard's path once all hosts are done."""
    shards = sorted(sample_dir.glob("samples-*.jsonl"))
    mine = partitioning.host_shard(shards)
    todo = [p for p in mine if not (score_dir / p.name).exists()]
    bar = tqdm.tqdm(total=len(mine), initial=len(mine) - len(todo), unit="shard",
                    desc=f"{name} score", disable=not self.config.progress_bar or not todo)
    for path in todo:
      records = file_io.read_samples(path, token_ids=False)  # the text is scored, not the ids
      file_io.write_jsonl(score_dir / path.name,
                          evaluation.score(records, self.data.problems["train"],
                                           self.data.reward))
      bar.update(1)
    bar.close()
    partitioning.sync_hosts(f"score_{name.replace(' ', '_')}")
    return [str(score_dir / p.name) for p in shards]

  def filter(self, it: int, shard_paths: list[str],
             spread: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keeps reward-1 samples, at most K per problem (`estep.filter_samples`); returns the
    iteration's statistics (with `spread`, the adaptive budget's, added)."""
    def fn():
      records = [rec for path in shard_paths for rec in file_io.read_jsonl(path)]
      got = estep.filter_samples(records, self.data.problems["train"],
                                 max_per_problem=self.plan.max_per_problem, dedup=self.plan.dedup)
      kept_dir = self.workdir / f"iter{it}" / "kept"
      file_io.write_jsonl(kept_dir / "kept.jsonl", got.kept)
      stats = {"iteration": it, **got.stats}
      if self.plan.budget == "uniform" and not self.plan.dedup:
        for key in estep.EXTENDED_STATS:  # the summary as before these switches existed
          del stats[key]
      stats.update(spread or {})
      stats["kept_dir"] = str(kept_dir)
      # Embedded tasks: how many kept samples are truly right (the reward's false positives).
      data = self.config.data
      stats.update(truth.kept_precision(
          data.kind, inputs.task_options(data.kind, data),
          {p["id"]: p for p in self.data.problems["train"]}, got.kept,
          self.config.reward.to_dict(), seed=self.config.seed + it) or {})
      logging.info("iter%d: %d samples, %d correct (%.1f%%), %d kept; problems solved: %.1f%%; "
                   "correct samples per problem: %s", it, stats["num_samples"],
                   stats["num_correct"], 100 * stats["num_correct"] / max(1, stats["num_samples"]),
                   stats["num_kept"], 100 * stats["train_solve_rate"],
                   stats["correct_per_problem_histogram"])
      logging.info("iter%d: %d problems with a kept sample; %d duplicates dropped", it,
                   got.stats["problems_with_kept"], got.stats["duplicates_dropped"])
      if "kept_precision" in stats:
        logging.info("iter%d: %.1f%% of %d kept samples are truly right (ground truth)", it,
                     100 * stats["kept_precision"], stats["kept_checked"])
      self.write_scalars(f"iter{it}", metric_writer.iteration_scalars(stats))
      return stats
    return self.stage(f"filter_iter{it}", fn)

  def improve(self, it: int, start_dir: str, kept_dir: str) -> str:
    """M-step: fine-tune `start_dir` (the base model, or the previous iterate with
    restem.finetune_from="previous") on the kept samples."""
    name = finetune.register_finetune_task(f"restem_run_kept_iter{it}", kept_dir,
                                           self.data.vocab)
    rows = self._decoder_rows(name, "train")
    return self.train_model(f"iter{it}", start_dir, rows, self.config.finetune)


def run(config: ml_collections.ConfigDict, workdir: epath.PathLike,
        distributed_options: dict[str, Any] | None = None) -> dict[str, Any]:
  """Runs (or resumes) a ReST^EM run; returns the summary.

  Args:
    config: the run's config (see `config_lib.base_config`).
    workdir: the run directory, shared by all hosts of a multi-host run.
    distributed_options: `jax.distributed.initialize` arguments (coordinator_address,
      num_processes, process_id) where JAX cannot detect the cluster; given, they imply
      `config.distributed`.
  """
  partitioning.maybe_initialize_distributed(config.distributed or bool(distributed_options),
                                            **(distributed_options or {}))
  workdir = checkpoints.absolute(workdir)  # Orbax needs absolute paths
  workdir.mkdir(parents=True, exist_ok=True)
  run_dir.check_owned(workdir)
  complete_saved_config(workdir)
  config_json = json.loads(config.to_json_best_effort())
  if run_dir.is_finished(workdir, config_json):
    print(run_dir.finished_message(workdir), flush=True)
    return report.load_summary(workdir)
  check_and_save_config(config, workdir)
  preflight.check_run(config)  # inputs, before any stage: a failure leaves none finished
  try:  # restem.num_samples 0 is derived from the data (data.fit); check the rest with N as small as they allow
    estep.Plan.from_config({**config.restem.to_dict(),
                            "num_samples": config.restem.num_samples or max(1, config.restem.round_samples)})
  except ValueError as e:
    raise cli.UserError(f"config: {e}") from e
  if config.restem.finetune_from not in estep.FINETUNE_FROM:
    raise cli.UserError(f"config: restem.finetune_from must be one of {estep.FINETUNE_FROM}, "
                        f"got {config.restem.finetune_from!r}")
  try:
    data = inputs.prepare(config, workdir)
  except ValueError as e:  # the data layer's and the size checks' "invalid input data"
    if isinstance(e, cli.UserError):
      raise
    raise cli.UserError(f"data: {e}") from e
  r = Run(config, workdir, data)
  base_dir = r.base_model()
  if config.baselines.base:
    r.evaluate("base", base_dir)
  if config.baselines.sft_human:
    sft_dir = r.train_model("sft_human", base_dir, r.human_rows(), config.finetune)
    r.evaluate("sft_human", sft_dir)

  generator = config.restem.generator_checkpoint or base_dir
  start = base_dir  # what the next iteration fine-tunes
  stop = stopping.ValidationStop(config.restem.stop_when_valid_drops)
  for it in range(1, config.restem.num_iterations + 1):
    stats = r.filter(it, *r.estep(it, generator))
    report.upsert(r.summary["iterations"], {k: v for k, v in stats.items() if k != "kept_dir"},
                  ("iteration",))
    if stats["num_kept"] == 0:
      logging.warning("iter%d: no correct sample to train on; stopping", it)
      r.save_summary()
      break
    model_dir = r.improve(it, start, stats["kept_dir"])
    if config.restem.finetune_from == "previous":
      start = model_dir
    r.evaluate(f"iter{it}", model_dir)
    valid = [e["accuracy"] for e in r.summary["evaluations"]
             if e["model"] == f"iter{it}" and e["split"] == "valid"]
    reason = stop.observe(it, valid[0] if valid else None)
    if reason:
      logging.info("%s", reason)
      break
    if not config.restem.generator_checkpoint:
      generator = model_dir  # the improved model generates in the next iteration
  r.save_summary()
  r.close()
  if jax.process_index() == 0:
    run_dir.mark_finished(workdir, config_json)
  print(report.table(r.summary, "test"), flush=True)
  print(f"\nsummary: {workdir / report.SUMMARY_FILE}\nreport:  {workdir / report.REPORT_FILE}",
        flush=True)
  return r.summary
