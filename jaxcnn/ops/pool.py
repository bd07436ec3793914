"""Pooling (1-3-D) with torch.nn.functional semantics under ``layout="NCHW"``.

Max pooling pads with -inf (padding never wins); average pooling divides by the window
size including explicit zero padding (``count_include_pad=True``, torch's default) but
never counting the extra high-side cells that ``ceil_mode`` adds. The spatial rank is
``len(kernel_size)`` when it is a sequence, else ``x.ndim - 2``.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from jax import lax

from .checks import as_float_array, check_rank
from .layout import channels_last, spatial_axes
from .shapes import describe, ntuple, positive_tuple
from .windows import (Window, adaptive_geometry, adaptive_mask, adaptive_matrix, avg_divisor,
                      spatial_rank)


def _lowest(dtype):
    return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min


def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
             return_indices: bool = False, *, layout: str = "NHWC"):
    """Max pooling; ``torch.nn.functional.max_pool{1,2,3}d`` under ``layout="NCHW"``.

    With ``return_indices`` also returns, per output, the flat index of the arg-max within
    its (unpadded) spatial plane, ties going to the first maximum in window scan order
    (torch's rule); NaN propagates.
    """
    op = "max_pool"
    x = jnp.asarray(as_float_array(x, op) if not hasattr(x, "dtype") else x)
    win = Window(x, kernel_size, stride, padding, dilation, ceil_mode, layout, op)
    xb = win.x
    # A concrete (numpy) init, not a traced one: only then does reduce_window lower to the
    # differentiable max/add monoid under jit (a traced init gives a generic reduce_window
    # without a reverse-mode rule).
    if all(d == 1 for d in win.dilation):
        y = win.reduce(xb, np.array(_lowest(xb.dtype), xb.dtype), lax.max)
    else:
        # JAX has no VJP for a window-dilated max reduce_window: gather the window taps.
        y = _dilated_max(win, xb)
    if not return_indices:
        return win.finish(y)
    # The indices are integers and carry no gradient: computing them on a constant copy
    # keeps the variadic (value, index) reduce_window out of autodiff, which has no rule
    # for its integer operand (jax.vjp/grad through return_indices=True would raise).
    return win.finish(y), win.finish(_argmax_indices(win, lax.stop_gradient(xb)))


def _dilated_max(win: Window, xb):
    """Max over dilated windows from strided slices of the -inf-padded input, one per
    kernel tap (scan order), selecting the first maximum so that the gradient goes to
    that single element, as in torch."""
    lowest = np.array(_lowest(xb.dtype), xb.dtype)
    xp = jnp.pad(xb, win.full(win.pads, (0, 0)), constant_values=lowest)
    taps = []
    for offset in np.ndindex(*win.kernel):
        index = [slice(None)] * xb.ndim
        for a, k, d, s, o in zip(win.axes, offset, win.dilation, win.stride, win.out):
            index[a] = slice(k * d, k * d + (o - 1) * s + 1, s)
        taps.append(xp[tuple(index)])
    stacked = jnp.stack(taps)
    first = jnp.argmax(stacked, axis=0)           # first maximum; NaN counts as maximum
    return jnp.take_along_axis(stacked, first[None], axis=0)[0]


def _argmax_indices(win: Window, xb):
    """Flat spatial index of each window's first maximum (variadic reduce_window)."""
    spatial_shape = tuple(win.sizes)
    flat = jnp.arange(int(np.prod(spatial_shape)), dtype=jnp.int32).reshape(spatial_shape)
    idx = jnp.broadcast_to(jnp.expand_dims(flat, [a for a in range(xb.ndim) if a not in win.axes]), xb.shape)
    big = jnp.iinfo(jnp.int32).max

    def pick(a, b):
        (va, ia), (vb, ib) = a, b
        a_nan, b_nan = jnp.isnan(va), jnp.isnan(vb)
        take_b = (vb > va) | ((vb == va) & (ib < ia)) | (b_nan & ~a_nan) | (b_nan & a_nan & (ib < ia))
        return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)

    init = (jnp.array(_lowest(xb.dtype), xb.dtype), jnp.array(big, jnp.int32))
    _, indices = lax.reduce_window((xb, idx), init, pick, win.full(win.kernel, 1), win.full(win.stride, 1),
                                   win.full(win.pads, (0, 0)), window_dilation=win.full(win.dilation, 1))
    return indices


