r"""Hugging Face checkpoints <-> our model checkpoints: the Llama family and Gemma.

  python -m restem_jax.convert hf-to-orbax HF_DIR OUT_DIR [--param_dtype=D --dtype=D \
      --vocab=FILE --mesh=DATA,FSDP,MODEL]
  python -m restem_jax.convert orbax-to-hf CKPT_DIR OUT_DIR [--dtype=D --max_shard_gb=G \
      --mesh=DATA,FSDP,MODEL]

hf-to-orbax reads a local Hugging Face directory (config.json, *.safetensors, the tokenizer) of a
Llama 2/3, Mistral, Qwen2 or Gemma (1) causal LM and writes a model checkpoint directory
(`checkpoints.save`) that a run can start from (`--config.base_checkpoint=OUT_DIR`). It reads one
tensor at a time and puts it straight onto its sharding of the mesh; the layers' stacked
parameters are filled in place layer by layer, so the host never holds more than one tensor. The
vocabulary travels along: tokenizer.model (SentencePiece) when there is one, else tokenizer.json,
with tokenizer_config.json.

orbax-to-hf writes a checkpoint (e.g. a ReST^EM iteration's best model) back as config.json,
safetensors shards (with an index when there are several) and the tokenizer files, loadable by
transformers' AutoModelForCausalLM. Llama-layout models export as "llama" (Mistral is the same
network), models with query/key/value biases as "qwen2", and Gemma-layout ones as "gemma".

Architectures and config fields that our decoder does not implement are errors that name them;
nothing is dropped silently. Mistral's sliding window (and Qwen2's, when enabled) is kept exact by
capping the model's max_len at the window.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
import sentencepiece
import tokenizers
import tqdm
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from restem_jax import cli
from restem_jax.data import hf_tokenizer
from restem_jax import file_io
from restem_jax import model as model_lib
from restem_jax.model import checkpoints
from restem_jax.model import partitioning

SUPPORTED = ("llama", "mistral", "qwen2", "gemma")
HF_CONFIG = "config.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SENTENCEPIECE_FILE = "tokenizer.model"
TOKENIZER_FILES = (SENTENCEPIECE_FILE, checkpoints.HF_TOKENIZER_FILE)
# Buffers some older checkpoints saved beside the weights; recomputed from the config.
_IGNORED_TENSORS = re.compile(r".*rotary_emb\.inv_freq$")
_TIED_DEFAULT = {"llama": False, "mistral": False, "qwen2": False, "gemma": True}
_ACTIVATIONS = {"silu": "silu", "swish": "silu",
                # Gemma's "gelu" is the tanh approximation (transformers reads it so too).
                "gelu": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_new": "gelu"}


# ---------------------------------------------------------------------------------------------
# Configs


def _rope_fields(hf: dict[str, Any]) -> dict[str, Any]:
  """RoPE theta and scaling from either config layout (rope_theta + rope_scaling, or
  transformers 5's rope_parameters)."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or params
  theta = hf.get("rope_theta", params.get("rope_theta", 10_000.0))
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  fields = {"rope_theta": float(theta)}
  if kind == "default":
    return fields
  if kind == "linear":
    return {**fields, "rope_scaling": "linear",
            "rope_scaling_factor": float(scaling["factor"])}
  if kind == "llama3":
    return {**fields, "rope_scaling": "llama3", "rope_scaling_factor": float(scaling["factor"]),
            "rope_low_freq_factor": float(scaling["low_freq_factor"]),
            "rope_high_freq_factor": float(scaling["high_freq_factor"]),
            "rope_original_max_len": int(scaling.get("original_max_position_embeddings")
                                         or hf["max_position_embeddings"])}
  raise ValueError(f"unsupported RoPE scaling rope_type={kind!r}: supported are 'default', "
                   "'linear' and 'llama3'")


def _check_supported(hf: dict[str, Any]) -> str:
  """Raises ValueError naming the first thing in `hf` our decoder does not implement."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED:
    raise ValueError(f"unsupported architecture model_type={model_type!r} (architectures="
                     f"{hf.get('architectures')}); supported: {', '.join(SUPPORTED)}")
  for arch in hf.get("architectures") or ():
    if not arch.endswith("ForCausalLM"):
      raise ValueError(f"unsupported architecture {arch!r}: only causal LMs (*ForCausalLM)")
  unsupported = {
      "quantization_config": "quantized weights",
      "attention_bias": "biases on all four attention projections (Qwen2's query/key/value "
                        "biases are supported)",
      "mlp_bias": "biases in the MLP",
      "use_bidirectional_attention": "bidirectional attention",
  }
  for field, what in unsupported.items():
    if hf.get(field):
      raise ValueError(f"unsupported config field {field}={hf[field]!r}: {what}")
  if hf.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError(f"unsupported config field partial_rotary_factor="
                     f"{hf['partial_rotary_factor']}: RoPE on part of each head")
  act = hf.get("hidden_act", "silu")
  expected = "gelu" if model_type == "gemma" else "silu"
  if _ACTIVATIONS.get(act) != expected:
    raise ValueError(f"unsupported config field hidden_act={act!r} for {model_type}: "
                     f"{'GeGLU (tanh gelu)' if expected == 'gelu' else 'SwiGLU (silu)'} only")
  return model_type


def model_config_from_hf(hf: dict[str, Any], *, param_dtype: str | None = None,
                         dtype: str | None = None, remat: bool = False) -> model_lib.ModelConfig:
  """Our `ModelConfig` for a Hugging Face config.json (as a dict).

  Args:
    hf: the config.
    param_dtype: the parameters' dtype; default: bfloat16 for a bfloat16 checkpoint, else
      float32 (float16 -> float32 is exact, -> bfloat16 would round).
    dtype: the compute dtype; default: float32 for a float32 checkpoint, else bfloat16.
    remat: rematerialise each block in the backward pass. A run fine-tunes with its base
      checkpoint's config, so an import meant for fine-tuning rows that do not fit otherwise
      (e.g. an 8B model at 2048 tokens a row on 16 GiB chips: README "Will it fit?") sets it.

  Raises:
    ValueError: naming the architecture or field that is not supported.
  """
  model_type = _check_supported(hf)
  gemma = model_type == "gemma"
  stored = str(hf.get("torch_dtype") or hf.get("dtype") or "float32").replace("torch.", "")
  d_model, heads = hf["hidden_size"], hf["num_attention_heads"]
  max_len = hf.get("max_position_embeddings", 2048)
  window = hf.get("sliding_window")
  if window and (model_type == "mistral" or hf.get("use_sliding_window")) and window < max_len:
    logging.info("%s attends within a sliding window of %d tokens: max_len %d -> %d (exact "
                 "up to there)", model_type, window, max_len, window)
    max_len = window
  return model_lib.ModelConfig(
      vocab_size=hf["vocab_size"], d_model=d_model, num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or d_model // heads, d_ff=hf["intermediate_size"],
      parallel_block=False, norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      norm_scale_plus_one=gemma,
      tied_embeddings=bool(hf.get("tie_word_embeddings", _TIED_DEFAULT[model_type])),
      scale_tied_logits=False, embed_scale=gemma, embed_init_std=0.02,
      mlp_activation="gelu" if gemma else "silu", qkv_bias=model_type == "qwen2",
      max_len=max_len, **_rope_fields(hf),
      param_dtype=param_dtype or ("bfloat16" if stored == "bfloat16" else "float32"),
      dtype=dtype or ("float32" if stored == "float32" else "bfloat16"), remat=remat)


def hf_config_from_model_config(cfg: model_lib.ModelConfig, *, dtype: str = "float32",
                                eos_id: int | None = None,
                                bos_id: int | None = None) -> dict[str, Any]:
  """The Hugging Face config.json (as a dict) of a model in the Llama or Gemma layout.

  Raises:
    ValueError: for PaLM-layout switches that no Hugging Face architecture here has.
  """
  gemma_switches = (cfg.norm_scale_plus_one, cfg.embed_scale, cfg.mlp_activation == "gelu")
  problems = [name for name, bad in (
      ("parallel_block=True", cfg.parallel_block), (f"norm={cfg.norm!r}", cfg.norm != "rmsnorm"),
      ("scale_tied_logits=True with tied embeddings",
       cfg.tied_embeddings and cfg.scale_tied_logits),
      ("a mix of Gemma's switches (norm_scale_plus_one, embed_scale, GeGLU)",
       any(gemma_switches) and not all(gemma_switches)),
      ("qkv_bias=True with Gemma's switches", all(gemma_switches) and cfg.qkv_bias)) if bad]
  if problems:
    raise ValueError(f"no Hugging Face architecture for this model: {', '.join(problems)}")
  model_type = "gemma" if all(gemma_switches) else "qwen2" if cfg.qkv_bias else "llama"
  arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
          "gemma": "GemmaForCausalLM"}[model_type]
  hf = {
      "architectures": [arch], "model_type": model_type,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim, "hidden_act": "gelu_pytorch_tanh" if model_type == "gemma"
      else "silu", "max_position_embeddings": cfg.max_len, "rms_norm_eps": cfg.norm_eps,
      "rope_theta": cfg.rope_theta, "tie_word_embeddings": cfg.tied_embeddings,
      "torch_dtype": dtype, "bos_token_id": bos_id, "eos_token_id": eos_id,
  }
  if model_type != "qwen2":
    hf["attention_bias"] = False
  if model_type == "llama":
    hf["mlp_bias"] = False
  if cfg.rope_scaling == "linear":
    hf["rope_scaling"] = {"rope_type": "linear", "factor": cfg.rope_scaling_factor}
  elif cfg.rope_scaling == "llama3":
    hf["rope_scaling"] = {"rope_type": "llama3", "factor": cfg.rope_scaling_factor,
                          "low_freq_factor": cfg.rope_low_freq_factor,
                          "high_freq_factor": cfg.rope_high_freq_factor,
                          "original_max_position_embeddings": cfg.rope_original_max_len}
  return hf


# ---------------------------------------------------------------------------------------------
# Tensors: which Hugging Face tensor is which of our parameters, in which layout


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One Hugging Face tensor name (per layer when `layered`) and one of our parameters."""

  ours: tuple[str, ...]  # path in our params tree
  hf: str  # Hugging Face name; "{i}" is the layer
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]

  @property
  def layered(self) -> bool:
    return self.ours[0] == "layers"


