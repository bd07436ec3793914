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


def softmax_input(x, axis: int, dtype, op: str):
    """The array softmax/log_softmax normalise: ``x`` cast to ``dtype`` (when given), a 0-d
    input viewed as one element (``axis`` must then be 0 or -1); returns (x, axis, 0-d?)."""
    x = jnp.asarray(x)
    if dtype is not None:
        if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
            raise ValueError(f"{op}: dtype must be a floating dtype, got {jnp.dtype(dtype)}")
        x = x.astype(dtype)
    if x.ndim == 0:
        if axis not in (0, -1):
            raise ValueError(f"{op}: axis must be 0 or -1 for a 0-d input, got {axis}")
        return x.reshape(1), 0, True
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for an input of rank {x.ndim}")
    return x, axis, False


def softmax(x, axis: int = -1, dtype=None):
    """``exp(x) / sum(exp(x))`` along ``axis``; ``dtype`` casts the input first (torch's
    ``dtype=``); a 0-d input gives 1 (torch)."""
    x, axis, scalar = softmax_input(x, axis, dtype, "softmax")
    y = jax.nn.softmax(x, axis=axis)
    return y[0] if scalar else y


def log_softmax(x, axis: int = -1, dtype=None):
    """``x - logsumexp(x)`` along ``axis``; ``dtype`` and 0-d inputs as :func:`softmax`."""
    x, axis, scalar = softmax_input(x, axis, dtype, "log_softmax")
    y = jax.nn.log_softmax(x, axis=axis)
    return y[0] if scalar else y


ACTIVATIONS = {f.__name__: f for f in (identity, relu, relu6, leaky_relu, sigmoid, tanh, elu, selu, gelu, silu,
                                       softplus, hardsigmoid, hardswish, softmax, log_softmax)}


def get_activation(name: str):
    """Look an activation up by name; a clear error lists the valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None
