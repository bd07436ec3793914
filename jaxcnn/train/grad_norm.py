"""The gradient norm the train step reports (``metrics["grad_norm"]``), in few kernels.

``optax.tree.norm`` reduces every leaf on its own: one squaring and one reduction per
parameter array, each a kernel XLA:CPU compiles and launches. MobileNetV2 has 158
parameter arrays, so its step held ~350 kernels for this one scalar (1,245 with them,
892 without), most of them summing a bias or a BatchNorm scale of a few hundred numbers.
Here the small leaves are concatenated and reduced as one array, and the large ones stay
one reduction each: concatenating them too would copy every weight gradient and wait
for the last of them (fmnist_cnn's step was ~3% slower that way, with its 401,408-weight
fc1 in the copy). Measured on a 2-core AMD EPYC (docs/performance.md, "The gradient norm
in fewer kernels"): mobilenet_v2's first step built in 4.3-4.6 s against 5.1-5.5 with
the CLI's malloc policy; fmnist_cnn's step was 1.05x faster (6 interleaved process
pairs), lenet5's and cifar_resnet18's level.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Leaves with fewer elements than this (256 KiB of float32) are concatenated; the rest
# are reduced one by one.
CONCAT_BELOW = 65536


def global_norm(tree) -> jax.Array:
    """The L2 norm of all of ``tree``'s leaves taken together: ``optax.tree.norm(tree)``'s
    value to rounding (the sum is grouped differently). 0.0 for a tree without leaves."""
    leaves = jax.tree.leaves(tree)
    small = [jnp.ravel(leaf) for leaf in leaves if leaf.size < CONCAT_BELOW]
    squares = [jnp.sum(jnp.square(leaf)) for leaf in leaves if leaf.size >= CONCAT_BELOW]
    if small:
        squares.append(jnp.sum(jnp.square(jnp.concatenate(small))))
    if not squares:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(sum(squares[1:], squares[0]))