def tensors(cfg: model_lib.ModelConfig) -> list[Tensor]:
  """The correspondence for `cfg`. Hugging Face's Linear weights are [out, in]; ours are
  [in, out] with the heads axis split out."""
  D, H = cfg.d_model, cfg.head_dim
  same = lambda x: x  # noqa: E731
  transpose = lambda x: x.T  # noqa: E731
  heads_in = (lambda x: x.T.reshape(D, -1, H), lambda x: x.reshape(D, -1).T)  # [D, N, H]
  heads_out = (lambda x: x.T.reshape(-1, H, D), lambda x: x.reshape(-1, D).T)  # [N, H, D]
  bias = (lambda x: x.reshape(-1, H), lambda x: x.reshape(-1))  # [N, H]
  layer = "model.layers.{i}."
  out = [Tensor(("embedding",), "model.embed_tokens.weight", same, same),
         Tensor(("final_norm", "scale"), "model.norm.weight", same, same)]
  if not cfg.tied_embeddings:
    out.append(Tensor(("unembed",), "lm_head.weight", transpose, transpose))
  for name, hf_name in (("pre_attn_norm", "input_layernorm"),
                        ("pre_mlp_norm", "post_attention_layernorm")):
    out.append(Tensor(("layers", name, "scale"), layer + hf_name + ".weight", same, same))
  for name, proj in (("query", "q"), ("key", "k"), ("value", "v")):
    out.append(Tensor(("layers", "attn", name), f"{layer}self_attn.{proj}_proj.weight",
                      *heads_in))
    if cfg.qkv_bias:
      out.append(Tensor(("layers", "attn", name + "_bias"), f"{layer}self_attn.{proj}_proj.bias",
                        *bias))
  out.append(Tensor(("layers", "attn", "out"), layer + "self_attn.o_proj.weight", *heads_out))
  for name, proj in (("wi_gate", "gate"), ("wi_up", "up"), ("wo", "down")):
    out.append(Tensor(("layers", "mlp", name), f"{layer}mlp.{proj}_proj.weight", transpose,
                      transpose))
  return out


