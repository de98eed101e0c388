"""The Improve step: sharded train step, loss masking and weighting, accumulation, exact resume,
best checkpoint, early stopping, fresh start from the base model, TensorBoard, overfitting."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax.model import partitioning
from restem_jax.training import batches as train_data
from restem_jax.training import metric_writer
from restem_jax.training import steps as train_steps
from restem_jax.training import trainer

# d_model, d_ff and vocab of at least 128 so Adafactor factors its second moments (optax
# factors only dims >= 128), and those factored statistics go through the sharded step too.
CFG = model_lib.preset("tiny", num_layers=2, d_model=128, num_heads=4, num_kv_heads=1,
                       head_dim=32, d_ff=256, vocab_size=256, max_len=64)
LENGTH = 16


def _examples(n, seed=0, reward=1.0):
  rng = np.random.default_rng(seed)
  return [train_data.prefix_lm_example(rng.integers(2, 256, rng.integers(3, 7)),
                                       rng.integers(2, 256, rng.integers(3, 9)), LENGTH,
                                       weight=reward)
          for _ in range(n)]


def _config(**overrides):
  c = trainer.default_config()
  c.batch_size = 8
  c.num_train_steps = 8
  c.eval_every = 2
  c.progress_bar = False
  c.log_every = 1
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def _mesh(shape):
  return partitioning.make_mesh(shape, jax.devices()[:int(np.prod(shape))])


@pytest.fixture(scope="module")
def base_params():
  boxed = model_lib.Decoder(CFG).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  return jax.device_get(nn.unbox(boxed)["params"])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, base_params):
  directory = tmp_path_factory.mktemp("base") / "model"
  checkpoints.save(directory, base_params, CFG)
  return directory


def _batch(n=8, seed=0):
  return train_data.stack_examples(_examples(n, seed))


def _step(config, mesh_shape, params, batch, fns=None):
  fns = fns or train_steps.make_train_fns(CFG, config, _mesh(mesh_shape))
  state = fns.init_state(jax.device_put(params, fns.state_shardings.params))
  state, metrics = fns.train_step(state, fns.put_batch(batch), jax.random.key(1))
  return jax.device_get(state), jax.device_get(metrics)


def _assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.fixture(scope="module")
def one_device_step(base_params):
  return _step(_config(), (1, 1, 1), base_params, _batch())


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_train_step_on_mesh_equals_one_device(mesh_shape, base_params, one_device_step):
  want_state, want_metrics = one_device_step
  state, metrics = _step(_config(), mesh_shape, base_params, _batch())
  assert int(state.step) == 1
  _assert_trees_close(state.params, want_state.params)
  _assert_trees_close(state.opt_state, want_state.opt_state)
  _assert_trees_close(metrics, want_metrics, rtol=1e-5)
  # The step did move the weights: equal-to-reference is not equal-to-unchanged.
  assert not np.allclose(state.params["embedding"], base_params["embedding"])


def test_optimizer_state_sharded_like_params():
  # Full-size config through eval_shape only: Adam's moments follow the params' shardings.
  cfg = model_lib.preset("palm_8b")
  fns = train_steps.make_train_fns(cfg, _config(optimizer="adamw"), _mesh((2, 2, 2)))
  mu = fns.state_shardings.opt_state[1][0].mu
  assert mu["layers"]["mlp"]["wi_gate"] == fns.state_shardings.params["layers"]["mlp"]["wi_gate"]
  assert mu["embedding"].spec == fns.state_shardings.params["embedding"].spec != ()
  factored = train_steps.make_train_fns(cfg, _config(), _mesh((2, 2, 2))).state_shardings.opt_state
  # Adafactor's factored row statistics have their own (smaller) shapes: replicated.
  assert all(s.spec == jax.sharding.PartitionSpec()
             for s in jax.tree.leaves(factored[1][0].v_row))


def _eval_loss(fns, params, batch):
  sums = jax.device_get(fns.eval_step(params, fns.put_batch(batch)))
  return float(sums["nll"] / sums["num_tokens"])


def test_loss_only_on_target_tokens(base_params):
  fns = train_steps.make_train_fns(CFG, _config(), _mesh((1, 1, 1)))
  batch = _batch()
  loss = _eval_loss(fns, base_params, batch)
  prompt = batch["decoder_loss_weights"] == 0
  changed = dict(batch)
  changed["decoder_target_tokens"] = np.where(prompt, 7, batch["decoder_target_tokens"])
  assert _eval_loss(fns, base_params, changed) == pytest.approx(loss, rel=1e-6)
  changed["decoder_target_tokens"] = np.where(prompt, batch["decoder_target_tokens"], 7)
  assert abs(_eval_loss(fns, base_params, changed) - loss) > 1e-3


def test_reward_weights_scale_loss_and_gradient(base_params):
  config = _config(clip_grad_norm=0.0)
  fns = train_steps.make_train_fns(CFG, config, _mesh((1, 1, 1)))
  batch = _batch()
  _, full = _step(config, None, base_params, batch, fns)
  half = dict(batch, decoder_loss_weights=batch["decoder_loss_weights"] * 0.5)
  _, halved = _step(config, None, base_params, half, fns)
  assert halved["nll"] == pytest.approx(0.5 * full["nll"], rel=1e-5)
  assert halved["grad_norm"] == pytest.approx(0.5 * full["grad_norm"], rel=1e-4)
  # A zero-reward sample contributes nothing: same as dropping it from the batch's loss.
  zero_first = dict(batch)
  zero_first["decoder_loss_weights"] = batch["decoder_loss_weights"] * (
      np.arange(8) != 0)[:, None]
  _, z = _step(config, None, base_params, zero_first, fns)
  assert z["num_tokens"] == full["num_tokens"] - (batch["decoder_loss_weights"][0] > 0).sum()


def test_grad_accumulation_equals_one_big_batch(base_params):
  # Adam's first update is ~lr * sign(grad), which would amplify float noise in near-zero
  # gradients; with eps = lr = 1e3 it is grad * 1e3 / (|grad| + 1e3) ~= grad, so the weights'
  # change is the gradient itself and the comparison checks the accumulated gradient.
  config = dict(batch_size=16, optimizer="adamw", adam_eps=1e3, learning_rate=1e3,
                weight_decay=0.0, clip_grad_norm=0.0)
  batch = _batch(16, seed=3)
  want_state, want = _step(_config(**config), (4, 1, 2), base_params, batch)
  state, got = _step(_config(num_microbatches=4, **config), (4, 1, 2), base_params, batch)
  delta = lambda p: jax.tree.map(np.subtract, p, base_params)
  # atol: one float32 ulp of a weight near 1 is 1.2e-7 (the weights, not deltas, are stored).
  _assert_trees_close(delta(state.params), delta(want_state.params), rtol=1e-4, atol=1e-6)
  _assert_trees_close(got, want, rtol=1e-5)
  assert want["grad_norm"] > 0.1


def _reference_steps(config, params, batches):
  """The plain train step the fast one must equal: layer loop, stock XLA, optax as built."""
  from restem_jax.training import losses, optimizers  # pylint: disable=g-import-not-at-top
  tx, _ = optimizers.make_optimizer(config)

  def loss_fn(p, batch):
    logits, _ = model_lib.Decoder(CFG).apply({"params": p}, batch["decoder_input_tokens"])
    loss, _ = losses.cross_entropy_with_z_loss(
        logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"], config.z_loss)
    return loss / jnp.maximum(jnp.sum(batch["decoder_loss_weights"] != 0), 1)

  @jax.jit
  def step(p, opt, batch):
    loss, grads = jax.value_and_grad(loss_fn)(p, batch)
    updates, opt = tx.update(grads, opt, p)
    return jax.tree.map(jnp.add, p, updates), opt, loss

  opt, losses_out = tx.init(params), []
  for batch in batches:
    params, opt, loss = step(params, opt, batch)
    losses_out.append(float(loss))
  return jax.device_get(params), losses_out


# AdamW's first updates are ~lr * sign(grad), which turns float noise in a near-zero gradient into
# a full step; eps = 1 keeps the update ~lr * grad, so the comparison sees the gradients.
@pytest.mark.parametrize("overrides", [dict(optimizer="adamw", adam_eps=1.0, weight_decay=0.01),
                                       dict(scan_unroll=1), dict(num_microbatches=2)])
def test_fast_train_step_equals_plain_reference(base_params, overrides):
  # The CPU speed-ups (unrolled layers, compiler options, fused updates) change no result:
  # three steps' losses and weights equal a plain jitted step's within float32 rounding.
  config = _config(**overrides)
  batches = [_batch(seed=s) for s in range(3)]
  fns = train_steps.make_train_fns(CFG, config, _mesh((1, 1, 1)))
  state = fns.init_state(jax.device_put(base_params, fns.state_shardings.params))
  got = []
  for batch in batches:
    state, metrics = fns.train_step(state, fns.put_batch(batch), jax.random.key(1))
    got.append(float(metrics["loss"]))
  want_params, want = _reference_steps(config, base_params, batches)
  np.testing.assert_allclose(got, want, rtol=2e-6)
  _assert_trees_close(jax.device_get(state.params), want_params, rtol=1e-5, atol=1e-6)
  assert not np.allclose(want_params["embedding"], base_params["embedding"])


def test_bad_microbatch_split_is_an_error():
  with pytest.raises(ValueError, match="num_microbatches"):
    train_steps.make_train_fns(CFG, _config(batch_size=8, num_microbatches=2), _mesh((8, 1, 1)))


class _Kill(Exception):
  pass


def _run(base_dir, workdir, config, kill_after=None, rewards=None, record=None):
  """One `train` call; returns {step: loss}. `kill_after` raises when that step's metrics land."""
  losses = {}

  def on_step(step, metrics):
    losses[step] = metrics["loss"]
    if kill_after is not None and step == kill_after:
      raise _Kill()

  calls = []

  def reward_fn(params):
    calls.append(len(calls))
    if record is not None:
      record.append(jax.device_get(params))
    return rewards[len(calls) - 1]

  data = train_data.ShuffledExamples(_examples(12, seed=5), config.batch_size, seed=9)
  result = trainer.train(
      config, base_checkpoint=base_dir, workdir=workdir, train_data=data,
      valid_batches=train_data.eval_batches(_examples(6, seed=6), config.batch_size),
      valid_reward_fn=reward_fn if rewards else None, mesh=_mesh((2, 2, 2)), on_step=on_step)
  return losses, result


