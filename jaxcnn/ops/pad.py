"""Padding with torch.nn.functional.pad semantics.

Modes: ``constant`` (alias ``zeros``), ``reflect`` (mirror without repeating the edge),
``replicate`` (repeat the edge), ``circular`` (wrap around). Negative padding crops, as in
torch, in every mode: ``constant`` and ``circular`` cut the negative sides off first and
pad the positive sides from what remains (torch's order; ``circular`` wraps around the
cropped array); ``replicate`` and ``reflect`` follow torch's index rules on the original
axis, ``out[j] = x[clip(j - lo, 0, n - 1)]`` and ``x[mirror(j - lo)]``.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from .layout import spatial_axes

_NUMPY_MODE = {"constant": "constant", "zeros": "constant", "reflect": "reflect",
               "replicate": "edge", "circular": "wrap"}


def pad(x, pad: Sequence[int], mode: str = "constant", value: float = 0.0):
    """torch ``F.pad``: ``pad`` lists ``(left, right)`` pairs starting from the LAST axis.

    ``pad=(1, 1, 2, 0)`` pads the last axis by 1 on both sides and the second-to-last by
    2 before and 0 after.
    """
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise ValueError(f"pad: padding length must be even (pairs per axis), got {len(pad)}: {pad}")
    n = len(pad) // 2
    if n > x.ndim:
        raise ValueError(f"pad: {n} axes of padding given for an input of rank {x.ndim} (shape {x.shape})")
    pairs = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in reversed(range(n))]
    return pad_axes(x, pairs, mode=mode, value=value, op="pad")


def pad_axes(x, pairs, mode: str = "constant", value: float = 0.0, op: str = "pad"):
    """Pad every axis of ``x`` by the ``(lo, hi)`` pair at the same position in ``pairs``."""
    if mode not in _NUMPY_MODE:
        raise ValueError(f"{op}: padding mode must be one of {sorted(_NUMPY_MODE)}, got {mode!r}")
    x = jnp.asarray(x)
    np_mode = _NUMPY_MODE[mode]
    pairs = [(int(lo), int(hi)) for lo, hi in pairs]
    if np_mode in ("reflect", "edge") and any(lo < 0 or hi < 0 for lo, hi in pairs):
        # torch's index rules on the original axis: out[j] = x[r(j - lo)], r the mirror
        # (reflect, edge not repeated) or the clamp (replicate)
        for axis, (lo, hi) in enumerate(pairs):
            n = x.shape[axis]
            if (lo, hi) == (0, 0):
                continue
            k = np.arange(max(n + lo + hi, 0)) - lo
            if np_mode == "reflect":
                k = np.abs(k)
                k = np.where(k > n - 1, 2 * (n - 1) - k, k)
            else:
                k = np.clip(k, 0, n - 1)
            if n + lo + hi < 0 or (k.size and (k.min() < 0 or k.max() > n - 1)):
                raise ValueError(f"{op}: {mode} padding {(lo, hi)} does not fit the axis size {n} "
                                 f"(input shape {x.shape})")
            x = jnp.take(x, jnp.asarray(k, dtype=np.int32), axis=axis)
        return x
    crop = [(max(-lo, 0), max(-hi, 0)) for lo, hi in pairs]
    for axis, ((lo, hi), (c_lo, c_hi)) in enumerate(zip(pairs, crop)):
        if x.shape[axis] - c_lo - c_hi < 0:
            raise ValueError(f"{op}: negative padding {(lo, hi)} removes more than the axis size "
                             f"{x.shape[axis]} (input shape {x.shape})")
    if any(c != (0, 0) for c in crop):
        x = x[tuple(slice(lo, x.shape[i] - hi) for i, (lo, hi) in enumerate(crop))]
    pos = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
    if np_mode == "constant":
        if any(p != (0, 0) for p in pos):
            x = jnp.pad(x, pos, mode="constant", constant_values=value)
        return x
    for axis, (lo, hi) in enumerate(pos):
        size = x.shape[axis]
        if mode == "reflect" and (lo or hi) and (lo >= size or hi >= size):
            raise ValueError(f"{op}: reflect padding {(lo, hi)} must be smaller than the axis size {size} "
                             f"(input shape {x.shape})")
        if mode == "circular" and (lo > size or hi > size):
            raise ValueError(f"{op}: circular padding {(lo, hi)} must not exceed the axis size {size} "
                             f"(after cropping; input shape {x.shape})")
        if mode == "replicate" and size == 0 and (lo or hi):
            raise ValueError(f"{op}: cannot replicate-pad an empty axis (input shape {x.shape})")
    if all(p == (0, 0) for p in pos):
        return x
    return jnp.pad(x, pos, mode=np_mode)


def pad_spatial(x, pads, mode: str = "constant", layout: str = "NHWC", value: float = 0.0, op: str = "pad"):
    """Pad only the spatial axes of a batched array by per-dimension ``(lo, hi)`` pairs."""
    pairs = [(0, 0)] * x.ndim
    for axis, p in zip(spatial_axes(x.ndim, layout, op), pads):
        pairs[axis] = tuple(p)
    return pad_axes(x, pairs, mode=mode, value=value, op=op)
