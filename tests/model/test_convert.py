"""Import and export of Hugging Face checkpoints and tokenizers, against transformers itself.

Each supported family is built locally as a tiny random model by transformers (nothing is
downloaded), saved as safetensors, imported, and compared with transformers on the same tokens:
logits (float32, relative error <= 1e-4) and 32 greedy tokens (identical); then exported back
and loaded by transformers, which must give the same logits again.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import seqio
import tensorflow as tf
import tokenizers

from tests.conftest import REPO, smoke_env
from restem_jax.data import vocab as vocab_lib
from restem_jax import main as main_lib
from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax.model import convert
from restem_jax.model import partitioning
from restem_jax import sampling
from restem_jax.sampling import stop_strings

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 320
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, rms_norm_eps=1e-5, max_position_embeddings=128,
              initializer_range=0.2)  # wide logits: greedy argmaxes are not near-ties

# Each family with the switches it is there to cover.
FAMILIES = {
    # Llama 2 style: grouped-query attention, untied embeddings, a RoPE theta of its own.
    "llama": ("LlamaConfig", dict(num_key_value_heads=2, rope_theta=50_000.0,
                                  tie_word_embeddings=False)),
    # Llama 3.1 style: rope scaling (a short "pre-training" context, so that it matters), tied.
    "llama3": ("LlamaConfig", dict(
        num_key_value_heads=2, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        rope_theta=500_000.0)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=1, sliding_window=64)),
    # Qwen2: biases on the query/key/value projections.
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    # Gemma: GeGLU, (1 + w) RMSNorm, embeddings scaled by sqrt(d), multi-query attention, and a
    # head_dim that is not d_model / heads.
    "gemma": ("GemmaConfig", dict(num_key_value_heads=1, head_dim=32)),
}


def _hf_model(family: str, seed: int = 0):
  """A tiny random transformers model of `family`, norms and biases randomised too."""
  config_class, overrides = FAMILIES[family]
  config = getattr(transformers, config_class)(**{**COMMON, **overrides})
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or name.endswith(".bias"):  # initialised to constants
        p.normal_(0.0 if family == "gemma" or name.endswith(".bias") else 1.0, 0.2)
  return model


def _logits(hf, tokens):
  with torch.no_grad():
    return hf(torch.tensor(tokens)).logits.numpy()


def _rel_err(ours, theirs):
  return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def _one_device():
  return partitioning.make_mesh((1, 1, 1), jax.devices()[:1])


@pytest.fixture(scope="module")
def tokens():
  return np.random.RandomState(0).randint(0, VOCAB, size=(2, 24))


@pytest.fixture(scope="module", params=list(FAMILIES))
def imported(request, tmp_path_factory):
  """(family, the transformers model, its directory, our checkpoint directory, params, config)."""
  family = request.param
  tmp = tmp_path_factory.mktemp(family)
  hf = _hf_model(family)
  hf.save_pretrained(tmp / "hf")
  mesh = _one_device()
  convert.hf_to_orbax(tmp / "hf", tmp / "ckpt", mesh=mesh, progress=False)
  params, cfg = checkpoints.load(tmp / "ckpt", mesh)
  return family, hf, tmp, params, cfg


def test_import_matches_transformers_then_export_round_trips(imported, tokens):
  family, hf, tmp, params, cfg = imported
  assert cfg.dtype == cfg.param_dtype == "float32"
  ours = jax.jit(model_lib.Decoder(cfg).apply)({"params": params}, tokens)[0]
  theirs = _logits(hf, tokens)
  assert _rel_err(ours, theirs) <= 1e-4
  if family == "llama3":  # not vacuous: without its rope scaling the model differs
    assert (cfg.rope_scaling, cfg.rope_original_max_len) == ("llama3", 32)
    unscaled = jax.jit(model_lib.Decoder(cfg.replace(rope_scaling="none")).apply)(
        {"params": params}, tokens)[0]
    assert _rel_err(unscaled, theirs) > 1e-2

  # Export; transformers loads it and computes the same logits. Small shards: an index too.
  convert.orbax_to_hf(tmp / "ckpt", tmp / "out", max_shard_bytes=200_000, mesh=_one_device(),
                      progress=False)
  assert (tmp / "out" / convert.SAFETENSORS_INDEX).exists()
  exported = transformers.AutoModelForCausalLM.from_pretrained(tmp / "out").eval()
  assert _rel_err(ours, _logits(exported, tokens)) <= 1e-4


def test_greedy_generation_matches_transformers(imported, tokens):
  family, hf, _, params, cfg = imported
  # Our sampler (prefill + cached decode loop) against transformers' generate.
  prompts = [list(tokens[0, :5]), list(tokens[1, :11])]
  sampler = sampling.Sampler(params, cfg, mesh=_one_device(), eos_id=None)
  samples = sampler.generate(["a", "b"], prompts, num_samples=1, strategy=sampling.Greedy(),
                             max_new_tokens=32)
  for prompt, (sample,) in zip(prompts, samples):
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
    assert list(sample.tokens) == theirs[0, len(prompt):].tolist()


def test_import_places_parameters_on_their_shardings(tokens, tmp_path):
  hf = _hf_model("llama")
  hf.save_pretrained(tmp_path, max_shard_size="100KB")  # several files and an index
  assert (tmp_path / convert.SAFETENSORS_INDEX).exists()
  cfg = convert.model_config_from_hf(json.loads((tmp_path / "config.json").read_text()))
  mesh = partitioning.make_mesh((1, 2, 2), jax.devices()[:4])
  params = convert.load_hf_params(tmp_path, cfg, mesh, progress=False)
  _, shardings = partitioning.abstract_and_shardings(
      lambda key: model_lib.Decoder(cfg).init(key, jnp.zeros((1, 1), jnp.int32)), mesh,
      partitioning.DEFAULT_RULES, jax.random.key(0))
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(shardings["params"])):
    assert got.sharding.is_equivalent_to(want, got.ndim)
  # [layers, D, N, H]: D over fsdp, heads over model.
  query = params["layers"]["attn"]["query"]
  assert query.addressable_shards[0].data.shape == (2, 32, 2, 16)
  ours = jax.jit(model_lib.Decoder(cfg).apply)({"params": params}, tokens)[0]
  assert _rel_err(ours, _logits(hf, tokens)) <= 1e-4


# ---------------------------------------------------------------------------------------------
# Unsupported architectures and fields are errors that name them.


def _llama_config(**overrides):
  return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64,
          "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
          "num_attention_heads": 4, "hidden_act": "silu", **overrides}


@pytest.mark.parametrize("overrides,message", [
    (dict(model_type="gemma2"), "model_type='gemma2'"),
    (dict(architectures=["LlamaForSequenceClassification"]), "LlamaForSequenceClassification"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_type='yarn'"),
    (dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0}), "rope_type='dynamic'"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor"),
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
])
def test_unsupported_configs_are_named(overrides, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
    convert.model_config_from_hf(_llama_config(**overrides))


def test_config_mapping_details():
  cfg = convert.model_config_from_hf(_llama_config(
      torch_dtype="bfloat16", rope_theta=1e6, num_key_value_heads=2,
      rope_scaling={"type": "linear", "factor": 2.0}))
  assert (cfg.param_dtype, cfg.dtype, cfg.num_kv_heads, cfg.head_dim) == ("bfloat16",
                                                                          "bfloat16", 2, 8)
  assert (cfg.rope_theta, cfg.rope_scaling, cfg.rope_scaling_factor) == (1e6, "linear", 2.0)
  assert not cfg.tied_embeddings and not cfg.parallel_block and cfg.norm == "rmsnorm"
  fp16 = convert.model_config_from_hf(_llama_config(torch_dtype="float16"))
  assert (fp16.param_dtype, fp16.dtype) == ("float32", "bfloat16")  # fp16 -> fp32 is exact
  gemma = convert.model_config_from_hf(_llama_config(model_type="gemma", hidden_act="gelu",
                                                     architectures=["GemmaForCausalLM"]))
  assert gemma.tied_embeddings and gemma.embed_scale and gemma.norm_scale_plus_one
  mistral = convert.model_config_from_hf(_llama_config(
      model_type="mistral", max_position_embeddings=32768, sliding_window=4096))
  assert mistral.max_len == 4096  # exact within the window


def test_tensors_without_a_place_are_named(tmp_path):
  hf = _hf_model("llama")
  hf.save_pretrained(tmp_path)
  cfg = convert.model_config_from_hf(json.loads((tmp_path / "config.json").read_text()))
  with pytest.raises(ValueError, match="missing tensors.*q_proj.bias"):
    convert.load_hf_params(tmp_path, cfg.replace(qkv_bias=True), _one_device(), progress=False)
  with pytest.raises(ValueError, match="embed_tokens.weight: shape"):
    convert.load_hf_params(tmp_path, cfg.replace(vocab_size=2 * VOCAB), _one_device(),
                           progress=False)
  safetensors.numpy.save_file({"model.layers.0.self_attn.o_proj.bias": np.zeros(64, np.float32)},
                              str(tmp_path / "extra.safetensors"))
  with pytest.raises(ValueError, match=r"unsupported\) \['model.layers.0.self_attn.o_proj.bias'"):
    convert.load_hf_params(tmp_path, cfg, _one_device(), progress=False)


def test_palm_layout_does_not_export(tmp_path):
  with pytest.raises(ValueError, match="parallel_block=True"):
    convert.hf_config_from_model_config(model_lib.preset("tiny"))


# ---------------------------------------------------------------------------------------------
# Tokenizers


TEXTS = ["Question: 12 + 34 = ?\nAnswer: 46\n", "héllo wörld ☃, def f(x):\n    return x\n",
         "The answer is 7.\n\n"]


def _byte_level_tokenizer(directory, config: bool = True):
  """A Llama 3 / Qwen2 style tokenizer.json: byte-level BPE, specials after the merges."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXTS * 20, trainer)
  tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "tokenizer.json")
  tok.save(path)
  if config:
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
      json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                 "eos_token": "<|end_of_text|>"}, f)
  return path


