"""``jax.random``'s normal and uniform draws, bit for bit, compiled faster.

JAX numbers threefry's counters by the flat index of the result, so a draw of ``(n,)``
reshaped to ``shape`` holds exactly the values of a draw of ``shape`` (tested). XLA:CPU
compiles the hash over a 4-D iota 4-6x slower than over a 1-D one (0.8-1.0 s against
0.15-0.25 s for a conv kernel's shape, jaxlib 0.10.2 and 0.12), and an eagerly run draw
compiles once per distinct shape: a model's initialisation compiles one per parameter
shape. Every N-D draw in jaxcnn goes through here.

:func:`bits` is ``jax.random.bits``' 32-bit words, bit for bit, with the threefry hash
written out as one fused elementwise program (dropout's masks).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def normal(key, shape, **kwargs):
    """``jax.random.normal(key, shape, **kwargs)`` (``dtype``), drawn flat and reshaped."""
    return _flat(jax.random.normal, key, shape, kwargs)


def uniform(key, shape, **kwargs):
    """``jax.random.uniform(key, shape, **kwargs)`` (``dtype``, ``minval``, ``maxval``),
    drawn flat and reshaped."""
    return _flat(jax.random.uniform, key, shape, kwargs)


def _flat(draw, key, shape, kwargs):
    shape = tuple(shape)
    return draw(key, (math.prod(shape),), **kwargs).reshape(shape)


# Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2,
# 3", SC 2011): the rotation constants of its even and odd groups of four rounds, and the
# key-schedule parity constant.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def bits(key, shape):
    """``jax.random.bits(key, shape, jnp.uint32)``, bit for bit, about 4-5x faster on CPU.

    On CPU, JAX lowers its threefry hash as a 5-trip loop whose every trip writes the
    whole state to memory (XLA:CPU fuses nothing across the loop): 1.8 ms for 401,408
    words here. Written out as straight-line ``uint32`` arithmetic it is one fused
    elementwise pass (0.38 ms). Dropout masks are drawn here (a dropout's forward +
    gradient on (128, 14, 14, 32): 0.80 ms against 2.98; inside fmnist_cnn's whole step
    the change was not measurable, docs/performance.md). The values are JAX's: a threefry key, JAX's
    partitionable counters (``jax_threefry_partitionable``, on by default: element ``i``
    hashes the counter pair ``(i >> 32, i & 0xFFFFFFFF)`` and is the XOR of the two output
    words). Any other key implementation, the older counter scheme or a draw of 2**32
    words or more is handed to ``jax.random.bits`` itself."""
    shape = tuple(shape)
    size = math.prod(shape)
    words = _threefry_key_words(key)
    if words is None or not jax.config.jax_threefry_partitionable or size >= 2 ** 32:
        return jax.random.bits(key, shape, jnp.uint32)
    low = lax.iota(jnp.uint32, size)
    high, low = _threefry2x32(words[0], words[1], jnp.zeros_like(low), low)
    return (high ^ low).reshape(shape)


def _threefry_key_words(key):
    """A threefry key's two ``uint32`` words, else None (another implementation)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != "threefry2x32":
            return None
        key = jax.random.key_data(key)
    elif key.dtype != jnp.uint32 or key.shape != (2,) or jax.config.jax_default_prng_impl != "threefry2x32":
        return None
    return key[0], key[1]


def _rotate_left(x, distance: int):
    return (x << np.uint32(distance)) | (x >> np.uint32(32 - distance))


def _threefry2x32(key0, key1, x0, x1):
    """The Threefry-2x32 block function of the counter pair ``(x0, x1)`` under the key
    ``(key0, key1)``: five groups of four rounds, the key injected after each group."""
    schedule = (key0, key1, key0 ^ key1 ^ np.uint32(_PARITY))
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for group in range(5):
        for distance in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + schedule[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1