def _names(entry: Tensor, num_layers: int) -> list[str]:
  return ([entry.hf.format(i=i) for i in range(num_layers)] if entry.layered else [entry.hf])


def _get(tree, path: Sequence[str]):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: Sequence[str], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def hf_tensors(params, cfg: model_lib.ModelConfig,
               dtype: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
  """Our parameters as Hugging Face (name, host array) pairs, one tensor at a time."""
  for entry in tensors(cfg):
    value = _get(params, entry.ours)
    for i, name in enumerate(_names(entry, cfg.num_layers)):
      x = np.asarray(value[i] if entry.layered else value)
      yield name, np.ascontiguousarray(entry.to_hf(x).astype(jnp.dtype(dtype or x.dtype)))


# ---------------------------------------------------------------------------------------------
# Import


def _tensor_files(hf_dir: epath.Path) -> dict[str, str]:
  """Tensor name -> the safetensors file holding it."""
  index = hf_dir / SAFETENSORS_INDEX
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    return {name: str(hf_dir / file) for name, file in weight_map.items()}
  files = sorted(hf_dir.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"{hf_dir} has no *.safetensors files (PyTorch .bin checkpoints "
                            "are not read: save them with safe_serialization=True)")
  out = {}
  for file in files:
    with safetensors.safe_open(str(file), framework="np") as f:
      out.update({name: str(file) for name in f.keys()})
  return out


def _on_mesh(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array placed onto `sharding`; each device copies only its own slice."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


@functools.cache
def _layer_writer(sharding: jax.sharding.Sharding):
  """(stacked [layers, ...], one layer, i) -> stacked with layer i replaced, in place."""
  return jax.jit(lambda stacked, x, i: jax.lax.dynamic_update_index_in_dim(stacked, x, i, 0),
                 donate_argnums=0, out_shardings=sharding)


def load_hf_params(hf_dir: epath.PathLike, cfg: model_lib.ModelConfig,
                   mesh: jax.sharding.Mesh | None = None,
                   rules: partitioning.Rules = partitioning.DEFAULT_RULES,
                   progress: bool = True):
  """Reads a Hugging Face safetensors checkpoint straight into our parameters on `mesh`.

  One tensor at a time is on the host; each goes onto its parameter's sharding (the rules'), and
  a stacked layer parameter is written in place, layer by layer.

  Args:
    hf_dir: a local directory with *.safetensors (and model.safetensors.index.json if sharded).
    cfg: the architecture (`model_config_from_hf`); the parameters get its param_dtype.
    mesh: where to place them; default: all local devices, FSDP.
    rules: logical-axis rules.
    progress: show a progress bar over the tensors.

  Returns:
    The params pytree (the Flax "params" collection).

  Raises:
    ValueError: a tensor is missing, has the wrong shape, or is one we have no place for.
  """
  hf_dir = epath.Path(hf_dir)
  mesh = mesh or partitioning.make_mesh((1, -1, 1), jax.local_devices())
  files = _tensor_files(hf_dir)
  entries = tensors(cfg)
  wanted = {name for e in entries for name in _names(e, cfg.num_layers)}
  optional = {"lm_head.weight"} if cfg.tied_embeddings else set()
  missing = sorted(wanted - set(files))
  extra = sorted(n for n in set(files) - wanted - optional if not _IGNORED_TENSORS.match(n))
  if missing or extra:
    raise ValueError(f"{hf_dir} does not match its config: missing tensors {missing[:6]}"
                     f"{'...' if len(missing) > 6 else ''}; tensors with no place in our "
                     f"model (unsupported) {extra[:6]}{'...' if len(extra) > 6 else ''}")
  abstract, shardings = partitioning.abstract_and_shardings(
      lambda key: model_lib.Decoder(cfg).init(key, jnp.zeros((1, 1), jnp.int32)),
      mesh, rules, jax.random.key(0))
  abstract, shardings = nn.unbox(abstract)["params"], shardings["params"]
  params: dict = {}
  bar = tqdm.tqdm(total=len(wanted), unit="tensor", desc="import", disable=not progress)
  with contextlib.ExitStack() as stack:
    handles = {}

    def read(name: str, entry: Tensor, shape: tuple[int, ...], dtype) -> np.ndarray:
      if files[name] not in handles:
        handles[files[name]] = stack.enter_context(
            safetensors.safe_open(files[name], framework="np"))
      x = entry.to_ours(handles[files[name]].get_tensor(name))
      if x.shape != shape:
        raise ValueError(f"{name}: shape {x.shape} in our layout, but {'/'.join(entry.ours)} "
                         f"is {shape} for the config")
      bar.update()
      return x.astype(dtype, copy=False)

    for entry in entries:
      target, sharding = _get(abstract, entry.ours), _get(shardings, entry.ours)
      if not entry.layered:
        _set(params, entry.ours, _on_mesh(read(entry.hf, entry, target.shape, target.dtype),
                                          sharding))
        continue
      layer_sharding = NamedSharding(mesh, PartitionSpec(*sharding.spec[1:]))
      stacked = jnp.zeros(target.shape, target.dtype, device=sharding)
      for i, name in enumerate(_names(entry, cfg.num_layers)):
        x = read(name, entry, target.shape[1:], target.dtype)
        stacked = _layer_writer(sharding)(stacked, _on_mesh(x, layer_sharding), jnp.int32(i))
      _set(params, entry.ours, stacked)
  bar.close()
  return params


def _vocab_file(hf_dir: epath.Path) -> epath.Path | None:
  for name in TOKENIZER_FILES:
    if (hf_dir / name).exists():
      return hf_dir / name
  return None


def _vocab_ids(path: epath.Path) -> tuple[int, int, int | None]:
  """(size, EOS id, BOS id or None) of a vocabulary file, without starting TensorFlow."""
  if hf_tokenizer.is_tokenizer_json(path):
    tokenizer = tokenizers.Tokenizer.from_str(path.read_text())
    special = hf_tokenizer.special_ids(path, tokenizer)
    return tokenizer.get_vocab_size(with_added_tokens=True), special.eos, special.bos
  sp = sentencepiece.SentencePieceProcessor(model_proto=path.read_bytes())
  return sp.get_piece_size(), sp.eos_id(), sp.bos_id() if sp.bos_id() >= 0 else None


def hf_to_orbax(hf_dir: epath.PathLike, out_dir: epath.PathLike, *,
                param_dtype: str | None = None, dtype: str | None = None, remat: bool = False,
                vocab: epath.PathLike | None = None, mesh: jax.sharding.Mesh | None = None,
                progress: bool = True) -> epath.Path:
  """Imports a Hugging Face checkpoint directory as a model checkpoint (`checkpoints.save`).

  Args:
    hf_dir: local Hugging Face directory (config.json, safetensors, tokenizer files).
    out_dir: the checkpoint directory to write (local or gs://).
    param_dtype, dtype, remat: see `model_config_from_hf`.
    vocab: the vocabulary file; default: HF_DIR's tokenizer.model, else its tokenizer.json.
    mesh: where the parameters are assembled; default: all local devices, FSDP.
    progress: show a progress bar.

  Returns:
    The checkpoint directory.
  """
  hf_dir = epath.Path(hf_dir)
  hf = json.loads((hf_dir / HF_CONFIG).read_text())
  cfg = model_config_from_hf(hf, param_dtype=param_dtype, dtype=dtype, remat=remat)
  vocab_path = epath.Path(vocab) if vocab else _vocab_file(hf_dir)
  if vocab_path is None:
    logging.warning("%s has no tokenizer.model or tokenizer.json: the checkpoint has no "
                    "vocabulary", hf_dir)
  else:
    size, _, _ = _vocab_ids(vocab_path)
    if size > cfg.vocab_size:
      raise ValueError(f"{vocab_path} has {size} tokens, more than the model's "
                       f"vocab_size={cfg.vocab_size}")
  params = load_hf_params(hf_dir, cfg, mesh, progress=progress)
  return checkpoints.save(out_dir, params, cfg, vocab_path=vocab_path)


# ---------------------------------------------------------------------------------------------
# Export


def orbax_to_hf(ckpt_dir: epath.PathLike, out_dir: epath.PathLike, *, dtype: str | None = None,
                max_shard_bytes: int = 5 * 2**30, mesh: jax.sharding.Mesh | None = None,
                progress: bool = True) -> epath.Path:
  """Exports a model checkpoint as a Hugging Face directory (config.json, safetensors, tokenizer).

  Tensors are fetched to the host one at a time and written one shard (at most
  `max_shard_bytes`, except a single larger tensor) at a time.

  Args:
    ckpt_dir: a model checkpoint directory.
    out_dir: the directory to write (local or gs://); must not hold files already.
    dtype: the tensors' dtype (e.g. "bfloat16"); default: the parameters'.
    max_shard_bytes: the size of each safetensors file.
    mesh: where the checkpoint is loaded; default: all local devices, FSDP.
    progress: show a progress bar.

  Returns:
    The output directory.
  """
  ckpt_dir, out_dir = epath.Path(ckpt_dir), epath.Path(out_dir)
  if out_dir.exists() and any(out_dir.iterdir()):
    raise FileExistsError(f"{out_dir} is not empty")
  cfg = checkpoints.load_config(ckpt_dir)
  dtype = dtype or cfg.param_dtype
  hf_config = hf_config_from_model_config(cfg, dtype=dtype)  # fails before the slow part
  mesh = mesh or partitioning.make_mesh((1, -1, 1), jax.local_devices())
  params, cfg = checkpoints.load(ckpt_dir, mesh)
  out_dir.mkdir(parents=True, exist_ok=True)

  vocab_path = checkpoints.vocab_path(ckpt_dir)
  if vocab_path is not None:
    _, eos, bos = _vocab_ids(vocab_path)
    hf_config.update(eos_token_id=eos, bos_token_id=bos)
    is_json = hf_tokenizer.is_tokenizer_json(vocab_path)
    vocab_path.copy(out_dir / (checkpoints.HF_TOKENIZER_FILE if is_json else SENTENCEPIECE_FILE))
    sidecar = ckpt_dir / checkpoints.HF_TOKENIZER_CONFIG
    if sidecar.exists():
      sidecar.copy(out_dir / checkpoints.HF_TOKENIZER_CONFIG)

  # Plan the shards from the shapes, so that their names (-0000k-of-0000n) are known up front.
  item = np.dtype(jnp.dtype(dtype)).itemsize
  sizes = [(name, int(np.prod(_get(params, e.ours).shape[1 if e.layered else 0:])) * item)
           for e in tensors(cfg) for name in _names(e, cfg.num_layers)]
  shard_of, shard, used = {}, 0, 0
  for name, size in sizes:
    if used and used + size > max_shard_bytes:
      shard, used = shard + 1, 0
    shard_of[name], used = shard, used + size
  count = shard + 1
  file_name = (lambda k: "model.safetensors") if count == 1 else (
      lambda k: f"model-{k + 1:05d}-of-{count:05d}.safetensors")

  pending: dict[int, dict[str, np.ndarray]] = {}
  remaining = collections.Counter(shard_of.values())
  with tqdm.tqdm(total=len(sizes), unit="tensor", desc="export", disable=not progress) as bar:
    for name, x in hf_tensors(params, cfg, dtype):
      k = shard_of[name]
      pending.setdefault(k, {})[name] = x
      remaining[k] -= 1
      if not remaining[k]:  # a shard is complete: write it and let it go
        file_io.write_bytes_atomic(out_dir / file_name(k), safetensors.numpy.save(
            pending.pop(k), metadata={"format": "pt"}))
      bar.update()
  if count > 1:
    index = {"metadata": {"total_size": sum(size for _, size in sizes)},
             "weight_map": {name: file_name(k) for name, k in shard_of.items()}}
    file_io.write_text_atomic(out_dir / SAFETENSORS_INDEX, json.dumps(index, indent=2))
  file_io.write_text_atomic(out_dir / HF_CONFIG, json.dumps(hf_config, indent=2))
  return out_dir


# ---------------------------------------------------------------------------------------------
# Command line


def _parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m restem_jax.convert",
                                   description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("hf-to-orbax", help="Hugging Face directory -> model checkpoint")
  imp.add_argument("hf_dir")
  imp.add_argument("out_dir")
  imp.add_argument("--param_dtype", default=None,
                   help="parameters' dtype (default: bfloat16 for bfloat16 weights, else float32)")
  imp.add_argument("--dtype", default=None,
                   help="compute dtype (default: float32 for float32 weights, else bfloat16)")
  imp.add_argument("--remat", action="store_true",
                   help="fine-tune with rematerialised blocks (what an 8B model needs at 2048 "
                   "tokens a row on 16 GiB chips; check with python -m restem_jax.aot)")
  imp.add_argument("--vocab", default=None,
                   help="vocabulary file (default: tokenizer.model, else tokenizer.json)")
  exp = sub.add_parser("orbax-to-hf", help="model checkpoint -> Hugging Face directory")
  exp.add_argument("ckpt_dir")
  exp.add_argument("out_dir")
  exp.add_argument("--dtype", default=None, help="tensors' dtype (default: the parameters')")
  exp.add_argument("--max_shard_gb", type=float, default=5.0, help="size of each shard file")
  for p in (imp, exp):
    p.add_argument("--mesh", default="1,-1,1", help="mesh shape DATA,FSDP,MODEL over the "
                   "local devices")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  """The command line: exit status 0, 2 for bad input (one line), 130 for Ctrl-C."""
  argv = list(sys.argv[1:] if argv is None else argv)
  quiet = cli.quiet_native_stderr(["convert", *argv])
  status = cli.run_main(lambda: _main(cli.strip_debug(argv)), ["convert", *argv],
                        on_exit=quiet.close if quiet else None)
  if status:
    raise SystemExit(status)


def _main(argv: Sequence[str]) -> None:
  args = _parse(argv)
  cli.setup_logging(stderr_filter=None)
  if args.command == "hf-to-orbax":
    if not epath.Path(args.hf_dir).is_dir():
      raise cli.UserError(f"HF_DIR: {args.hf_dir} is not a directory; give a local Hugging Face "
                          f"model directory (config.json, *.safetensors, the tokenizer)")
  else:
    cli.check_checkpoint(args.ckpt_dir, "CKPT_DIR")
  mesh = partitioning.make_mesh([int(x) for x in args.mesh.split(",")], jax.local_devices())
  try:
    if args.command == "hf-to-orbax":
      out = hf_to_orbax(args.hf_dir, args.out_dir, param_dtype=args.param_dtype,
                        dtype=args.dtype, remat=args.remat, vocab=args.vocab, mesh=mesh,
                        progress=not args.no_progress)
    else:
      out = orbax_to_hf(args.ckpt_dir, args.out_dir, dtype=args.dtype,
                        max_shard_bytes=int(args.max_shard_gb * 2**30), mesh=mesh,
                        progress=not args.no_progress)
  except ValueError as e:  # unsupported architecture or config field: the message names it
    if isinstance(e, cli.UserError):
      raise
    raise cli.UserError(str(e)) from e
  print(out)


if __name__ == "__main__":
  main()
