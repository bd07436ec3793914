"""Backward pass of the non-zero padding modes: fold the gradient of a padded array
back onto the array it was padded from.

Every padded position is a copy of one input position, so its gradient is added to
that position: ``reflect`` mirrors the edges (without the edge itself), ``replicate``
piles the whole margin onto the edge element, ``circular`` wraps it around. Written
with slicing, ``jnp.flip``, sums and ``lax.pad`` only. Axes are folded one at a time:
the forward pad is a composition of per-axis pads, so its transpose is too (corners
fold first along one axis, then along the other).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..ops.layout import spatial_axes


def _place(part, axis: int, lo: int, hi: int):
    """Zero-pad ``part`` by (lo, hi) along ``axis`` (lax.pad, no interior)."""
    cfg = [(0, 0, 0)] * part.ndim
    cfg[axis] = (lo, hi, 0)
    return lax.pad(part, jnp.zeros((), part.dtype), cfg)


def _take(g, axis: int, start: int, stop: int):
    index = [slice(None)] * g.ndim
    index[axis] = slice(start, stop)
    return g[tuple(index)]


def fold_axis(g, axis: int, lo: int, hi: int, mode: str):
    """Transpose of padding one axis by ``(lo, hi)`` in ``mode``: returns the unpadded grad."""
    size = g.shape[axis] - lo - hi
    out = _take(g, axis, lo, lo + size)
    if mode in ("zeros", "constant") or (lo == 0 and hi == 0):
        return out
    left = _take(g, axis, 0, lo)
    right = _take(g, axis, lo + size, lo + size + hi)
    if mode == "reflect":
        # padded index j < lo copies x[lo - j]; high index lo+size+t copies x[size-2-t]
        if lo:
            out = out + _place(jnp.flip(left, axis), axis, 1, size - 1 - lo)
        if hi:
            out = out + _place(jnp.flip(right, axis), axis, size - 1 - hi, 1)
    elif mode == "replicate":
        if lo:
            out = out + _place(jnp.sum(left, axis=axis, keepdims=True), axis, 0, size - 1)
        if hi:
            out = out + _place(jnp.sum(right, axis=axis, keepdims=True), axis, size - 1, 0)
    elif mode == "circular":
        # padded index j < lo copies x[size - lo + j]; high index lo+size+t copies x[t]
        if lo:
            out = out + _place(left, axis, size - lo, 0)
        if hi:
            out = out + _place(right, axis, 0, size - hi)
    else:
        raise ValueError(f"fold_padding: unknown padding mode {mode!r}")
    return out


def fold_padding(g, pads, mode: str, layout: str = "NHWC"):
    """Gradient w.r.t. ``x`` of ``pad_spatial(x, pads, mode, layout)`` given its output grad ``g``."""
    for axis, (lo, hi) in zip(spatial_axes(g.ndim, layout), pads):
        g = fold_axis(g, axis, int(lo), int(hi), mode)
    return g
