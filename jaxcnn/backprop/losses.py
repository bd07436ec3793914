"""Explicit backward passes of the losses (w.r.t. the predictions only)."""
from __future__ import annotations

import jax.numpy as jnp

from ..ops.nn import class_axis


def cross_entropy_backward(logits, labels, dloss, *, weight=None, ignore_index: int = -100,
                           label_smoothing: float = 0.0, reduction: str = "mean", layout: str = "NHWC"):
    """Explicit gradients of ``cross_entropy`` (``e`` the label smoothing, ``w`` the class
    weights, ``p = softmax(z)``, ``C`` classes).

    Index targets ``y`` -- returns ``dlogits``: per row not ignored,
    ``dz_j = p_j ((1-e) w[y] + (e/C) sum_c w_c) - (1-e) w[y] 1[j = y] - (e/C) w_j``, 0 for
    an ignored row; "mean" divides by ``sum w[y]`` over the rows not ignored.
    Probability targets ``t`` (``t' = (1-e) t + e/C``) -- returns ``(dlogits, dlabels)``:
    ``dz_j = p_j sum_c w_c t'_c - w_j t'_j`` and ``dt_c = -(1-e) w_c log p_c``; "mean"
    divides by the row count. Times ``dloss`` (per row for "none").
    """
    logits = jnp.asarray(logits)
    ca = class_axis(logits.ndim, layout)
    z = jnp.moveaxis(logits, ca, -1)
    c = z.shape[-1]
    shifted = z - jnp.max(z, axis=-1, keepdims=True)
    e_z = jnp.exp(shifted)
    total = jnp.sum(e_z, axis=-1, keepdims=True)
    p = e_z / total
    w = jnp.ones((c,), z.dtype) if weight is None else jnp.asarray(weight, z.dtype)
    g = jnp.asarray(dloss, z.dtype)
    eps = label_smoothing
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.floating):
        t = jnp.moveaxis(labels, ca, -1).astype(z.dtype)
        ts = (1.0 - eps) * t + eps / c if eps else t
        wt = ts * w
        dz = p * jnp.sum(wt, axis=-1, keepdims=True) - wt
        dt = -(1.0 - eps) * w * (shifted - jnp.log(total))
        if reduction == "mean":
            g = g / (logits.size // c if c else 0)
        g = g[..., None] if reduction == "none" else g
        return jnp.moveaxis(dz * g, -1, ca), jnp.moveaxis(dt * g, -1, ca)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    onehot = (jnp.arange(c) == safe[..., None]).astype(z.dtype)
    w_row = jnp.where(valid, jnp.sum(onehot * w, axis=-1), 0.0)[..., None]
    dz = p * ((1.0 - eps) * w_row + (eps / c) * jnp.sum(w)) - (1.0 - eps) * w_row * onehot - (eps / c) * w
    dz = jnp.where(valid[..., None], dz, 0.0)
    if reduction == "mean":
        total = jnp.sum(w_row)
        g = g / jnp.where(total == 0, 1.0, total)     # all rows ignored: gradient 0 (torch)
    g = g[..., None] if reduction == "none" else g
    return jnp.moveaxis(dz * g, -1, ca)


def mse_loss_backward(y, target, dloss, *, reduction: str = "mean"):
    """dL/dy of ``mse_loss``: ``2 (y - target) * dloss`` (divided by the count for "mean")."""
    y = jnp.asarray(y)
    g = 2.0 * (y - jnp.asarray(target, y.dtype)) * jnp.asarray(dloss, y.dtype)
    return g / y.size if reduction == "mean" else g
