"""Token id 0 is an ordinary token in open models' vocabularies, and prompts start with BOS.

Llama 3's and Qwen2's id 0 is "!" (MATH solutions write factorials with it); Gemma's tokenizer
puts <bos> (id 2) before every text. Tiny tokenizer.json files of both kinds are built here,
offline: a solution holding "!" is trained on, a prompt holding it is sampled from unchanged,
and Gemma's BOS leads training rows and sampling prompts alike. The SentencePiece vocabularies
trained here (pad 0, no BOS) keep seqio's layout exactly.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import sentencepiece
import tensorflow as tf
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from restem_jax.data import finetune, tasks
from restem_jax.data import vocab as vocab_lib
from restem_jax import model, sampling
from restem_jax.model import partitioning
from restem_jax.sampling import cli as sample, shards as sample_shards
from restem_jax.training import batches

TEXTS = ["Question: What is 5! + 3?\nAnswer: 5! = 120, so the answer is 123!\n",
         "Hello world! 4! = 24. Wow!!\n", "def f(x):\n    return x + 1  # done!\n"] * 10


def _byte_alphabet() -> list[str]:
  """GPT-2's byte characters in its vocabulary order: "!" (byte 33) first, as in Llama 3."""
  printable = [*range(33, 127), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
  shifted = [b for b in range(256) if b not in printable]
  chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(shifted)}
  return [chars[b] for b in printable + shifted]


def llama3_style(directory, bos: bool = True) -> str:
  """Byte-level BPE whose id 0 is "!"; with `bos`, Llama 3's post-processor (BOS first), else
  Qwen2's (nothing added)."""
  trained = tokenizers.Tokenizer(models.BPE())
  trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trained.train_from_iterator(TEXTS, trainers.BpeTrainer(
      vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
            for m in json.loads(trained.to_str())["model"]["merges"]]
  vocab = {c: i for i, c in enumerate(_byte_alphabet())}
  for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
  steps = [processors.ByteLevel(trim_offsets=False)]
  if bos:
    steps.append(processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))]))
  tok.post_processor = processors.Sequence(steps)
  directory.mkdir(parents=True, exist_ok=True)
  tok.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|end_of_text|>",
      "bos_token": "<|begin_of_text|>" if bos else None}))
  return str(directory / "tokenizer.json")


def gemma_style(directory, add_bos_token: bool | None = True) -> str:
  """SentencePiece-style BPE with <pad>=0, <eos>=1, <bos>=2, <unk>=3; BOS first."""
  tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tok.normalizer = normalizers.Replace(" ", "\u2581")
  tok.train_from_iterator(TEXTS, trainers.BpeTrainer(
      vocab_size=200, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False))
  tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Fuse()])
  tok.post_processor = processors.TemplateProcessing(
      single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
  directory.mkdir(parents=True, exist_ok=True)
  tok.save(str(directory / "tokenizer.json"))
  config = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
            "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": add_bos_token}
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {k: v for k, v in config.items() if v is not None}))
  return str(directory / "tokenizer.json")


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory):
  root = tmp_path_factory.mktemp("vocabs")
  return {"llama3": vocab_lib.load_vocab(llama3_style(root / "llama3")),
          "qwen2": vocab_lib.load_vocab(llama3_style(root / "qwen2", bos=False)),
          "gemma": vocab_lib.load_vocab(gemma_style(root / "gemma"))}


# --- which ids a prompt starts with -----------------------------------------------------------


def test_prompt_prefix_is_what_transformers_puts_first(vocabs):
  transformers = pytest.importorskip("transformers")
  assert vocabs["llama3"].encode("!")[0] == 0 and vocabs["qwen2"].encode("!")[0] == 0
  assert vocabs["gemma"].prompt_prefix == (2,) and vocabs["gemma"].eos_id == 1
  assert vocabs["llama3"].prompt_prefix == (vocabs["llama3"].bos_id,)
  assert vocabs["qwen2"].prompt_prefix == ()
  for vocab in vocabs.values():
    reference = transformers.AutoTokenizer.from_pretrained(str(vocab.path.parent))
    for text in ("!5! = 120", "Question: 3!\nAnswer: "):
      ids = [*vocab_lib.prompt_prefix(vocab), *vocab.encode(text)]
      assert ids == reference(text).input_ids
    # Rows never start with a "start" token these vocabularies would read as "!" or <pad>.
    assert vocab_lib.decoder_start_id(vocab) is None