def test_kill_and_resume_gives_identical_loss_curve(base_dir, tmp_path):
  config = _config(optimizer="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=2,
                   checkpoint_every=3, eval_every=4)
  straight, straight_result = _run(base_dir, tmp_path / "straight", config)
  with pytest.raises(_Kill):
    # Saves at 3, 4 (evaluation) and 6; when step 7's metrics land, step 8 is already queued.
    _run(base_dir, tmp_path / "killed", config, kill_after=7)
  resumed, resumed_result = _run(base_dir, tmp_path / "killed", config)
  assert min(resumed) == 7, "resumed from the step-6 checkpoint"
  assert resumed == {s: straight[s] for s in resumed}  # bit-identical, not just close
  assert straight[1] != straight[8]
  assert resumed_result.evaluations == straight_result.evaluations
  got, _ = checkpoints.load(resumed_result.model_dir)
  want, _ = checkpoints.load(straight_result.model_dir)
  jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.fixture(scope="module")
def best_run(base_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("best")
  seen_params = []
  config = _config(keep_last=1, peak_flops_per_device=1e9)
  losses, result = _run(base_dir, workdir, config, rewards=[0.1, 0.5, 0.3, 0.2],
                        record=seen_params)
  return workdir, losses, result, seen_params


def test_best_checkpoint_by_validation_reward(best_run):
  workdir, _, result, seen_params = best_run
  assert result.best_step == 4 and result.best_score == 0.5 and result.steps == 8
  assert [e["step"] for e in result.evaluations] == [2, 4, 6, 8]
  assert all("valid_loss" in e for e in result.evaluations)
  kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert kept == [4, 8]  # the best and the last one
  exported, cfg = checkpoints.load(result.model_dir)
  assert cfg == CFG
  jax.tree.map(np.testing.assert_array_equal, exported, seen_params[1])
  assert not np.array_equal(exported["embedding"], seen_params[3]["embedding"])


def test_equal_rewards_are_broken_by_validation_loss(base_dir, tmp_path):
  """A model that solves nothing yet scores 0 everywhere: keep the lowest-loss step, not the
  first (least trained) one."""
  _, result = _run(base_dir, tmp_path, _config(), rewards=[0.0, 0.0, 0.0, 0.0])
  losses = {e["step"]: e["valid_loss"] for e in result.evaluations}
  assert result.best_step == min(losses, key=losses.get)
  assert result.best_step != 2  # training lowered the loss after the first evaluation


def test_tensorboard_event_files(best_run):
  workdir, losses, _, _ = best_run
  scalars = metric_writer.read_scalars(workdir / "tensorboard")
  for tag in ("train/loss", "train/accuracy", "train/learning_rate", "train/grad_norm",
              "train/tokens_per_sec", "train/mfu", "valid/loss", "valid/reward"):
    assert tag in scalars, tag
  assert dict(scalars["train/loss"]) == pytest.approx(losses)
  assert [v for _, v in scalars["valid/reward"]] == pytest.approx([0.1, 0.5, 0.3, 0.2])
  assert json.loads((workdir / "trainer_config.json").read_text())["batch_size"] == 8


def test_early_stopping_and_finished_run_is_returned_again(base_dir, tmp_path):
  config = _config(early_stop_patience=2, num_train_steps=20)
  _, result = _run(base_dir, tmp_path, config, rewards=[0.5, 0.4, 0.3, 0.9, 0.9])
  assert result.stopped_early and result.steps == 6 and result.best_step == 2
  again_losses, again = _run(base_dir, tmp_path, config, rewards=[0.0])
  assert again == result and not again_losses


def test_each_run_starts_from_base_with_fresh_optimizer(base_dir, base_params, tmp_path):
  config = _config(num_train_steps=4, eval_every=4, optimizer="adamw")
  fns = train_steps.make_train_fns(CFG, config, _mesh((1, 1, 1)))
  params, _ = checkpoints.load(base_dir)
  state = jax.device_get(fns.init_state(params))
  assert int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal, state.params, base_params)
  assert all(not np.any(x) for x in jax.tree.leaves(state.opt_state))
  # Iteration 2 after iteration 1: same base, same data -> the same curve, not a continuation.
  first, first_result = _run(base_dir, tmp_path / "iter1", config)
  second, _ = _run(base_dir, tmp_path / "iter2", config)
  assert first == second
  trained, _ = checkpoints.load(first_result.model_dir)
  assert not np.allclose(trained["embedding"], base_params["embedding"])