def test_hf_tokenizer_vocabulary(tmp_path):
  path = _byte_level_tokenizer(tmp_path)
  vocab = vocab_lib.load_vocab(path)
  assert isinstance(vocab, vocab_lib.HfTokenizerVocabulary)
  reference = transformers.PreTrainedTokenizerFast(tokenizer_file=path)
  assert vocab.eos_id == reference.convert_tokens_to_ids("<|end_of_text|>")
  assert vocab.bos_id == reference.convert_tokens_to_ids("<|begin_of_text|>")
  assert vocab.pad_id == 0 and vocab.unk_id is None and vocab.vocab_size == len(reference)
  for text in TEXTS:
    ids = vocab.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False)
    assert vocab.decode(ids) == text
    # Decoding stops at EOS and drops it; ids past the vocabulary are ignored.
    assert vocab.decode([*ids, vocab.eos_id, *ids]) == text
    # The stop-string automaton's view: each id's bytes add up to the decoded text.
    pieces = stop_strings.piece_bytes(vocab)
    assert b"".join(pieces[i] for i in ids).decode("utf-8") == text
  assert stop_strings.piece_bytes(vocab)[vocab.eos_id] == b""

  # TensorFlow ops, as seqio's preprocessors call them (inside tf.data, so in graph mode).
  ds = tf.data.Dataset.from_tensor_slices({"targets": TEXTS})
  ds = seqio.preprocessors.tokenize(
      ds, {"targets": seqio.Feature(vocab, add_eos=True)}, copy_pretokenized=True)
  for example, text in zip(ds.as_numpy_iterator(), TEXTS):
    assert example["targets"].tolist() == vocab.encode(text)
  batch = tf.ragged.constant([vocab.encode(t) + [vocab.eos_id, 5] for t in TEXTS]).to_tensor(
      default_value=vocab.eos_id)
  assert [s.decode() for s in vocab.decode_tf(batch).numpy()] == TEXTS
  assert vocab.decode_tf(tf.constant(vocab.encode(TEXTS[0]))).numpy().decode() == TEXTS[0]
  assert vocab.encode_tf(tf.constant(TEXTS)).to_list() == [vocab.encode(t) for t in TEXTS]
  assert vocab == vocab_lib.load_vocab(path)


