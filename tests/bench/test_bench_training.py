"""bench/training's profile helper: which compiled instructions are matmuls, and their code."""

import jax
import jax.numpy as jnp

from restem_jax.bench import training


def test_hlo_ops_marks_dots_and_names_their_code():
  def f(a, b):
    return jnp.tanh(jnp.einsum("ik,kj->ij", a, b)).T + 1.0

  x = jnp.ones((64, 32), jnp.float32)
  hlo = jax.jit(f).lower(x, x.T).compile().as_text()
  ops = training._hlo_ops(hlo)  # pylint: disable=protected-access
  matmuls = [op for op, (is_dot, _) in ops.items() if is_dot]
  assert matmuls, hlo
  assert any("ik,kj->ij" in ops[op][1] for op in matmuls)
  others = [op for op, (is_dot, _) in ops.items() if not is_dot]
  assert any("tanh" in ops[op][1] or "add" in ops[op][1] or "transpose" in ops[op][1]
             for op in others), hlo


def test_bfloat16_run_has_every_side(monkeypatch):
  # A micro shape through run_shape with bfloat16 products: ours, the peer under autocast and
  # our float32 step alongside, all training on the same batches.
  from restem_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  micro = model_lib.preset("tiny", num_layers=1, d_model=64, num_heads=2, num_kv_heads=1,
                           head_dim=32, d_ff=128, vocab_size=64, max_len=16)
  original = training._model_config  # pylint: disable=protected-access

  def micro_config(name, dtype="float32", float32_products=None):
    del name
    return original("tiny", dtype, float32_products).replace(**{k: getattr(micro, k) for k in (
        "num_layers", "d_model", "num_heads", "head_dim", "d_ff", "vocab_size", "max_len")})

  monkeypatch.setattr(training, "_model_config", micro_config)
  monkeypatch.setattr(training, "BATCH", 2)
  monkeypatch.setattr(training, "LENGTH", 8)
  r = training.run_shape("tiny", steps=2, warmup=1, dtype="bfloat16")
  assert len(r["ours_step_s"]) == len(r["peer_step_s"]) == len(r["ours_float32_step_s"]) == 2
  assert r["ratio_vs_float32"] > 0 and r["ratio"] > 0
  # Same model, same batches: bfloat16 products stay near the float32 loss (ln 64 = 4.16).
  assert abs(r["ours_loss"] - r["ours_float32_loss"]) < 0.05
  assert abs(r["ours_loss"] - 4.16) < 0.5 and abs(r["peer_loss"] - 4.16) < 0.5


def test_peer_keeps_the_output_layer_float32_where_ours_does():
  import torch  # pylint: disable=g-import-not-at-top
  from restem_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  micro = dict(num_layers=1, d_model=64, num_heads=2, head_dim=32, d_ff=128, vocab_size=64,
               max_len=16)
  x = torch.ones(2, 3, 64)
  for kept, want in (("logits", torch.float32), ("", torch.bfloat16)):
    cfg = training._model_config("tiny", "bfloat16", kept).replace(**micro)  # pylint: disable=protected-access
    peer = training.Peer(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
      assert peer.model.lm_head(x).dtype == want, kept
      assert peer.model.model.layers[0].mlp.up_proj(x).dtype == torch.bfloat16
