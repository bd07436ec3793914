"""Explicit backward passes of the activations: ``activation_backward(name, x, dy, **kw)``
returns ``dL/dx`` from the derivative written out by hand.

Conventions at the kinks follow the forward ops (torch's): relu/relu6/hardsigmoid have
derivative 0 at their corners, leaky_relu and elu take the negative-side slope at 0.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _erf_gelu_grad(x):
    cdf = 0.5 * (1.0 + lax.erf(x / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


def _tanh_gelu_grad(x):
    c = math.sqrt(2.0 / math.pi)
    u = c * (x + 0.044715 * x ** 3)
    t = jnp.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)


def _derivative(name, x, kw):
    one, zero = jnp.ones_like(x), jnp.zeros_like(x)
    if name == "identity":
        return one
    if name == "relu":
        return jnp.where(x > 0, one, zero)
    if name == "relu6":
        return jnp.where((x > 0) & (x < 6), one, zero)
    if name == "leaky_relu":
        return jnp.where(x > 0, one, kw.get("negative_slope", 0.01) * one)
    if name == "sigmoid":
        s = _sigmoid(x)
        return s * (1.0 - s)
    if name == "tanh":
        t = jnp.tanh(x)
        return 1.0 - t * t
    if name == "elu":
        return jnp.where(x > 0, one, kw.get("alpha", 1.0) * jnp.exp(jnp.minimum(x, 0.0)))
    if name == "selu":
        return _SELU_SCALE * jnp.where(x > 0, one, _SELU_ALPHA * jnp.exp(jnp.minimum(x, 0.0)))
    if name == "gelu":
        approximate = kw.get("approximate", "none")
        return _tanh_gelu_grad(x) if approximate == "tanh" else _erf_gelu_grad(x)
    if name == "silu":
        s = _sigmoid(x)
        return s * (1.0 + x * (1.0 - s))
    if name == "softplus":
        beta, threshold = kw.get("beta", 1.0), kw.get("threshold", 20.0)
        bx = beta * x
        return jnp.where(bx > threshold, one, _sigmoid(bx))
    if name == "hardsigmoid":
        return jnp.where((x > -3) & (x < 3), one / 6.0, zero)
    if name == "hardswish":
        # d/dx [x relu6(x+3)/6] = relu6(x+3)/6 + x/6 * 1[-3 < x < 3]
        return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0 + jnp.where((x > -3) & (x < 3), x / 6.0, zero)
    raise ValueError(f"activation_backward: no elementwise derivative for {name!r}")


ELEMENTWISE = ("identity", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "elu", "selu", "gelu", "silu",
               "softplus", "hardsigmoid", "hardswish")


def activation_backward(name: str, x, dy, **kwargs):
    """dL/dx of activation ``name`` at ``x`` (its forward keyword arguments in ``kwargs``)."""
    x = jnp.asarray(x)
    if name == "softmax":
        return softmax_backward(x, dy, **kwargs)
    if name == "log_softmax":
        return log_softmax_backward(x, dy, **kwargs)
    dy = jnp.asarray(dy).astype(x.dtype)
    return dy * _derivative(name, x, kwargs)


def _softmax(x, axis):
    e = jnp.exp(x - jnp.max(x, axis=axis, keepdims=True))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def _softmax_args(x, dy, axis, dtype):
    """Cast to the forward's ``dtype`` and view a 0-d input as one element (the forward's rule)."""
    if dtype is not None:
        x = x.astype(dtype)
    dy = jnp.asarray(dy).astype(x.dtype)
    if x.ndim == 0:
        return x.reshape(1), dy.reshape(1), 0, True
    return x, dy, axis, False


def softmax_backward(x, dy, axis: int = -1, dtype=None):
    """``p * (dy - sum(dy * p))`` with ``p = softmax(x)``: the Jacobian ``diag(p) - p p^T``
    (in ``dtype`` when the forward cast to it; the caller casts back to x's dtype)."""
    x, dy, axis, scalar = _softmax_args(x, dy, axis, dtype)
    p = _softmax(x, axis)
    g = p * (dy - jnp.sum(dy * p, axis=axis, keepdims=True))
    return g[0] if scalar else g


def log_softmax_backward(x, dy, axis: int = -1, dtype=None):
    """``dy - softmax(x) * sum(dy)``."""
    x, dy, axis, scalar = _softmax_args(x, dy, axis, dtype)
    g = dy - _softmax(x, axis) * jnp.sum(dy, axis=axis, keepdims=True)
    return g[0] if scalar else g
