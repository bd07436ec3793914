"""Window geometry: which input cells feed each output cell, per spatial axis.

One place for the geometry that a forward op and its explicit backward pass must agree
on (``jaxcnn.ops.pool`` / ``jaxcnn.ops.nn.upsample`` and ``jaxcnn.backprop``):

- :class:`Window` -- a strided pooling window (kernel, stride, padding, dilation,
  torch's ``ceil_mode`` rule), validated with the calling op's name in its errors;
- :func:`window_counts` / :func:`avg_divisor` -- torch's average-pooling divisor;
- :func:`adaptive_geometry`, :func:`adaptive_bounds`, :func:`adaptive_mask`,
  :func:`adaptive_matrix` -- torch's adaptive windows ``[floor(i n/o), ceil((i+1) n/o))``;
- :func:`resize_geometry`, :func:`source_coords`, :func:`interpolation_matrix` --
  ``torch.nn.functional.interpolate``'s source coordinates and the per-axis (out x in)
  matrix that every resize mode (nearest, nearest-exact, linear, bicubic, area) applies.

The geometry is shape arithmetic on Python ints and NumPy arrays (concrete at trace
time, so jit-safe); only :meth:`Window.reduce` computes on the (possibly traced) input,
and :func:`broadcast_to_axis` turns a NumPy constant into a jax array.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import jax.numpy as jnp
from jax import lax

from .checks import as_float_array, check_output_positive, check_rank
from .layout import channels_last, spatial_axes
from .shapes import describe, ntuple, pool_output_size, positive_tuple


def spatial_rank(x, kernel_size, op: str) -> int:
    """Spatial rank of a pooling call: ``len(kernel_size)`` for a sequence, else
    ``x.ndim - 2`` (a batched input); ValueError naming ``op`` otherwise."""
    if isinstance(kernel_size, (int, np.integer)):
        rank = x.ndim - 2
        if not 1 <= rank <= 3:
            raise ValueError(f"{op}: expected a batched 1-3-D input of rank 3-5, got shape {describe(x.shape)}"
                             f" (pass kernel_size as a tuple to pool an unbatched input)")
        return rank
    return len(tuple(kernel_size))


class Window:
    """Resolved geometry of one pooling call on ``x``.

    Attributes: ``x`` (batched input), ``unbatched``, ``rank``, ``layout``, ``axes``
    (spatial axes of ``x``), ``sizes`` (their extents), per-spatial-dim tuples
    ``kernel``, ``stride`` (default: the kernel), ``padding``, ``dilation``, ``out``
    (output sizes, torch's ``ceil_mode`` rule) and ``pads`` -- ``(low, high)`` padding
    that makes a VALID window reduction produce exactly ``out`` windows (``high`` holds
    the ceil-mode overhang). Invalid arguments raise ValueError naming ``op``;
    ``max_pad_half`` enforces torch's ``padding <= kernel // 2``.
    """

    def __init__(self, x, kernel_size, stride, padding, dilation, ceil_mode, layout, op, max_pad_half=True):
        self.op = op
        rank = spatial_rank(x, kernel_size, op)
        self.x, self.unbatched = check_rank(x, rank, layout, op)
        self.rank, self.layout = rank, layout
        self.kernel = positive_tuple(kernel_size, rank, "kernel_size", op)
        self.stride = self.kernel if stride is None or stride == () or stride == [] else \
            positive_tuple(stride, rank, "stride", op)
        self.padding = ntuple(padding, rank, "padding", op)
        self.dilation = positive_tuple(dilation, rank, "dilation", op)
        if any(p < 0 for p in self.padding):
            raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
        if max_pad_half and any(p > k // 2 for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"{op}: padding {self.padding} must be at most half the kernel size {self.kernel}")
        self.axes = spatial_axes(self.x.ndim, layout, op)
        self.sizes = [self.x.shape[a] for a in self.axes]
        for dim, (n, k, d, p) in enumerate(zip(self.sizes, self.kernel, self.dilation, self.padding)):
            if n + 2 * p < d * (k - 1) + 1:
                raise ValueError(f"{op}: window of effective size {d * (k - 1) + 1} in spatial dim {dim} is larger "
                                 f"than the padded input size {n + 2 * p} (input shape {describe(self.x.shape)})")
        self.out = [pool_output_size(n, k, s, p, d, ceil_mode)
                    for n, k, s, p, d in zip(self.sizes, self.kernel, self.stride, self.padding, self.dilation)]
        check_output_positive(self.out, op, self.x.shape)
        # High-side padding that makes reduce_window produce exactly `out` windows.
        self.pads = []
        for n, k, s, p, d, o in zip(self.sizes, self.kernel, self.stride, self.padding, self.dilation, self.out):
            hi = max((o - 1) * s + d * (k - 1) + 1 - n - p, 0)
            self.pads.append((p, hi))

    def full(self, spatial_values, fill):
        """Spread per-spatial-dim values into a full-rank tuple (``fill`` elsewhere)."""
        values = [fill] * self.x.ndim
        for a, v in zip(self.axes, spatial_values):
            values[a] = v
        return tuple(values)

    def reduce(self, operand, init, computation):
        """``lax.reduce_window`` of ``operand`` (shaped like ``x``) over these windows."""
        return lax.reduce_window(operand, init, computation, self.full(self.kernel, 1), self.full(self.stride, 1),
                                 self.full(self.pads, (0, 0)), window_dilation=self.full(self.dilation, 1))

    def finish(self, y):
        """Drop the batch axis added for an unbatched input."""
        return y[0] if self.unbatched else y


def window_counts(size: int, kernel: int, stride: int, pad: int, out: int, include_pad: bool) -> np.ndarray:
    """torch's average-pooling divisor along one axis, one float per output: the window
    clipped to the padded input (``include_pad``) or to the input itself; the extra
    high-side cells of ``ceil_mode`` are never counted."""
    starts = np.arange(out) * stride - pad
    ends = np.minimum(starts + kernel, size + pad)
    if include_pad:
        return (ends - starts).astype(np.float64)
    return (np.minimum(ends, size) - np.maximum(starts, 0)).astype(np.float64)


def avg_divisor(win: Window, include_pad: bool) -> np.ndarray:
    """Per-output divisor of ``avg_pool`` over ``win`` (product of :func:`window_counts`
    over the spatial axes), shaped to broadcast against the batched output."""
    q = np.ones(win.out, dtype=np.float64)
    for d, (n, k, s, p, o) in enumerate(zip(win.sizes, win.kernel, win.stride, win.padding, win.out)):
        q = q * window_counts(n, k, s, p, o, include_pad).reshape([-1 if j == d else 1 for j in range(win.rank)])
    shape = list(q.shape)
    return q.reshape(([1] + shape + [1]) if channels_last(win.layout) else ([1, 1] + shape))


class AdaptiveGeometry(NamedTuple):
    """Resolved adaptive pooling call: batched input, whether a batch axis was added,
    spatial axes, their sizes and the output sizes."""
    x: object
    unbatched: bool
    axes: tuple
    sizes: list
    outs: list


def adaptive_geometry(x, output_size, layout: str, op: str) -> AdaptiveGeometry:
    """Validate an adaptive pooling call (``output_size`` an int, or a sequence whose
    ``None`` entries keep the input size) and resolve its geometry."""
    x = as_float_array(x, op)
    if isinstance(output_size, (int, np.integer)) or output_size is None:
        rank = x.ndim - 2
    else:
        rank = len(tuple(output_size))
    xb, unbatched = check_rank(x, rank, layout, op)
    axes = spatial_axes(xb.ndim, layout, op)
    sizes = [xb.shape[a] for a in axes]
    if isinstance(output_size, (int, np.integer)):
        outs = [int(output_size)] * rank
    else:
        outs = [n if o is None else int(o) for o, n in zip(output_size, sizes)]
    if any(o <= 0 for o in outs):
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    return AdaptiveGeometry(xb, unbatched, axes, sizes, outs)


def adaptive_bounds(size: int, out: int):
    """torch's adaptive windows along one axis: ``[floor(i*n/o), ceil((i+1)*n/o))``,
    as (starts, ends) lists of length ``out``."""
    starts = [(i * size) // out for i in range(out)]
    ends = [-(-((i + 1) * size) // out) for i in range(out)]
    return starts, ends


def adaptive_mask(size: int, out: int) -> np.ndarray:
    """(out, size) bool: row ``i`` marks the inputs of adaptive window ``i``."""
    mask = np.zeros((out, size), dtype=bool)
    for i, (s, e) in enumerate(zip(*adaptive_bounds(size, out))):
        mask[i, s:e] = True
    return mask


def adaptive_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) float64 averaging matrix: row ``i`` is ``1/len`` on window ``i``."""
    mask = adaptive_mask(size, out)
    return mask / mask.sum(axis=1, keepdims=True)


RESIZE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "bicubic", "area")
_RESIZE_KIND = {"nearest": "nearest", "nearest-exact": "nearest-exact", "linear": "linear", "bilinear": "linear",
                "trilinear": "linear", "bicubic": "cubic", "area": "area"}
