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