def test_tiny_model_overfits_tiny_dataset(base_dir, tmp_path):
  config = _config(optimizer="adamw", learning_rate=1e-2, num_train_steps=60, eval_every=0,
                   clip_grad_norm=1.0, z_loss=0.0)
  losses, result = _run(base_dir, tmp_path, config)
  assert losses[60] < 0.1 * losses[1], (losses[1], losses[60])
  assert result.evaluations[-1]["valid_loss"] > losses[60]  # held-out data is not memorised


def test_schedules():
  c = _config(learning_rate=1.0, warmup_steps=4, num_train_steps=104, schedule="cosine",
              cosine_end_fraction=0.1)
  from restem_jax.training import optimizers
  sched = optimizers.make_schedule(c)
  assert float(sched(0)) == pytest.approx(0.25)  # the first update already learns
  assert float(sched(3)) == pytest.approx(1.0)
  assert float(sched(53)) == pytest.approx(0.55, abs=1e-3)  # halfway through the decay
  assert float(sched(103)) == pytest.approx(0.1)
  c.schedule = "rsqrt"
  sched = optimizers.make_schedule(c)
  assert float(sched(15)) == pytest.approx((4 / 16) ** 0.5)
  c.schedule = "constant"
  assert float(optimizers.make_schedule(c)(50)) == pytest.approx(1.0)
  c.schedule = "linear"
  with pytest.raises(ValueError):
    optimizers.make_schedule(c)


