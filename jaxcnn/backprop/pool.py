"""Explicit backward passes of pooling (the seeds' rule: average pooling sends ``1/Q``
of the gradient to each of the ``Q`` inputs of a window, max pooling sends all of it
to the window's arg-max).

Both are written tap by tap: a kernel tap ``t`` (an offset inside the window) reads the
strided slice ``x_padded[t*d :: s]``, one value per window, so its gradient is ``dy``
placed back on that strided grid -- ``lax.pad`` with ``interior = s - 1`` and low
padding ``t*d`` -- and the padding is cropped at the end. Max pooling keeps, per
window, the first tap whose value is strictly greater than every earlier one: torch's
"first maximum in window scan order" (row-major over the kernel).

The window geometry (torch's ceil_mode rule, the high padding, the average divisor, the
adaptive windows) comes from :mod:`jaxcnn.ops.windows`, the module the forward ops use,
so forward and backward cannot disagree on it.
"""
from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import ops
from ..ops.layout import channels_last
from ..ops.windows import Window, adaptive_geometry, adaptive_matrix, avg_divisor
from .resample import scatter_add_flat


def _taps(win):
    """Kernel offsets in window scan order (row-major), as (offsets, slice starts)."""
    for tap in itertools.product(*[range(k) for k in win.kernel]):
        yield tap, tuple(t * d for t, d in zip(tap, win.dilation))


def _tap_slice(xp, win, starts):
    start = win.full(starts, 0)
    limit = list(xp.shape)
    for a, st, o, s in zip(win.axes, starts, win.out, win.stride):
        limit[a] = st + (o - 1) * s + 1
    return lax.slice(xp, start, tuple(limit), win.full(win.stride, 1))


def _padded(win, value):
    cfg = [(0, 0, 0)] * win.x.ndim
    for a, (lo, hi) in zip(win.axes, win.pads):
        cfg[a] = (lo, hi, 0)
    return lax.pad(win.x, jnp.array(value, win.x.dtype), cfg)


def _place(g, win, starts, padded_shape):
    """Scatter one value per window back to tap position ``starts`` of each window."""
    cfg = [(0, 0, 0)] * g.ndim
    for a, st, o, s in zip(win.axes, starts, win.out, win.stride):
        span = st + (o - 1) * s + 1
        cfg[a] = (st, padded_shape[a] - span, s - 1)
    return lax.pad(g, jnp.zeros((), g.dtype), cfg)


def _padded_shape(win):
    shape = list(win.x.shape)
    for a, (lo, hi) in zip(win.axes, win.pads):
        shape[a] += lo + hi
    return shape


def _crop(gp, win):
    index = [slice(None)] * gp.ndim
    for a, (lo, _), n in zip(win.axes, win.pads, win.sizes):
        index[a] = slice(lo, lo + n)
    return gp[tuple(index)]


def _batched_dy(dy, win):
    dy = jnp.asarray(dy)
    return dy[None] if win.unbatched else dy


def max_pool_argmax_taps(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
                         layout="NHWC"):
    """Per window: (index of the winning tap in scan order, number of taps equal to the max).

    A count above 1 is a tie: max pooling is not differentiable there, and the
    convention (first maximum) decides which input gets the gradient.
    """
    win = Window(jnp.asarray(x), kernel_size, stride, padding, dilation, ceil_mode, layout, "max_pool_backward")
    xp = _padded(win, -jnp.inf)
    best = arg = ties = None
    for i, (_, starts) in enumerate(_taps(win)):
        v = _tap_slice(xp, win, starts)
        if best is None:
            best, arg, ties = v, jnp.zeros(v.shape, jnp.int32), jnp.ones(v.shape, jnp.int32)
            continue
        # strictly greater keeps the first maximum; a NaN wins over numbers (torch propagates it)
        take = (v > best) | (jnp.isnan(v) & ~jnp.isnan(best))
        ties = jnp.where(take, 1, ties + (v == best).astype(jnp.int32))
        best = jnp.where(take, v, best)
        arg = jnp.where(take, i, arg)
    return win, arg, ties


def max_pool_ties(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, layout="NHWC"):
    """Number of windows whose maximum is attained more than once (non-differentiable points)."""
    _, _, ties = max_pool_argmax_taps(x, kernel_size, stride, padding, dilation, ceil_mode, layout=layout)
    return jnp.sum(ties > 1)


def max_pool_backward(x, dy, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                      return_indices: bool = False, *, layout: str = "NHWC"):
    """dL/dx of ``max_pool``: each window's ``dy`` goes entirely to its first arg-max.

    ``return_indices`` is accepted (the forward's argument) and ignored: indices carry
    no gradient.
    """
    win, arg, _ = max_pool_argmax_taps(x, kernel_size, stride, padding, dilation, ceil_mode, layout=layout)
    dy = _batched_dy(dy, win).astype(win.x.dtype)
    padded_shape = _padded_shape(win)
    gp = jnp.zeros(padded_shape, dy.dtype)
    for i, (_, starts) in enumerate(_taps(win)):
        gp = gp + _place(jnp.where(arg == i, dy, 0), win, starts, padded_shape)
    return win.finish(_crop(gp, win))