def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override=None, *, layout: str = "NHWC"):
    """Average pooling; ``torch.nn.functional.avg_pool{1,2,3}d`` under ``layout="NCHW"``."""
    op = "avg_pool"
    x = as_float_array(x, op)
    win = Window(x, kernel_size, stride, padding, 1, ceil_mode, layout, op)
    sums = win.reduce(win.x, np.array(0, win.x.dtype), lax.add)  # concrete init: see max_pool
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero")
        return win.finish(sums / divisor_override)
    divisor = avg_divisor(win, count_include_pad)
    return win.finish(sums / jnp.asarray(divisor, win.x.dtype))


def lp_pool(x, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False, *, layout: str = "NHWC"):
    """Power-average pooling ``(sum x^p)^(1/p)``; torch's ``lp_pool{1,2,3}d`` formula."""
    op = "lp_pool"
    x = as_float_array(x, op)
    rank = spatial_rank(x, kernel_size, op)
    kernel = positive_tuple(kernel_size, rank, "kernel_size", op)
    out = avg_pool(x ** norm_type, kernel, stride, 0, ceil_mode, layout=layout)
    volume = float(np.prod(kernel))
    return (jnp.sign(out) * jnp.maximum(jnp.abs(out), 0) * volume) ** (1.0 / norm_type)


def adaptive_avg_pool(x, output_size, *, layout: str = "NHWC"):
    """Adaptive average pooling to ``output_size`` (torch's window rule), 1-3-D.

    Separable: each spatial axis is averaged with a fixed (out x in) matrix.
    """
    xb, unbatched, axes, sizes, outs = adaptive_geometry(x, output_size, layout, "adaptive_avg_pool")
    y = xb
    for a, n, o in zip(axes, sizes, outs):
        m = adaptive_matrix(n, o)
        y = jnp.moveaxis(jnp.tensordot(jnp.asarray(m, y.dtype), y, axes=[[1], [a]]), 0, a)
    return y[0] if unbatched else y


def adaptive_max_pool(x, output_size, return_indices: bool = False, *, layout: str = "NHWC"):
    """Adaptive max pooling (torch's window rule), 1-3-D, optionally with flat indices."""
    op = "adaptive_max_pool"
    xb, unbatched, axes, sizes, outs = adaptive_geometry(x, output_size, layout, op)
    y = xb
    # Separable: reduce one axis at a time, innermost first, so that among tied maxima
    # the outer axes pick the first row and the inner ones the first column within it:
    # torch's first maximum in row-major scan order.
    coords = {}
    for a, n, o in reversed(list(zip(axes, sizes, outs))):
        mask = adaptive_mask(n, o)
        moved = jnp.moveaxis(y, a, -1)[..., None, :]                 # (..., 1, n)
        masked = jnp.where(jnp.asarray(mask), moved, -jnp.inf)       # (..., o, n)
        arg = jnp.moveaxis(jnp.argmax(masked, axis=-1), -1, a)       # first max
        y = jnp.moveaxis(jnp.max(masked, axis=-1), -1, a)
        # Coordinates chosen earlier (inner axes) vary along this axis: keep the ones the
        # arg-max along this axis selected.
        coords = {b: jnp.take_along_axis(c, arg, axis=a) for b, c in coords.items()}
        coords[a] = arg
    if not return_indices:
        return y[0] if unbatched else y
    flat = jnp.zeros_like(coords[axes[0]])
    for a, n in zip(axes, sizes):                                    # row-major flat index
        flat = flat * n + coords[a]
    return (y[0], flat[0]) if unbatched else (y, flat)


