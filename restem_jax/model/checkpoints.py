"""Model checkpoint directories: parameters (Orbax), the model config, and the vocabulary.

A model checkpoint directory is self-describing, so `restem_jax.sample` and the loop can load it
with nothing else:

  DIR/model_config.json   the `ModelConfig` fields
  DIR/vocab.model         the vocabulary, when the checkpoint has one: a SentencePiece model,
  or DIR/tokenizer.json   or a Hugging Face tokenizer; an imported one keeps its Hugging Face
                          tokenizer_config.json beside it (the special tokens' roles)
  DIR/params/             Orbax StandardCheckpointer tree {"params": ...}
  DIR/COMPLETE            written last: a directory without it is an interrupted save

Training state checkpoints (optimizer state, step, data position) are the trainer's business;
this module is for the models that runs start from and produce.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import orbax.checkpoint as ocp
from etils import epath

from restem_jax.data import hf_tokenizer
from restem_jax import file_io
from restem_jax import model as model_lib
from restem_jax.model import partitioning

CONFIG_FILE = "model_config.json"
VOCAB_FILE = "vocab.model"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG = hf_tokenizer.CONFIG_FILE
PARAMS_DIR = "params"
COMPLETE_FILE = "COMPLETE"


def absolute(path: epath.PathLike) -> epath.Path:
  """`path` made absolute if it is a local relative path (Orbax refuses relative paths)."""
  path = epath.Path(path)
  return path if "://" in str(path) else epath.Path(os.path.abspath(path))


def is_complete(directory: epath.PathLike) -> bool:
  return (epath.Path(directory) / COMPLETE_FILE).exists()


def save(directory: epath.PathLike, params, config: model_lib.ModelConfig,
         vocab_path: epath.PathLike | None = None) -> epath.Path:
  """Saves a model checkpoint directory (see the module docstring). Overwrites an incomplete one.

  Args:
    directory: where to write (local or gs://).
    params: the parameter pytree (the contents of the Flax "params" collection).
    config: the architecture.
    vocab_path: a SentencePiece model or a tokenizer.json to carry along, if any (with the
      Hugging Face tokenizer_config.json beside it, if there is one).

  Returns:
    The directory.
  """
  directory = absolute(directory)
  if is_complete(directory):
    raise FileExistsError(f"{directory} already holds a complete checkpoint")
  # Several hosts: process 0 alone prepares the directory and marks it complete; every host
  # takes part in Orbax's save, and none returns before the marker is there (a host that
  # loads right after saving must find a complete checkpoint).
  if jax.process_index() == 0:
    if directory.exists():
      directory.rmtree()
    directory.mkdir(parents=True)
    file_io.write_text_atomic(directory / CONFIG_FILE, json.dumps(config.to_dict(), indent=2))
    if vocab_path is not None:
      vocab_path = epath.Path(vocab_path)
      name = HF_TOKENIZER_FILE if hf_tokenizer.is_tokenizer_json(vocab_path) else VOCAB_FILE
      vocab_path.copy(directory / name)
      if (vocab_path.parent / HF_TOKENIZER_CONFIG).exists():  # the special tokens' roles
        (vocab_path.parent / HF_TOKENIZER_CONFIG).copy(directory / HF_TOKENIZER_CONFIG)
  partitioning.sync_hosts(f"checkpoint_prepared:{directory}")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / PARAMS_DIR, {"params": params})
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    file_io.write_text_atomic(directory / COMPLETE_FILE, "")
  partitioning.sync_hosts(f"checkpoint_complete:{directory}")
  return directory


def load_config(directory: epath.PathLike) -> model_lib.ModelConfig:
  path = epath.Path(directory) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{directory} is not a model checkpoint: {CONFIG_FILE} is missing")
  return model_lib.ModelConfig.from_dict(json.loads(path.read_text()))


def vocab_path(directory: epath.PathLike) -> epath.Path | None:
  """The checkpoint's vocabulary file (SentencePiece or tokenizer.json), or None."""
  for name in (VOCAB_FILE, HF_TOKENIZER_FILE):
    path = epath.Path(directory) / name
    if path.exists():
      return path
  return None


def load(directory: epath.PathLike, mesh: jax.sharding.Mesh | None = None,
         rules: partitioning.Rules = partitioning.DEFAULT_RULES,
         config: model_lib.ModelConfig | None = None):
  """Restores parameters straight into their shardings on `mesh` (one device if None).

  Args:
    directory: a complete model checkpoint directory.
    mesh: where to place the parameters; each device reads only its own shard.
    rules: logical-axis rules for the shardings.
    config: overrides the saved config (e.g. a different compute dtype); shapes must match.

  Returns:
    (params, model config).
  """
  directory = absolute(directory)
  if not is_complete(directory):
    raise FileNotFoundError(f"{directory} is not a complete model checkpoint "
                            f"({COMPLETE_FILE} is missing: interrupted save or wrong path)")
  config = config or load_config(directory)
  mesh = mesh or partitioning.make_mesh((1, 1, 1), jax.devices()[:1])
  abstract, shardings = partitioning.abstract_and_shardings(
      lambda key: model_lib.Decoder(config).init(key, jax.numpy.zeros((1, 1), "int32")),
      mesh, rules, jax.random.key(0))
  target = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      nn.unbox(abstract), shardings)
  restored = ocp.StandardCheckpointer().restore(directory / PARAMS_DIR, target)
  return restored["params"], config
