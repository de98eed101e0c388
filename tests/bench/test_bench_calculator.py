"""`python -m restem_jax.bench calculator` on a tiny random model: both sides run on the same
problems and the JSON record carries every figure."""

import json

import flax.linen as nn
import jax
import numpy as np

from restem_jax import model as model_lib
from restem_jax.bench import calculator as bench_calculator
from restem_jax.data import synthetic_math
from restem_jax.data import vocab as vocab_lib
from restem_jax.model import checkpoints


def test_bench_calculator_runs_both_sides(tmp_path, capsys):
  data = synthetic_math.generate({"train": 12, "test": 6}, seed=0, solution_fraction=0.5)
  for split, rows in data.items():
    (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  texts = [r["question"] + " " + r.get("solution", r["answer"]) for r in data["train"]]
  spm = vocab_lib.train_sentencepiece(texts * 5, tmp_path / "v.model", 340)
  vocab = vocab_lib.load_vocab(spm)
  cfg = model_lib.preset("tiny", num_layers=1, d_model=32, num_heads=2, num_kv_heads=1,
                         head_dim=16, d_ff=64, vocab_size=384, max_len=256)
  params = nn.unbox(model_lib.Decoder(cfg).init(jax.random.key(0), np.zeros((1, 1), np.int32)))
  model_dir = checkpoints.save(tmp_path / "m", params["params"], cfg, vocab_path=spm)
  assert vocab.vocab_size <= cfg.vocab_size
  assert bench_calculator.main([f"--model={model_dir}", f"--train={tmp_path / 'train.jsonl'}",
                                f"--test={tmp_path / 'test.jsonl'}", "--rounds=1",
                                "--max_new_tokens=12"]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  record = json.loads(out[-1])
  assert record["bench"] == "calculator" and record["cpu_model"]
  for side in ("off", "on"):
    assert 0 <= record[f"greedy_{side}"] <= 1 and 0 <= record[f"solved_x8_{side}"] <= 1
    assert record[f"tok_s_{side}"] > 0
  assert sum(" on " in line for line in out) == 2 and sum(" off " in line for line in out) == 2