def test_data_stream_resumes_exactly_across_epochs():
  examples = _examples(5)
  stream = train_data.ShuffledExamples(examples, batch_size=4, seed=3)
  batches = [next(stream)["decoder_target_tokens"] for _ in range(6)]  # 24 rows, ~5 epochs
  # Every epoch is a permutation of all examples.
  rows = np.concatenate(batches)[:20].reshape(4, 5, LENGTH)
  all_rows = sorted(map(tuple, train_data.stack_examples(examples)["decoder_target_tokens"]))
  for epoch in rows:
    assert sorted(map(tuple, epoch)) == all_rows
  assert not np.array_equal(rows[0], rows[1])  # reshuffled each epoch
  again = train_data.ShuffledExamples(examples, batch_size=4, seed=3)
  next(again)
  next(again)
  state = json.loads(json.dumps(again.get_state()))
  fresh = train_data.ShuffledExamples(examples, batch_size=4, seed=3)
  fresh.set_state(state)
  for want in batches[2:]:
    np.testing.assert_array_equal(next(fresh)["decoder_target_tokens"], want)
  with pytest.raises(ValueError, match="seed"):
    train_data.ShuffledExamples(examples, batch_size=4, seed=4).set_state(state)
  # Two hosts each read their half of the same global batch.
  halves = [next(train_data.ShuffledExamples(examples, 4, seed=3, process_index=i,
                                             process_count=2))["decoder_target_tokens"]
            for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), batches[0])


