"""ReST^EM self-training (Singh et al., 2023) in JAX/Flax."""

from restem_jax import host_memory

__version__ = "0.1.0"

# Before JAX starts its CPU threads: on the CPU, a step's freed buffers serve the next step
# instead of going back to the kernel (see host_memory).
host_memory.configure()
