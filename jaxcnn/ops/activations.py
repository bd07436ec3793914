"""Element-wise activations with torch.nn.functional's defaults (e.g. exact-erf GELU,
softplus with beta/threshold) so parity tests need no adjustments."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def identity(x):
    """``x`` unchanged."""
    return x


def relu(x):
    """``max(x, 0)`` elementwise; derivative 0 at 0 (torch's)."""
    # jax.nn.relu: derivative 0 at 0 (torch); jnp.maximum would split the tie (0.5).
    return jax.nn.relu(x)


def relu6(x):
    """``min(max(x, 0), 6)`` elementwise; derivative 0 at 0 and 6 (torch's)."""
    # jax.nn.relu6: derivative 0 at 0 and 6 (torch's hardtanh rule); jnp.clip gives 0.5.
    return jax.nn.relu6(x)


def leaky_relu(x, negative_slope: float = 0.01):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (torch's slope at 0)."""
    return jnp.where(x > 0, x, negative_slope * x)  # torch: slope at 0


def sigmoid(x):
    """``1 / (1 + exp(-x))`` elementwise."""
    return jax.nn.sigmoid(x)


def tanh(x):
    """``tanh(x)`` elementwise."""
    return jnp.tanh(x)


def elu(x, alpha: float = 1.0):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``; derivative ``alpha`` at 0 (torch's)."""
    # where, not minimum: the derivative at 0 is alpha (torch), not alpha/2.
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.where(x > 0, 0.0, x)))


def selu(x):
    """SELU (Klambauer et al. 2017) with torch's constants, elementwise."""
    return jax.nn.selu(x)


def gelu(x, approximate: str = "none"):
    """torch default: the exact erf form; ``approximate="tanh"`` for the tanh form."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def silu(x):
    """``x * sigmoid(x)`` (SiLU / swish) elementwise."""
    return jax.nn.silu(x)


def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold (torch)."""
    bx = beta * x
    return jnp.where(bx > threshold, x, jnp.logaddexp(bx, 0.0) / beta)


def hardsigmoid(x):
    """``relu6(x + 3) / 6`` elementwise (torch's Hardsigmoid)."""
    return relu6(x + 3.0) / 6.0


def hardswish(x):
    """``x * relu6(x + 3) / 6`` elementwise (torch's Hardswish)."""
    return x * relu6(x + 3.0) / 6.0


def softmax(x, axis: int = -1):
    """Softmax over ``axis`` (default the last: class scores in NHWC logits)."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x, axis: int = -1):
    """Log-softmax over ``axis``, computed stably."""
    return jax.nn.log_softmax(x, axis=axis)


ACTIVATIONS = {f.__name__: f for f in (identity, relu, relu6, leaky_relu, sigmoid, tanh, elu, selu, gelu, silu,
                                       softplus, hardsigmoid, hardswish, softmax, log_softmax)}


def get_activation(name: str):
    """Look an activation up by name; a clear error lists the valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None