def test_prefix_lm_example_and_eval_padding():
  ex = train_data.prefix_lm_example([5, 6, 7], [8, 9, 1], length=8, weight=0.5)
  np.testing.assert_array_equal(ex["decoder_target_tokens"], [5, 6, 7, 8, 9, 1, 0, 0])
  np.testing.assert_array_equal(ex["decoder_input_tokens"], [0, 5, 6, 7, 8, 9, 0, 0])
  np.testing.assert_array_equal(ex["decoder_loss_weights"], [0, 0, 0, .5, .5, .5, 0, 0])
  batches = train_data.eval_batches(_examples(5), batch_size=4)
  assert len(batches) == 2 and batches[1]["decoder_loss_weights"][1:].sum() == 0
  assert batches[1]["decoder_loss_weights"][0].sum() > 0


def test_flops_per_token_counts_every_matmul_weight():
  cfg = model_lib.preset("palm_8b")
  abstract = jax.eval_shape(lambda: nn.unbox(model_lib.Decoder(cfg).init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"])
  # Norm scales are vectors; every other weight is a matmul (the tied embedding once, as the
  # output projection).
  matmul = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract) if x.ndim >= 2
               and x.shape != (cfg.num_layers, cfg.d_model))
  attention = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * 2048
  assert train_steps.flops_per_token(cfg, 2048) == pytest.approx(6 * matmul + attention)