def test_hf_tokenizer_special_tokens_without_config(tmp_path):
  path = _byte_level_tokenizer(tmp_path, config=False)
  tok = tokenizers.Tokenizer.from_file(path)
  vocab = vocab_lib.load_vocab(path)  # the usual names
  assert vocab.eos_id == tok.token_to_id("<|end_of_text|>")
  assert vocab.bos_id == tok.token_to_id("<|begin_of_text|>")
  bare = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
  bare.save(str(tmp_path / "bare.json"))
  with pytest.raises(ValueError, match="eos_token"):
    vocab_lib.load_vocab(tmp_path / "bare.json")


def test_sentencepiece_vocabulary_travels_both_ways(tmp_path):
  """HF_DIR/tokenizer.model is used as it is (seqio's SentencePiece vocabulary)."""
  hf = _hf_model("gemma")
  hf.save_pretrained(tmp_path / "hf")
  vocab_lib.train_sentencepiece(TEXTS * 20, tmp_path / "hf" / "tokenizer.model", VOCAB)
  convert.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", mesh=_one_device(), progress=False)
  vocab_file = checkpoints.vocab_path(tmp_path / "ckpt")
  assert vocab_file.name == checkpoints.VOCAB_FILE
  assert isinstance(vocab_lib.load_vocab(vocab_file), seqio.SentencePieceVocabulary)
  convert.orbax_to_hf(tmp_path / "ckpt", tmp_path / "out", mesh=_one_device(), progress=False)
  assert ((tmp_path / "out" / "tokenizer.model").read_bytes()
          == (tmp_path / "hf" / "tokenizer.model").read_bytes())
  config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert config["eos_token_id"] == 1 and config["model_type"] == "gemma"