CUBIC_A = -0.75   # torch's (and OpenCV's) cubic convolution coefficient


def resize_kind(mode: str) -> str:
    """The per-axis rule of an ``upsample`` mode: "nearest", "nearest-exact", "linear"
    (linear/bilinear/trilinear), "cubic" (bicubic) or "area" (adaptive average)."""
    return _RESIZE_KIND[mode]


def source_coords(out_size: int, in_size: int, scale: float, mode: str, align_corners: bool) -> np.ndarray:
    """Source coordinate of every output cell along one axis (torch.nn.functional.interpolate),
    ``mode`` a :func:`resize_kind`: integer indices for "nearest" (``floor(dst*scale)``) and
    "nearest-exact" (``floor((dst+0.5)*scale)``), float positions for "linear" (clamped at
    0 without align_corners) and "cubic" (not clamped: its taps clamp instead), and the
    output index for "area" (whose windows are :func:`adaptive_bounds`)."""
    dst = np.arange(out_size, dtype=np.float64)
    if mode == "nearest":
        return np.minimum(np.floor(dst * scale).astype(np.int64), in_size - 1)
    if mode == "nearest-exact":
        return np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), in_size - 1)
    if mode == "area":
        return np.arange(out_size)
    if align_corners:
        return dst * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    if mode == "cubic":
        return (dst + 0.5) * scale - 0.5
    return np.maximum((dst + 0.5) * scale - 0.5, 0.0)