def test_tokenizer_config_add_bos_token_decides(tmp_path):
  assert vocab_lib.load_vocab(gemma_style(tmp_path / "a", add_bos_token=False)).prompt_prefix == ()
  assert vocab_lib.load_vocab(gemma_style(tmp_path / "b", add_bos_token=None)).prompt_prefix == (2,)
  path = llama3_style(tmp_path / "c", bos=False)
  config = json.loads((tmp_path / "c" / "tokenizer_config.json").read_text())
  (tmp_path / "c" / "tokenizer_config.json").write_text(json.dumps(
      {**config, "bos_token": "<|begin_of_text|>", "add_bos_token": True}))
  vocab = vocab_lib.load_vocab(path)
  assert vocab.prompt_prefix == (vocab.bos_id,)


def test_sentencepiece_prefix_and_start(tmp_path):
  own = vocab_lib.load_vocab(vocab_lib.train_sentencepiece(TEXTS, tmp_path / "own.model", 300))
  assert vocab_lib.prompt_prefix(own) == () and vocab_lib.decoder_start_id(own) == 0
  # A Llama 2 style model: <unk>=0, <s>=1, </s>=2; transformers adds <s> unless told not to.
  (tmp_path / "llama2").mkdir()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(TEXTS), model_prefix=str(tmp_path / "llama2" / "tokenizer"),
      vocab_size=100, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
      minloglevel=2)
  llama2 = vocab_lib.load_vocab(tmp_path / "llama2" / "tokenizer.model")
  assert vocab_lib.prompt_prefix(llama2) == (1,) and vocab_lib.decoder_start_id(llama2) is None
  (tmp_path / "llama2" / "tokenizer_config.json").write_text('{"add_bos_token": false}')
  llama2 = vocab_lib.load_vocab(tmp_path / "llama2" / "tokenizer.model")
  assert vocab_lib.prompt_prefix(llama2) == () and vocab_lib.decoder_start_id(llama2) is None


# --- training rows ----------------------------------------------------------------------------


