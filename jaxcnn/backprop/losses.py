"""Explicit backward passes of the losses (w.r.t. the predictions only)."""
from __future__ import annotations

import jax.numpy as jnp


def cross_entropy_backward(logits, labels, dloss, *, label_smoothing: float = 0.0, reduction: str = "mean"):
    """dL/dlogits of ``cross_entropy``: ``(softmax(z) - q) * dloss``, ``q`` the smoothed
    one-hot target ``(1-e) onehot + e/C``; divided by the row count for "mean"."""
    logits = jnp.asarray(logits)
    c = logits.shape[-1]
    e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    onehot = (jnp.arange(c) == jnp.asarray(labels)[..., None]).astype(logits.dtype)
    q = (1.0 - label_smoothing) * onehot + label_smoothing / c
    g = jnp.asarray(dloss, logits.dtype)
    if reduction == "mean":
        g = g / max(int(logits.size // c), 1)
    if reduction == "none":
        g = g[..., None]
    return (p - q) * g


def mse_loss_backward(y, target, dloss, *, reduction: str = "mean"):
    """dL/dy of ``mse_loss``: ``2 (y - target) * dloss`` (divided by the count for "mean")."""
    y = jnp.asarray(y)
    g = 2.0 * (y - jnp.asarray(target, y.dtype)) * jnp.asarray(dloss, y.dtype)
    return g / y.size if reduction == "mean" else g