def resize_geometry(x, size, scale_factor, mode: str, align_corners, layout: str, op: str = "upsample"):
    """Validate an ``upsample`` call and return ``[(axis, in_size, out_size, source
    coordinates), ...]`` per spatial axis (coordinates from :func:`source_coords` for
    the mode's :func:`resize_kind`)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"{op}: mode must be one of {', '.join(repr(m) for m in RESIZE_MODES)}, got {mode!r}")
    kind = resize_kind(mode)
    if kind not in ("linear", "cubic") and align_corners:
        raise ValueError(f"{op}: align_corners only applies to the linear and bicubic modes, got mode={mode!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: give exactly one of size and scale_factor")
    axes = spatial_axes(x.ndim, layout, op)
    rank = len(axes)
    if size is not None:
        outs = [int(size)] * rank if isinstance(size, (int, np.integer)) else [int(s) for s in size]
        if len(outs) != rank:
            raise ValueError(f"{op}: size needs {rank} entries, got {size!r}")
        scales = [n / o if o else 0.0 for n, o in zip((x.shape[a] for a in axes), outs)]
    else:
        factors = [float(scale_factor)] * rank if np.isscalar(scale_factor) else [float(f) for f in scale_factor]
        if len(factors) != rank:
            raise ValueError(f"{op}: scale_factor needs {rank} entries, got {scale_factor!r}")
        outs = [int(np.floor(x.shape[a] * f)) for a, f in zip(axes, factors)]
        scales = [1.0 / f for f in factors]
    if any(o <= 0 for o in outs):
        raise ValueError(f"{op}: the output size must be positive, got {describe(outs)} for input shape "
                         f"{describe(x.shape)}")
    return [(a, x.shape[a], o, source_coords(o, x.shape[a], s, kind, bool(align_corners)))
            for a, o, s in zip(axes, outs, scales)]


def linear_taps(src: np.ndarray, in_size: int):
    """Two-tap linear interpolation at float positions ``src``: (lo, hi, frac) with
    ``value = x[lo] * (1 - frac) + x[hi] * frac`` (both taps clamped to the input)."""
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo).astype(np.float64)


def cubic_taps(src: np.ndarray, in_size: int):
    """Four-tap cubic convolution at float positions ``src`` (torch's bicubic, ``A = -0.75``):
    (indices (out, 4) clamped to the input, weights (out, 4)) for taps ``floor(src) - 1 .. + 2``."""
    base = np.floor(src)
    t = src - base
    a = CUBIC_A

    def near(d):     # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):      # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)
    index = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return index, weights


def interpolation_matrix(src: np.ndarray, in_size: int, mode: str) -> np.ndarray:
    """(out, in) float64 matrix ``M`` with ``resize(x) = M @ x`` along one axis, ``mode`` a
    :func:`resize_kind`: one-hot rows for the nearest modes, the two :func:`linear_taps`
    or four :func:`cubic_taps` weights (summed where clamped taps coincide), or the
    :func:`adaptive_matrix` for "area"."""
    m = np.zeros((len(src), in_size))
    rows = np.arange(len(src))
    if mode in ("nearest", "nearest-exact"):
        m[rows, src] = 1.0
        return m
    if mode == "area":
        return adaptive_matrix(in_size, len(src))
    if mode == "cubic":
        index, weights = cubic_taps(src, in_size)
        np.add.at(m, (np.repeat(rows, 4), index.reshape(-1)), weights.reshape(-1))
        return m
    lo, hi, frac = linear_taps(src, in_size)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def broadcast_to_axis(values: np.ndarray, ndim: int, axis: int, dtype):
    """``values`` (1-D) as a ``jnp`` array shaped to broadcast along ``axis`` of an ndim array."""
    shape = [1] * ndim
    shape[axis] = len(values)
    return jnp.asarray(np.asarray(values).reshape(shape), dtype)
