"""Explicit backward pass of ``batch_norm`` (normalised value ``xh = (x - mu) / sigma``,
``y = gamma * xh + beta``).

Training (batch statistics, biased variance, ``m`` values per channel):
``dx = gamma/sigma * (dy - mean(dy) - xh * mean(dy * xh))``, the means over the
batch and spatial axes -- and over the mapped ``axis_name`` too, since the forward
normalised with the global batch's statistics. Evaluation (running statistics are
constants): ``dx = gamma * dy / sigma``. In both, ``dgamma = sum(dy * xh)`` and
``dbeta = sum(dy)`` (local sums: the train step averages parameter grads itself).
The running statistics are state, not differentiated.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..ops.layout import channel_axis


def batch_norm_backward(x, running_mean, running_var, weight=None, bias=None, dy=None, *, train: bool = False,
                        momentum: float = 0.1, eps: float = 1e-5, axis_name=None, layout: str = "NHWC"):
    """Returns ``(dx, dweight, dbias)`` (None for an absent weight/bias) for output cotangent ``dy``."""
    x = jnp.asarray(x)
    dy = jnp.asarray(dy).astype(x.dtype)
    ch = channel_axis(x.ndim, layout)
    if x.size == 0:     # the forward's no-op on an empty batch
        zeros = jnp.zeros((x.shape[ch],), x.dtype)
        return dy, (None if weight is None else zeros), (None if bias is None else zeros)
    axes = tuple(a for a in range(x.ndim) if a != ch)
    shape = [1] * x.ndim
    shape[ch] = x.shape[ch]

    def mean(v):
        m = jnp.mean(v, axis=axes)
        return m if axis_name is None else lax.pmean(m, axis_name)

    if train:
        mu = mean(x)
        var = jnp.maximum(mean(x * x) - mu * mu, 0.0)   # the forward's one-pass biased variance
    else:
        mu, var = jnp.asarray(running_mean, x.dtype), jnp.asarray(running_var, x.dtype)
    inv = lax.rsqrt(var + eps).reshape(shape)
    xh = (x - mu.reshape(shape)) * inv
    gamma = jnp.ones(shape, x.dtype) if weight is None else jnp.asarray(weight, x.dtype).reshape(shape)
    if train:
        g_mean = mean(dy).reshape(shape)
        gx_mean = mean(dy * xh).reshape(shape)
        dx = gamma * inv * (dy - g_mean - xh * gx_mean)
    else:
        dx = gamma * inv * dy
    dweight = None if weight is None else jnp.sum(dy * xh, axis=axes)
    dbias = None if bias is None else jnp.sum(dy, axis=axes)
    return dx, dweight, dbias