def test_decoder_rows_weigh_token_zero_and_not_padding():
  examples = [([0, 7, 0], [0, 9, 1]), ([5], [0, 0, 1]), ([6, 0], [8, 1])]
  plain = batches.decoder_rows(examples, 8, start_id=None)
  np.testing.assert_array_equal(plain["decoder_input_tokens"][0], [0, 7, 0, 0, 9, 1, 0, 0])
  np.testing.assert_array_equal(plain["decoder_target_tokens"][0], [7, 0, 0, 9, 1, 0, 0, 0])
  np.testing.assert_array_equal(plain["decoder_loss_weights"][0], [0, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(plain["decoder_loss_weights"][1], [1, 1, 1, 0, 0, 0, 0, 0])
  packed = batches.decoder_rows(examples, 8, start_id=None, pack=True)
  assert len(packed["decoder_target_tokens"]) == 2  # 5 + 3 positions, then 3
  np.testing.assert_array_equal(packed["decoder_target_tokens"][0], [7, 0, 0, 9, 1, 0, 0, 1])
  np.testing.assert_array_equal(packed["decoder_loss_weights"][0], [0, 0, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(packed["decoder_segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(packed["decoder_positions"][0], [0, 1, 2, 3, 4, 0, 1, 2])
  np.testing.assert_array_equal(packed["decoder_segment_ids"][1], [1, 1, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(packed["decoder_loss_weights"][1], [0, 1, 1, 0, 0, 0, 0, 0])
  # With a start id, the first prompt token is predicted (from the start id), at weight 0.
  start = batches.decoder_rows(examples[:1], 8, start_id=3)
  np.testing.assert_array_equal(start["decoder_input_tokens"][0], [3, 0, 7, 0, 0, 9, 1, 0])
  np.testing.assert_array_equal(start["decoder_loss_weights"][0], [0, 0, 0, 1, 1, 1, 0, 0])


@pytest.mark.parametrize("pack", [False, True])
def test_decoder_rows_equal_seqio_where_zero_is_padding(pack):
  """The layout (and packing) of seqio's PrefixLMFeatureConverter, for ids without 0."""
  rng = np.random.default_rng(0)
  examples = [(rng.integers(1, 50, rng.integers(1, 8)).tolist(),
               rng.integers(1, 50, rng.integers(1, 6)).tolist()) for _ in range(45)]
  length = 16  # seqio packs within windows of 16 examples: 45 spans three

  def gen():
    for inputs, targets in examples:
      yield {"inputs": np.int32(inputs), "targets": np.int32(targets)}
  spec = {k: tf.TensorSpec([None], tf.int32) for k in ("inputs", "targets")}
  ds = seqio.PrefixLMFeatureConverter(pack=pack, loss_on_targets_only=True)(
      tf.data.Dataset.from_generator(gen, output_signature=spec), {"inputs": 8, "targets": 8})
  want = list(ds.as_numpy_iterator())
  got = batches.decoder_rows(examples, length, pack=pack, start_id=0)
  assert len(got["decoder_target_tokens"]) == len(want)
  for key, value in got.items():
    np.testing.assert_array_equal(value, np.stack([w[key] for w in want]), err_msg=key)


KEPT = [{"id": "p1", "sample_index": 0, "prompt": "!Compute 5!\nAnswer: ",
         "text": "5! = 5 * 4! = 120. Wow!"},
        {"id": "p2", "sample_index": 0, "prompt": "Question: 3! + 1?\nAnswer: ",
         "text": "3! = 6, 6 + 1 = 7!"}]


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("style", ["llama3", "qwen2", "gemma"])
def test_kept_samples_with_token_zero_are_trained_on(tmp_path, vocabs, style, pack):
  vocab = vocabs[style]
  (tmp_path / "kept").mkdir()
  (tmp_path / "kept" / "k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in KEPT))
  name = finetune.register_finetune_task(f"zero_{style}", tmp_path / "kept", vocab)
  rows = finetune.decoder_examples(name, {"inputs": 40, "targets": 40}, pack=pack)
  prefix = list(vocab_lib.prompt_prefix(vocab))
  sequences = [(prefix + vocab.encode(r["prompt"]), vocab.encode(r["text"]) + [vocab.eos_id])
               for r in KEPT]
  if style != "gemma":
    assert all(0 in p and 0 in t for p, t in sequences)  # "!" is id 0 in both parts
  # Every solution token carries weight, id 0 included; the prompt and padding none.
  weights, targets = rows["decoder_loss_weights"], rows["decoder_target_tokens"]
  assert weights.sum() == sum(len(t) for _, t in sequences)
  weighted = [targets[i][weights[i] > 0].tolist() for i in range(len(targets))]
  assert sum(weighted, []) == sum((t for _, t in sequences), [])
  # What the model reads is the whole prompt, BOS first where the tokenizer adds it: the same
  # ids the sampler is given (`tasks.load_problems` / the kept samples' Task "inputs").
  inputs = rows["decoder_input_tokens"]
  if pack:
    segments = rows["decoder_segment_ids"]
    read = [inputs[r][segments[r] == s].tolist() for r in range(len(inputs))
            for s in range(1, segments[r].max() + 1)]
  else:
    read = [inputs[i][:len(p) + len(t) - 1].tolist() for i, (p, t) in enumerate(sequences)]
  assert read == [(p + t)[:-1] for p, t in sequences]
  assert all(r[0] == 2 for r in read) == (style == "gemma")
  task_inputs = [ex["inputs"].tolist() for ex in seqio.get_mixture_or_task(name).get_dataset(
      None, "train", shuffle=False, use_cached=False).as_numpy_iterator()]
  assert task_inputs == [p for p, _ in sequences]


def test_problem_task_prompts_and_human_solutions(tmp_path, vocabs):
  rows = [{"id": f"q{i}", "question": f"What is {i}!?", "answer": str(f),
           "solution": f"{i}! = {f}. The final answer is {f}"}
          for i, f in ((3, 6), (4, 24), (5, 120))]
  (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tmp_path / "test.jsonl").write_text(json.dumps({**rows[0], "id": "t0"}) + "\n")
  for style in ("llama3", "gemma"):
    vocab = vocabs[style]
    name = tasks.register_task("jsonl", vocab, name=f"zero_jsonl_{style}",
                               train_path=str(tmp_path / "train.jsonl"),
                               test_path=str(tmp_path / "test.jsonl"), valid_size=1)
    prefix = list(vocab_lib.prompt_prefix(vocab))
    problems = tasks.load_problems(name, "train")
    for p in problems:
      assert p["prompt_ids"] == prefix + vocab.encode(p["prompt"])  # nothing cut, BOS first
    # A prompt longer than the limit keeps BOS and the end of the question.
    short = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": 6, "targets": 40}, "train", shuffle=False, use_cached=False)
    for ex, p in zip(short.as_numpy_iterator(), problems):
      assert ex["inputs"].tolist() == prefix + p["prompt_ids"][len(prefix):][-(6 - len(prefix)):]
    decoded = finetune.decoder_examples(name, {"inputs": 40, "targets": 40})
    solutions = [vocab.encode(r["solution"]) + [vocab.eos_id] for r in rows
                 if r["id"] in {p["id"] for p in problems}]
    assert decoded["decoder_loss_weights"].sum() == sum(map(len, solutions))


# --- sampling ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama3_model(vocabs):
  cfg = model.preset("tiny", num_layers=2, d_model=32, num_heads=2, num_kv_heads=1, head_dim=16,
                     d_ff=64, vocab_size=320, max_len=48, parallel_block=False, norm="rmsnorm",
                     scale_tied_logits=False, embed_init_std=0.5)
  params = nn.unbox(model.Decoder(cfg).init(jax.random.key(3), jnp.zeros((1, 1), jnp.int32))
                    ["params"])
  mesh = partitioning.make_mesh((1, 1, 1), jax.devices()[:1])
  vocab = vocabs["llama3"]
  return cfg, params, sampling.Sampler(params, cfg, mesh=mesh, vocab=vocab, eos_id=vocab.eos_id)


def _greedy_reference(forward, cfg, params, prompt, steps):
  """Greedy decoding by the full forward pass (causal: what follows a token cannot change its
  logits, so the sequence is padded to one length for one compilation)."""
  tokens = list(prompt)
  for _ in range(steps):
    row = np.zeros((1, cfg.max_len), np.int32)
    row[0, :len(tokens)] = tokens
    tokens.append(int(jnp.argmax(forward(params, row)[0, len(tokens) - 1])))
  return tokens[len(prompt):]


def test_prompts_with_token_zero_are_sampled_unchanged(llama3_model, vocabs, tmp_path):
  cfg, params, sampler = llama3_model
  vocab = vocabs["llama3"]
  texts = {"start": "!5 is", "middle": "Compute 5! now", "end": "So 4!", "zeros": "!!"}
  ids = {k: [*vocab.prompt_prefix, *vocab.encode(t)] for k, t in texts.items()}
  ids["bare_start"] = vocab.encode("!5 is")  # id 0 at position 0: no BOS given
  ids["lone_zero"] = [0]
  assert ids["bare_start"][0] == 0 and ids["end"][-1] == 0 and 0 in ids["middle"][2:-1]
  names = list(ids)
  together = sampler.generate(names, [ids[k] for k in names], num_samples=1,
                              strategy=sampling.Greedy(), max_new_tokens=5, batch_size=8)
  forward = jax.jit(lambda p, t: model.Decoder(cfg).apply({"params": p}, t)[0])
  for k, (got,) in zip(names, together):
    want = _greedy_reference(forward, cfg, params, ids[k], 5)
    assert got.tokens[:len(want)] == want[:len(got.tokens)], k
  # A text prompt (the sample CLI) reads as the same ids as given by prompt_ids.
  (tmp_path / "p.jsonl").write_text("".join(
      json.dumps({"id": k, "prompt": t}) + "\n" + json.dumps({"id": k + "_ids",
                                                              "prompt_ids": ids[k]}) + "\n"
      for k, t in texts.items()))
  _, read = sample.read_prompts(tmp_path / "p.jsonl", vocab)
  assert read[0::2] == read[1::2] == [ids[k] for k in texts]
  # The sample shards of a source whose prompts hold id 0 equal the direct samples.
  source = [{"id": k, "inputs": np.asarray(ids[k], np.int32)} for k in names]
  sample_shards.write_samples(tmp_path / "shards", sampler, source, num_samples=1,
                              strategy=sampling.Greedy(), max_new_tokens=5, progress=False)
  shards = sample_shards.read_samples(tmp_path / "shards")
  assert [r["tokens"] for r in shards] == [s[0].tokens for s in together]


def test_gemma_prompts_get_bos_in_the_sample_cli(vocabs, tmp_path):
  vocab = vocabs["gemma"]
  (tmp_path / "p.jsonl").write_text(json.dumps({"id": 1, "prompt": "Hello world!"}) + "\n"
                                    + json.dumps({"id": 2, "prompt_ids": [7, 8]}) + "\n")
  _, read = sample.read_prompts(tmp_path / "p.jsonl", vocab)
  assert read == [[2, *vocab.encode("Hello world!")], [7, 8]]
