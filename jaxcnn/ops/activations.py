"""Element-wise activations with torch.nn.functional's defaults (e.g. exact-erf GELU,
softplus with beta/threshold) so parity tests need no adjustments."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def identity(x):
    return x


def relu(x):
    # jax.nn.relu: derivative 0 at 0 (torch); jnp.maximum would split the tie (0.5).
    return jax.nn.relu(x)


def relu6(x):
    # jax.nn.relu6: derivative 0 at 0 and 6 (torch's hardtanh rule); jnp.clip gives 0.5.
    return jax.nn.relu6(x)


def leaky_relu(x, negative_slope: float = 0.01):
    return jnp.where(x > 0, x, negative_slope * x)  # torch: slope at 0


def sigmoid(x):
    return jax.nn.sigmoid(x)


def tanh(x):
    return jnp.tanh(x)


def elu(x, alpha: float = 1.0):
    # where, not minimum: the derivative at 0 is alpha (torch), not alpha/2.
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.where(x > 0, 0.0, x)))


def selu(x):
    return jax.nn.selu(x)


def gelu(x, approximate: str = "none"):
    """torch default: the exact erf form; ``approximate="tanh"`` for the tanh form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def silu(x):
    return jax.nn.silu(x)


def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold (torch)."""
    bx = beta * x
    return jnp.where(bx > threshold, x, jnp.logaddexp(bx, 0.0) / beta)


def hardsigmoid(x):
    return relu6(x + 3.0) / 6.0


def hardswish(x):
    return x * relu6(x + 3.0) / 6.0


def softmax(x, axis: int = -1):
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x, axis: int = -1):
    return jax.nn.log_softmax(x, axis=axis)


ACTIVATIONS = {f.__name__: f for f in (identity, relu, relu6, leaky_relu, sigmoid, tanh, elu, selu, gelu, silu,
                                       softplus, hardsigmoid, hardswish, softmax, log_softmax)}


def get_activation(name: str):
    """Look an activation up by name; a clear error lists the valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None
