"""The ahead-of-time fit check: compiles for TPU topologies on this CPU machine (libtpu needed)."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from restem_jax.config_lib import model_config
from restem_jax import model as model_lib
from restem_jax.tpu import aot
from restem_jax.tpu import specs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _smoke_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location("demo", os.path.join(REPO, "configs", "demo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("smoke")


needs_libtpu = pytest.mark.skipif(
    not aot.libtpu_available(),
    reason="libtpu is not installed (pip install -e '.[tpu]'): no TPU compiler to check with")


@pytest.mark.parametrize("text,name,chips,accelerator", [
    ("v5e:4x4", "v5e:4x4", 16, "v5litepod-16"),
    ("v4-32", "v4:2x2x4", 16, "v4-32"),  # gcloud counts v4 TensorCores: 2 a chip
    ("v4:2x2x1", "v4:2x2x1", 4, "v4-8"),
    ("v5litepod-8", "v5e:2x4", 8, "v5litepod-8"),
    ("v5p-128", "v5p:4x4x4", 64, "v5p-128"),
    ("v6e-256", "v6e:16x16", 256, "v6e-256"),
])
def test_topology_names(text, name, chips, accelerator):
  topo = specs.parse(text)
  assert (topo.name, topo.num_chips, topo.accelerator) == (name, chips, accelerator)
  # v4 and v5p chips run as one device each (megacore), as on a TPU VM.
  megacore = name.startswith(("v4", "v5p"))
  assert topo.options == ({"chip_config_name": "megacore"} if megacore else {})


@pytest.mark.parametrize("text", ["v9:2x2", "v5e:2x2x2", "v4-33", "v4-6", "tpu", "v5e-3"])
def test_unknown_topology_is_one_line(text):
  with pytest.raises(ValueError, match="unknown TPU topology") as info:
    specs.parse(text)
  assert "\n" not in str(info.value)


def test_missing_libtpu_is_one_line(monkeypatch):
  monkeypatch.setattr(aot, "libtpu_available", lambda: False)
  with pytest.raises(aot.AotError, match="libtpu is not installed"):
    aot.check(_smoke_config(), "v5e:2x2")


@needs_libtpu
def test_smoke_train_step_and_sampler_compile_for_v5e_and_fit():
  result = aot.check(_smoke_config(), "v5e:2x2", programs=("train", "sample"))
  assert result.fits and not result.too_big
  assert result.mesh == {"data": 4, "fsdp": 1, "model": 1}
  train, sample, prefill = result.programs
  assert (train.name, sample.name, prefill.name) == ("train", "sample", "sample_prefill")
  for p in (train, sample, prefill):
    assert not p.error
    assert 0 < p.total_bytes < result.usable_bytes
    assert p.argument_bytes > 0 and p.flops > 0 and p.bytes_accessed > 0
    assert p.est_seconds > 0 and 0 < p.mfu < 1
  # The train state is donated: its outputs are written into the arguments' buffers.
  assert train.alias_bytes > 0
  # The compiler's FLOPs are per device and of the order of the model's (PaLM's formula counts
  # attention over the whole sequence, XLA the causal mask's work too; no remat here).
  assert 0.3 < train.flops / train.model_flops < 3
  # The rollout engine's decode visit: the Generate step's 256 rows (4 samples a problem),
  # its rows' state donated and updated in place; its prefill keeps that state beside it.
  assert "decode visit: 256 rows" in sample.shapes and "4 rows a prompt" in sample.shapes
  assert sample.alias_bytes > 0 and prefill.alias_bytes > 0
  assert prefill.resident_bytes > 0 and "prefill of 8 prompt(s)" in prefill.shapes


@needs_libtpu
def test_sampler_check_holds_the_engines_weights_and_cache():
  """The decode visit's arguments are the parameters, their per-layer copy and the KV cache."""
  config = _smoke_config()
  cfg = aot.model_config(config)
  result = aot.check(config, "v5e:2x2", programs=("greedy",))
  greedy, prefill = result.programs
  assert (greedy.name, prefill.name) == ("greedy", "greedy_prefill")
  params = sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(
      jax.eval_shape(lambda: model_lib.Decoder(cfg).init(
          jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"]))
  # Greedy: 256 rows over 4 chips, each row its own cache of prompt + new tokens.
  rows, slots = 256 // 4, config.data.inputs_length + config.sampling.max_new_tokens
  cache = (2 * cfg.num_layers * rows * cfg.num_kv_heads * cfg.head_dim * slots
           * jnp.dtype(cfg.dtype).itemsize)
  assert "256 rows, each its own" in greedy.shapes
  assert greedy.argument_bytes >= params + cache  # replicated parameters (data parallel)
  assert greedy.argument_bytes < 3 * params + 2 * cache


@needs_libtpu
def test_oversized_model_is_reported_as_not_fitting():
  config = _smoke_config()
  # A 2M-token vocabulary at width 2048, replicated on every chip of a data-parallel mesh:
  # 16 GiB of float32 embedding alone, more than a v5e chip holds.
  config.model = model_config("tiny", vocab_size=2_000_000, d_model=2048, num_layers=1,
                              num_heads=2, head_dim=32, d_ff=128, max_len=192)
  result = aot.check(config, "v5e:2x2", programs=("train", "sample"), fail_fast=True)
  assert not result.fits
  assert result.too_big == ["train"]
  assert [p.name for p in result.programs] == ["train"]  # fail_fast: stopped there
  train = result.programs[0]
  assert train.error or train.total_bytes > result.usable_bytes
  assert train.argument_bytes >= 2_000_000 * 2048 * 4
  assert not result.hint(train)  # remat would not shrink the parameters


@needs_libtpu
def test_train_step_too_big_for_want_of_remat_says_so_and_fits_with_it():
  """Attention scores kept for the backward pass (8 layers x 96 rows x 2 heads x 2048^2 floats
  a chip: 26 GB) do not fit a v5e chip; rematerialised, one layer's are live at a time."""
  config = _smoke_config()
  config.model = model_config("tiny", vocab_size=320, d_model=64, num_layers=8, num_heads=2,
                              head_dim=32, d_ff=128, max_len=2048)
  config.data.inputs_length = config.data.targets_length = 1024
  config.finetune.batch_size, config.finetune.num_microbatches = 384, 1
  result = aot.check(config, "v5e:2x2", programs=("train",))
  (train,) = result.programs
  assert result.too_big == ["train"] and "no remat" in train.shapes
  assert "remat" in result.hint(train) and "convert hf-to-orbax --remat" in result.hint(train)
  assert result.to_json()["programs"]["train"]["hint"] == result.hint(train)
  assert "to fit: rematerialise" in aot.format_table(result)
  config.model.remat = True
  result = aot.check(config, "v5e:2x2", programs=("train",))
  assert result.fits and ", remat" in result.programs[0].shapes


@needs_libtpu
def test_cli_prints_table_and_json_last_line_and_one_line_errors():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-m", "restem_jax.aot", "--config=configs/demo.py:smoke",
                        "--topology=v5e:2x2", "--programs=eval"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  verdict = json.loads(lines[-1])
  assert verdict["fits"] is True and verdict["topology"] == "v5e:2x2"
  assert set(verdict["programs"]) == {"eval"}
  assert any(line.startswith("eval ") for line in lines)
  assert "197 bf16 TFLOP/s" in out.stdout
  bad = subprocess.run([sys.executable, "-m", "restem_jax.aot", "--config=configs/demo.py:smoke",
                        "--topology=v9:2x2"], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=300)
  assert bad.returncode == 2
  errors = [line for line in bad.stderr.splitlines() if line.startswith("aot: ")]
  assert len(errors) == 1 and "unknown TPU topology" in errors[0]