# ---------------------------------------------------------------------------------------------
# The commands


def _run(*args, timeout=300):
  out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=smoke_env(),
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-4000:]
  return out


def test_commands_import_sample_export(tmp_path):
  hf = _hf_model("llama", seed=1)
  hf.save_pretrained(tmp_path / "hf")
  _byte_level_tokenizer(tmp_path / "hf")
  _run("restem_jax.convert", "hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ckpt"),
       "--no_progress")
  assert (tmp_path / "ckpt" / "tokenizer.json").exists()
  assert (tmp_path / "ckpt" / "tokenizer_config.json").exists()

  # The sampling CLI on the imported checkpoint, with its tokenizer.json vocabulary.
  prompts = ["Question: 12 + 34 = ?\nAnswer:", "héllo"]
  (tmp_path / "prompts.jsonl").write_text(
      "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts)))
  _run("restem_jax.sample", f"--checkpoint={tmp_path / 'ckpt'}",
       f"--prompts={tmp_path / 'prompts.jsonl'}", f"--out={tmp_path / 'samples.jsonl'}",
       "--temperature=0", "--max_new_tokens=16", "--stop=zzz")
  rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  reference = transformers.PreTrainedTokenizerFast(
      tokenizer_file=str(tmp_path / "hf" / "tokenizer.json"))
  eos = reference.convert_tokens_to_ids("<|end_of_text|>")
  for prompt, row in zip(prompts, rows):
    ids = reference.encode(prompt, add_special_tokens=False)
    theirs = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                         eos_token_id=eos, pad_token_id=0)[0, len(ids):].tolist()
    assert row["tokens"] == theirs
    assert row["text"] == reference.decode(theirs, skip_special_tokens=True)

  _run("restem_jax.convert", "orbax-to-hf", str(tmp_path / "ckpt"), str(tmp_path / "out"),
       "--no_progress")
  exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  tokens = np.random.RandomState(1).randint(0, VOCAB, size=(1, 16))
  assert _rel_err(_logits(exported, tokens), _logits(hf, tokens)) <= 1e-4
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  assert tokenizer.encode(prompts[0], add_special_tokens=False) == reference.encode(
      prompts[0], add_special_tokens=False)