def avg_pool_backward(x, dy, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                      count_include_pad: bool = True, divisor_override=None, *, layout: str = "NHWC"):
    """dL/dx of ``avg_pool``: each input of a window receives ``dy / Q``, ``Q`` the window's
    divisor (``divisor_override``, else the count with or without the zero padding)."""
    win = Window(jnp.asarray(x), kernel_size, stride, padding, 1, ceil_mode, layout, "avg_pool_backward")
    dy = _batched_dy(dy, win).astype(win.x.dtype)
    if divisor_override is not None:
        scaled = dy / divisor_override
    else:
        scaled = dy / jnp.asarray(avg_divisor(win, count_include_pad), dy.dtype)
    padded_shape = _padded_shape(win)
    gp = jnp.zeros(padded_shape, dy.dtype)
    for _, starts in _taps(win):
        gp = gp + _place(scaled, win, starts, padded_shape)
    return win.finish(_crop(gp, win))


def adaptive_avg_pool_backward(x, dy, output_size, *, layout: str = "NHWC"):
    """dL/dx of ``adaptive_avg_pool``: per axis the transpose of the (out x in) averaging
    matrix (row i = 1/len on torch's window [floor(i n/o), ceil((i+1) n/o)))."""
    xb, unbatched, axes, sizes, outs = adaptive_geometry(jnp.asarray(x), output_size, layout,
                                                         "adaptive_avg_pool_backward")
    g = jnp.asarray(dy).astype(xb.dtype)
    g = g[None] if unbatched else g
    for a, n, o in zip(axes, sizes, outs):
        m = adaptive_matrix(n, o)
        g = jnp.moveaxis(jnp.tensordot(jnp.asarray(m.T, g.dtype), g, axes=[[1], [a]]), 0, a)
    return g[0] if unbatched else g


def global_avg_pool_backward(x, dy, *, keepdims: bool = False, layout: str = "NHWC"):
    """dL/dx of ``global_avg_pool``: ``dy / (number of spatial positions)`` everywhere."""
    x = jnp.asarray(x)
    axes = tuple(range(1, x.ndim - 1)) if channels_last(layout) else tuple(range(2, x.ndim))
    count = int(np.prod([x.shape[a] for a in axes]))
    g = jnp.asarray(dy).astype(x.dtype) / count
    if not keepdims:
        g = jnp.expand_dims(g, axes)
    return jnp.broadcast_to(g, x.shape)


def global_max_pool_backward(x, dy, *, keepdims: bool = False, layout: str = "NHWC"):
    """dL/dx of ``global_max_pool``: all of ``dy`` to the first maximum (row-major) per channel."""
    x = jnp.asarray(x)
    last = channels_last(layout)
    xc = x if last else jnp.moveaxis(x, 1, -1)
    flat = xc.reshape(x.shape[0], -1, xc.shape[-1])               # (N, positions, C)
    first = jnp.argmax(flat, axis=1)                               # first max (NaN first if any)
    onehot = (jnp.arange(flat.shape[1])[None, :, None] == first[:, None, :]).astype(x.dtype)
    g = jnp.asarray(dy).astype(x.dtype).reshape(x.shape[0], 1, -1)
    gx = (onehot * g).reshape(xc.shape)
    return gx if last else jnp.moveaxis(gx, -1, 1)


def lp_pool_backward(x, dy, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False, *,
                     layout: str = "NHWC"):
    """dL/dx of ``lp_pool`` (``y = t^(1/p)``, ``t = V * avg_pool(x^p)``, ``V`` the kernel
    volume): the chain ``dy * (1/p) t^(1/p - 1)`` -> ``* V`` through the sign/abs guard
    (zero where the window sum is 0, as autodiff gives) -> ``avg_pool_backward`` -> ``* p x^(p-1)``.
    Where ``t = 0`` and ``p > 1`` the result is NaN, as in autodiff and torch."""
    x = jnp.asarray(x)
    p = float(norm_type)
    kernel = Window(x, kernel_size, stride, 0, 1, ceil_mode, layout, "lp_pool_backward").kernel
    volume = float(np.prod(kernel))
    u = x ** p
    s = ops.avg_pool(u, kernel, stride, 0, ceil_mode, layout=layout)
    t = jnp.sign(s) * jnp.maximum(jnp.abs(s), 0) * volume
    dy = jnp.asarray(dy).astype(x.dtype)
    # d(sign(s) |s|)/ds = sign(s)^2: 1 away from 0 and 0 at 0 (sign's derivative is 0)
    ds = dy * (1.0 / p) * t ** (1.0 / p - 1.0) * volume * jnp.square(jnp.sign(s))
    du = avg_pool_backward(u, ds, kernel, stride, 0, ceil_mode, layout=layout)
    return du * p * x ** (p - 1.0)


def adaptive_max_pool_backward(x, dy, output_size, return_indices: bool = False, *, layout: str = "NHWC"):
    """dL/dx of ``adaptive_max_pool``: each window's ``dy`` goes to its first arg-max in
    row-major scan order (torch's rule; the flat indices the op itself returns), summed
    where overlapping adaptive windows pick the same input. ``return_indices`` is the
    forward's argument and ignored (indices carry no gradient)."""
    geo = adaptive_geometry(jnp.asarray(x), output_size, layout, "adaptive_max_pool_backward")
    _, idx = ops.adaptive_max_pool(geo.x, geo.outs, True, layout=layout)
    g = jnp.asarray(dy).astype(geo.x.dtype)
    g = g[None] if geo.unbatched else g
    gx = scatter_add_flat(g, idx, geo.x.shape, layout)
    return gx[0] if geo.unbatched else gx
