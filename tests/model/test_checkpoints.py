"""Model checkpoint directories round-trip, onto another mesh too."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from restem_jax.data import vocab
from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax.model import partitioning


def test_save_load_roundtrip_with_vocab_and_resharding(tmp_path):
  cfg = model_lib.preset("tiny", num_layers=2, vocab_size=256, max_len=64)
  params = nn.unbox(model_lib.Decoder(cfg).init(jax.random.key(0),
                                                jnp.zeros((1, 4), jnp.int32)))["params"]
  spm = vocab.train_sentencepiece([f"{i} plus {i} is {2 * i}" for i in range(300)],
                                  tmp_path / "spm.model", vocab_size=320)
  out = checkpoints.save(tmp_path / "ckpt", params, cfg, vocab_path=spm)
  assert checkpoints.is_complete(out)
  with pytest.raises(FileExistsError):
    checkpoints.save(out, params, cfg)

  mesh = partitioning.make_mesh((2, 2, 2))
  restored, restored_cfg = checkpoints.load(out, mesh)
  assert restored_cfg == cfg
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
  assert restored["layers"]["mlp"]["wi_gate"].sharding.spec == P(None, "fsdp", "model")
  v = vocab.load_vocab(checkpoints.vocab_path(out))
  assert v.decode(v.encode("3 plus 3 is 6")) == "3 plus 3 is 6"


def test_incomplete_checkpoint_is_refused(tmp_path):
  (tmp_path / "ckpt").mkdir()
  with pytest.raises(FileNotFoundError, match="not a complete model checkpoint"):
    checkpoints.load(tmp_path / "ckpt")


def test_relative_paths_work(tmp_path, monkeypatch):
  """`make demo` passes a relative workdir; Orbax itself refuses relative paths."""
  cfg = model_lib.preset("tiny", num_layers=1, vocab_size=64, max_len=16, d_model=32,
                         head_dim=16, num_heads=2, d_ff=64)
  params = nn.unbox(model_lib.Decoder(cfg).init(jax.random.key(0),
                                                jnp.zeros((1, 4), jnp.int32)))["params"]
  monkeypatch.chdir(tmp_path)
  out = checkpoints.save("runs/x/model", params, cfg)
  assert out == tmp_path / "runs" / "x" / "model" and checkpoints.is_complete("runs/x/model")
  restored, _ = checkpoints.load("runs/x/model")
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