def global_avg_pool(x, *, keepdims: bool = False, layout: str = "NHWC"):
    """Mean over all spatial axes: (N, C) (or (N, 1.., C) with ``keepdims``)."""
    x = as_float_array(x, "global_avg_pool")
    if x.ndim < 3:
        raise ValueError(f"global_avg_pool: expected a batched input of rank >= 3, got shape {describe(x.shape)}")
    return jnp.mean(x, axis=spatial_axes(x.ndim, layout, "global_avg_pool"), keepdims=keepdims)


def global_max_pool(x, *, keepdims: bool = False, layout: str = "NHWC"):
    """Max over all spatial axes: (N, C) (or (N, 1.., C) with ``keepdims``)."""
    x = as_float_array(x, "global_max_pool")
    if x.ndim < 3:
        raise ValueError(f"global_max_pool: expected a batched input of rank >= 3, got shape {describe(x.shape)}")
    return jnp.max(x, axis=spatial_axes(x.ndim, layout, "global_max_pool"), keepdims=keepdims)


def max_unpool(x, indices, kernel_size, stride=None, padding=0, output_size=None, *, layout: str = "NHWC"):
    """Inverse of ``max_pool(..., return_indices=True)``: scatter values to their indices,
    zeros elsewhere; torch's ``max_unpool{1,2,3}d``. Default output size
    ``(H - 1)*stride - 2*padding + kernel``. Where indices repeat, each input still
    receives ``dy`` at its index (torch's gradient)."""
    op = "max_unpool"
    x = as_float_array(x, op)
    rank = spatial_rank(x, kernel_size, op)
    xb, unbatched = check_rank(x, rank, layout, op)
    ib = jnp.asarray(indices)
    if unbatched:
        ib = ib[None]
    if ib.shape != xb.shape:
        raise ValueError(f"{op}: indices shape {describe(ib.shape)} must equal the input shape {describe(xb.shape)}")
    kernel = positive_tuple(kernel_size, rank, "kernel_size", op)
    stride = kernel if stride is None else positive_tuple(stride, rank, "stride", op)
    pads = ntuple(padding, rank, "padding", op)
    axes = spatial_axes(xb.ndim, layout, op)
    sizes = [xb.shape[a] for a in axes]
    if output_size is None:
        outs = [(n - 1) * s - 2 * p + k for n, s, p, k in zip(sizes, stride, pads, kernel)]
    else:
        outs = [int(o) for o in tuple(output_size)[-rank:]]
    last = channels_last(layout, op)
    n, c = xb.shape[0], (xb.shape[-1] if last else xb.shape[1])
    # Work channels-first with flattened spatial dims: (N, C, prod(in)) -> (N, C, prod(out)).
    xf = xb if not last else jnp.moveaxis(xb, -1, 1)
    idf = ib if not last else jnp.moveaxis(ib, -1, 1)
    xf, idf = xf.reshape(n, c, -1), idf.reshape(n, c, -1)
    total = int(np.prod(outs))
    where = (jnp.arange(n)[:, None, None], jnp.arange(c)[None, :, None], idf)
    zeros = jnp.zeros((n, c, total), xf.dtype)
    # Values: a scatter-set. Gradient: torch's rule, every input reads dy back at its own
    # index even where indices repeat -- the transpose of a scatter-ADD. The second term is
    # zero-valued and carries exactly that gradient; the set's own (one winner per
    # repeated index) is cut by stop_gradient.
    frozen = lax.stop_gradient(xf)
    out = zeros.at[where].set(frozen, mode="drop") + zeros.at[where].add(xf - frozen, mode="drop")
    out = out.reshape(n, c, *outs)
    if last:
        out = jnp.moveaxis(out, 1, -1)
    return out[0] if unbatched else out
