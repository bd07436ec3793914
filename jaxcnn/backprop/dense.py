"""Explicit backward pass of ``dense`` (``y = x @ w + b``, ``w`` of shape (in, out)):
``dx = dy @ w^T``, ``dw = x^T @ dy`` summed over every leading axis, ``db = sum dy``."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def dense_backward(x, w, dy, b=None):
    """Returns ``(dx, dw, db)`` for output cotangent ``dy``; ``b`` is accepted and unused."""
    x, w, dy = jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy)
    dtype = jnp.result_type(x, w, dy)
    x, w, dy = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    dw = lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))
    db = jnp.sum(dy2, axis=0)
    return dx, dw, db