def test_remat_travels_with_the_imported_checkpoint(tmp_path):
  """A run fine-tunes with its base checkpoint's config: `--remat` must land there."""
  from restem_jax.model import checkpoints
  hf = _hf_model("llama")
  hf.save_pretrained(tmp_path / "hf")
  assert not convert.model_config_from_hf(_llama_config()).remat
  assert convert._parse(["hf-to-orbax", "a", "b", "--remat"]).remat  # pylint: disable=protected-access
  assert not convert._parse(["hf-to-orbax", "a", "b"]).remat  # pylint: disable=protected-access
  convert.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", mesh=_one_device(), progress=False,
                      remat=True)
  assert checkpoints.load_config(tmp_path / "ckpt").remat


def test_command_errors_are_plain(tmp_path, capsys):
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "config.json").write_text(json.dumps(_llama_config(model_type="mixtral")))
  with pytest.raises(SystemExit) as exit_info:
    convert.main(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ckpt")])
  assert exit_info.value.code == 2  # bad input (restem_jax.cli)
  assert ("error: unsupported architecture model_type='mixtral'"
          in capsys.readouterr().err.splitlines()[-1])
  assert not (tmp_path / "ckpt").exists()


def test_run_flags_for_an_imported_base(monkeypatch):
  """`--config.base_checkpoint=PATH --config.vocab=PATH` on the real-run configs."""
  from absl import flags
  from ml_collections import config_flags
  for name in ("jsonl_math", "math_palm", "apps_palm", "gsm8k"):
    argv = main_lib.expand_aliases(
        ["prog", f"--config={REPO}/configs/{name}.py", "--config.base_checkpoint=/ckpt",
         "--config.vocab=/ckpt/tokenizer.json"])
    monkeypatch.setattr(sys, "argv", argv)  # as main.run() sets it; config_flags reads it
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True)
    values(argv)
    assert values.config.base_checkpoint == "/ckpt"
    assert values.config.vocab.path == "/ckpt/tokenizer.json"


def test_imported_checkpoint_with_tokenizer_json_as_a_run_base(tmp_path):
  """The loop's path for a base checkpoint: its tokenizer.json vocabulary tokenizes the tasks
  (seqio, tf.data), builds fine-tuning rows, and the sampler evaluates the base model."""
  from restem_jax.loop import evaluation
  from restem_jax import loop
  hf = _hf_model("llama")
  hf.save_pretrained(tmp_path / "hf")
  _byte_level_tokenizer(tmp_path / "hf")
  convert.hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", mesh=_one_device(), progress=False)
  config = _load_config("jsonl_math")
  config.base_checkpoint = str(tmp_path / "ckpt")
  for split, ids in (("train", "ab"), ("valid", "c"), ("test", "de")):
    (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(
        {"id": i, "question": "What is 7 + 5?", "answer": "12",
         "solution": "7 + 5 = 12. The final answer is 12."}) + "\n" for i in ids))
    config.data[f"{split}_path"] = str(tmp_path / f"{split}.jsonl")
  config.data.num_shots = 0
  (tmp_path / "run").mkdir()
  data = loop.prepare(config, tmp_path / "run")
  run = loop.Run(config, tmp_path / "run", data)
  assert isinstance(data.vocab, vocab_lib.HfTokenizerVocabulary)
  # The special tokens' roles travel with the run's copy of the vocabulary (and so into every
  # checkpoint the run saves).
  assert ((tmp_path / "run" / "tokenizer_config.json").read_text()
          == (tmp_path / "ckpt" / "tokenizer_config.json").read_text())
  rows = run._decoder_rows(data.task_name, "train")  # pylint: disable=protected-access
  targets = rows["decoder_target_tokens"][0]
  weights = rows["decoder_loss_weights"][0]
  solution = data.vocab.decode(targets[weights > 0].tolist())
  assert solution == "7 + 5 = 12. The final answer is 12." and data.vocab.eos_id in targets
  sampler = run.sampler(run.base_model())
  assert sampler.cfg == checkpoints.load_config(tmp_path / "ckpt")
  records = evaluation.sample_and_score(
      sampler, data.problems["test"][:2], data.reward, num_samples=1, strategy=sampling.Greedy(),
      max_new_tokens=8, seed=0, iteration=0, stop_strings=data.stop_strings, batch_size=8)
  assert len(records) == 2 and all(isinstance(r["text"], str) for r in records)
  assert sampler.eos_id == data.vocab.eos_id != 1  # stops at the vocabulary's EOS, not at id 1


def _load_config(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
