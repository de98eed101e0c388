"""Fine-tuning data from a directory of kept samples: loss on target tokens only, validation."""

import json

import numpy as np
import pytest
import seqio

from restem_jax.data import finetune, tasks
from restem_jax.data import vocab as vocab_lib

SAMPLES = [
    {"id": "arith/train/0", "sample_index": 3, "prompt": "Question: Start with 12. Add 3. "
     "What is the result?\nAnswer: ", "text": "12 + 3 = 15. The final answer is 15."},
    {"id": "arith/train/0", "sample_index": 7, "prompt": "Question: Start with 12. Add 3. "
     "What is the result?\nAnswer: ", "text": "12 + 3 = 15. The final answer is 15."},
    {"id": "arith/train/4", "sample_index": 0, "prompt": "Question: Start with 40. Multiply by "
     "2, then subtract 9. What is the result?\nAnswer: ",
     "text": "40 * 2 = 80. 80 - 9 = 71. The final answer is 71."},
]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  texts = [s["prompt"] + s["text"] for s in SAMPLES] + tasks.training_texts(
      "arith", sizes={"train": 50, "valid": 5, "test": 5})
  path = vocab_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("v") / "v.model", 500)
  return vocab_lib.load_vocab(path)


def _write(directory, rows, name="kept.jsonl"):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / name).write_text("".join(
      (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return directory


def test_loss_weights_cover_exactly_the_target_tokens(tmp_path, vocab):
  name = finetune.register_finetune_task("kept_iter1", _write(tmp_path / "kept", SAMPLES), vocab)
  rows = finetune.decoder_examples(name, {"inputs": 48, "targets": 32})
  assert set(rows) == {"decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"}
  assert rows["decoder_target_tokens"].shape == (3, 80)
  for i, sample in enumerate(SAMPLES):
    prompt, target = vocab.encode(sample["prompt"]), vocab.encode(sample["text"]) + [vocab.eos_id]
    tokens = rows["decoder_target_tokens"][i]
    weights = rows["decoder_loss_weights"][i]
    n = len(prompt) + len(target)
    np.testing.assert_array_equal(tokens[:n], prompt + target)
    np.testing.assert_array_equal(weights[:len(prompt)], 0)  # no loss on the prompt
    np.testing.assert_array_equal(weights[len(prompt):n], 1)  # loss on every target token
    np.testing.assert_array_equal(weights[n:], 0)  # nor on padding
    # Inputs are the targets shifted right by one: the decoder predicts the next token.
    np.testing.assert_array_equal(rows["decoder_input_tokens"][i][1:n], tokens[:n - 1])


def test_packing_keeps_target_only_loss(tmp_path, vocab):
  name = finetune.register_finetune_task("kept_packed", _write(tmp_path / "kept", SAMPLES), vocab)
  # Rows of 160 tokens hold all three ~45-token samples when packed.
  plain = finetune.decoder_examples(name, {"inputs": 96, "targets": 64})
  packed = finetune.decoder_examples(name, {"inputs": 96, "targets": 64}, pack=True)
  assert "decoder_segment_ids" in packed and "decoder_positions" in packed
  assert len(packed["decoder_target_tokens"]) < len(plain["decoder_target_tokens"])
  assert packed["decoder_loss_weights"].sum() == plain["decoder_loss_weights"].sum()
  assert packed["decoder_segment_ids"].max() >= 2


def test_human_solutions_of_a_problem_task(vocab):
  name = tasks.register_task("arith", vocab, sizes={"train": 6, "valid": 2, "test": 2})
  rows = finetune.decoder_examples(name, {"inputs": 64, "targets": 64}, split="train")
  assert len(rows["decoder_target_tokens"]) == 6
  assert (rows["decoder_loss_weights"].sum(axis=1) > 5).all()


def test_reregistering_reads_the_new_directory(tmp_path, vocab):
  finetune.register_finetune_task("kept_x", _write(tmp_path / "a", SAMPLES), vocab)
  name = finetune.register_finetune_task("kept_x", _write(tmp_path / "b", SAMPLES[:1]), vocab)
  assert len(finetune.decoder_examples(name, {"inputs": 48, "targets": 32})[
      "decoder_target_tokens"]) == 1


def test_truncation_is_counted_and_logged(tmp_path, vocab, caplog):
  name = finetune.register_finetune_task("kept_long", _write(tmp_path / "kept", SAMPLES), vocab)
  task = seqio.get_mixture_or_task(name)
  lengths = [(len(vocab.encode(s["prompt"])), len(vocab.encode(s["text"])) + 1) for s in SAMPLES]
  longest_target = max(t for _, t in lengths)
  limit = {"inputs": 64, "targets": longest_target - 1}
  over = finetune.overlong_examples(task, limit, "train")
  assert over == {"inputs": (0, max(i for i, _ in lengths), 3),
                  "targets": (sum(t > limit["targets"] for _, t in lengths), longest_target, 3)}
  with caplog.at_level("WARNING"):
    finetune.decoder_examples(name, limit)
  assert f"have targets longer than {limit['targets']} tokens (longest {longest_target})" in (
      caplog.text)
  caplog.clear()
  with caplog.at_level("WARNING"):
    finetune.decoder_examples(name, {"inputs": 64, "targets": longest_target})
  assert "truncated" not in caplog.text


@pytest.mark.parametrize("rows, message", [
    (['{"id": "a", "prompt": "p", "text": "t"', ], r"kept.jsonl:1: malformed JSON"),
    ([SAMPLES[0], {"id": "b", "prompt": "p"}], r"kept.jsonl:2: field 'text' is missing"),
    ([{"id": "b", "prompt": " ", "text": "t"}], r"kept.jsonl:1: field 'prompt' is missing, empty"),
    ([SAMPLES[0], SAMPLES[0]], r"kept.jsonl:2: duplicate sample \(id='arith/train/0', "
                                r"sample_index=3\)"),
    (["[1, 2]"], r"kept.jsonl:1: expected a JSON object"),
])
def test_invalid_kept_samples_are_clear_errors(tmp_path, rows, message):
  with pytest.raises(ValueError, match=message):
    finetune.read_kept_samples(_write(tmp_path / "kept", rows))


def test_bad_encoding_and_missing_directory(tmp_path):
  (tmp_path / "kept").mkdir()
  (tmp_path / "kept" / "kept.jsonl").write_bytes(b'{"id": "\xff"}\n')
  with pytest.raises(ValueError, match="kept.jsonl:1: not UTF-8"):
    finetune.read_kept_samples(tmp_path / "kept")
  with pytest.raises(FileNotFoundError, match=r"expected \*\.jsonl files"):
    finetune.read_kept_samples(tmp_path / "nowhere")
