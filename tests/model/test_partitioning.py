"""Sharding on 8 fake CPU devices: same logits on every mesh, parameter shardings from the rules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from restem_jax import model as model_lib
from restem_jax.model import partitioning
from restem_jax import sampling
from restem_jax.sampling import shards as sample_shards

CFG = model_lib.preset("tiny", num_layers=2, vocab_size=256, max_len=64)


def _init_fn(key):
  return model_lib.Decoder(CFG).init(key, jnp.zeros((1, 8), jnp.int32))


def _forward(variables, tokens):
  return model_lib.Decoder(CFG).apply(variables, tokens)[0]


@pytest.fixture(scope="module")
def reference():
  variables = nn.unbox(jax.jit(_init_fn)(jax.random.key(0)))
  tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, CFG.vocab_size)
  return variables, tokens, jax.jit(_forward)(variables, tokens)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_same_logits_on_every_mesh(reference, shape):
  variables, tokens, expected = reference
  mesh = partitioning.make_mesh(shape)
  sharded, shardings = partitioning.init_sharded(_init_fn, mesh, partitioning.DEFAULT_RULES,
                                                 jax.random.key(0))
  # Initialised directly sharded, and to the same values as on one device.
  jax.tree_util.tree_map(np.testing.assert_array_equal, sharded, variables)
  tokens = jax.device_put(tokens, partitioning.data_sharding(mesh))
  with partitioning.activate(mesh):
    logits = jax.jit(_forward)(sharded, tokens)
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
  # Rows are split over data x fsdp; the vocab over model.
  data, fsdp, model = shape
  assert logits.sharding.shard_shape(logits.shape) == (8 // (data * fsdp), 16,
                                                       CFG.vocab_size // model)


def test_parameter_shardings_follow_the_rules():
  mesh = partitioning.make_mesh((1, 2, 4))
  params, shardings = partitioning.init_sharded(_init_fn, mesh, partitioning.DEFAULT_RULES,
                                                jax.random.key(0))
  specs = jax.tree_util.tree_map(lambda s: s.spec, shardings)["params"]
  layers = specs["layers"]
  assert specs["embedding"] == P("model", "fsdp")  # vocab over model, embed over fsdp
  assert layers["mlp"]["wi_gate"] == P(None, "fsdp", "model")  # [layers, embed, mlp]
  assert layers["mlp"]["wo"] == P(None, "model", "fsdp")
  assert layers["attn"]["query"] == P(None, "fsdp", "model", None)  # heads over model
  assert layers["attn"]["key"] == P(None, "fsdp", None, None)  # one K/V head: replicated
  wi = params["params"]["layers"]["mlp"]["wi_gate"]
  assert wi.sharding.spec == P(None, "fsdp", "model")
  # Each device holds 1/8 of the MLP kernel: nothing was materialised whole.
  assert wi.addressable_shards[0].data.shape == (2, 128, 256)


def test_make_mesh_errors_and_fill():
  assert partitioning.make_mesh((-1, 2, 1)).shape == {"data": 4, "fsdp": 2, "model": 1}
  with pytest.raises(ValueError, match="needs 6 devices"):
    partitioning.make_mesh((3, 2, 1))
  with pytest.raises(ValueError, match="at most one"):
    partitioning.make_mesh((-1, -1, 1))


def test_host_shard_partitions_items_round_robin():
  items = list(range(10))
  shards = [partitioning.host_shard(items, i, 3) for i in range(3)]
  assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
  assert [partitioning.shard_host(k, 3) for k in items] == [0, 1, 2] * 3 + [0]
  assert partitioning.host_shard(items, 0, 1) == items  # one host: everything, in order
  assert partitioning.host_shard(items[:2], 2, 3) == []  # more hosts than items


class _FakeSampler:
  """What `shards.write_samples` asks of a sampler, without a model."""

  eos_id = 1
  cfg = CFG

  def generate(self, ids, prompts, *, num_samples, **unused):
    del prompts, unused
    return [[sampling.Sample(tokens=[2, 3], logprob=-0.5, finish_reason="eos", text=str(i))
             for _ in range(num_samples)] for i in ids]


def test_sampling_and_scoring_give_each_host_the_same_shards(tmp_path):
  # Hosts that sample on their own devices write shard k on host shard_host(k, hosts); the loop
  # scores partitioning.host_shard of the sorted shard files: each host its own shards.
  problems = [{"id": f"p{i}", "inputs": [5, 6]} for i in range(7)]
  hosts = 3
  written = [sample_shards.write_samples(
      tmp_path, _FakeSampler(), problems, num_samples=2, strategy=sampling.Greedy(),
      max_new_tokens=4, problems_per_shard=2, progress=False, process_index=h,
      process_count=hosts) for h in range(hosts)]
  shards = sorted(tmp_path.glob("samples-*.jsonl"))
  assert [p.name for p in shards] == [f"samples-{k:05d}.jsonl" for k in range(4)]
  for h in range(hosts):
    assert partitioning.host_shard(shards, h, hosts) == written[h]
  assert [r["id"] for r in sample_shards.read_samples(tmp_path)] == [
      p["id"] for p in problems for _ in range(2)]
