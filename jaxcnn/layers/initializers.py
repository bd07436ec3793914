"""Weight initialisers. Defaults reproduce torch's layer defaults.

torch initialises Conv/Linear weights with ``kaiming_uniform_(a=sqrt(5))``: the gain
is ``sqrt(2/(1+a^2)) = sqrt(1/3)`` and the bound ``gain*sqrt(3/fan_in)``, i.e.
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; biases are ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
fan_in is computed as torch does from the torch-layout weight: conv ``C_in/g * prod(k)``,
transposed conv ``C_out/g * prod(k)`` (torch's weight.size(1)), linear ``in_features``.
An initialiser here is ``init(key, shape, fan_in, fan_out, dtype) -> array``.
Random initialisers draw through :mod:`jaxcnn.ops.random`: jax.random's values, bit
for bit, with a faster compile of each parameter shape's draw.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from ..ops.random import normal, uniform


def torch_default(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(key, shape, dtype=dtype, minval=-bound, maxval=bound)


torch_bias = torch_default


def kaiming_normal_fan_out(key, shape, fan_in, fan_out, dtype=jnp.float32):
    """N(0, 2/fan_out): torchvision's ResNet/MobileNet conv init (mode='fan_out', relu)."""
    return normal(key, shape, dtype=dtype) * math.sqrt(2.0 / fan_out)


def zeros(key, shape, fan_in=0, fan_out=0, dtype=jnp.float32):
    """An all-zero array of ``shape`` (``key`` and fans unused)."""
    return jnp.zeros(shape, dtype)


def ones(key, shape, fan_in=0, fan_out=0, dtype=jnp.float32):
    """An all-one array of ``shape`` (``key`` and fans unused)."""
    return jnp.ones(shape, dtype)


def constant(value):
    """An initialiser filling the array with ``value`` (hand-set networks)."""
    def init(key, shape, fan_in=0, fan_out=0, dtype=jnp.float32):
        return jnp.full(shape, value, dtype)
    return init


def array(value):
    """An initialiser returning exactly ``value`` (its shape must match)."""
    def init(key, shape, fan_in=0, fan_out=0, dtype=jnp.float32):
        v = jnp.asarray(value, dtype)
        if tuple(v.shape) != tuple(shape):
            raise ValueError(f"initialiser array has shape {tuple(v.shape)}, the layer needs {tuple(shape)}")
        return v
    return init
