"""Strided transposed convolution as one matmul and an overlap-add.

``jaxcnn.ops.conv_transpose`` is the textbook form: the input dilated by the stride
(``s - 1`` zeros between samples) convolved with the reflected kernel. With stride ``s``
per dimension that convolution multiplies ``s**rank - 1`` zeros for every input sample,
and XLA:CPU runs it, and its gradients, as a dense conv over the dilated input (jax
issue 23783 reports JAX 30-400x slower than PyTorch on such layers).

The adjoint-of-conv definition gives a cheaper form directly: input position ``i`` and
kernel tap ``t`` land on output position ``i*s + t*d - pad_lo``, so

    z = x @ w                          # (N, *in, *kernel, C_out): every sample times every tap
    y = sum over taps t of z[..., t, :] placed at positions t*d + i*s   (overlap-add)

then the padding is cropped (``output_padding`` extends the high end with zeros). The
matmul does exactly the useful multiply-adds; the placement is ``lax.pad`` with interior
padding (its gradient a strided slice), so autodiff gives the backward as matmuls and
strided slices too. With dilation 1 and a kernel that is (nearly) a multiple of the
stride, the placement is done in ``ceil(k/s)`` block shifts per dimension and one
transpose instead of one pad per tap (:func:`_overlap_add_phases`).

Fast path (:func:`overlap_add`): channels-last layout, ``groups == 1``, a stride above 1
in some dimension (stride 1 is an ordinary conv, which XLA runs well). Measured on
forward + backward (experiments/bench_conv_transpose.py, 2 cores): 3-300x XLA's dilated
conv and 1.07-2.6x PyTorch on U-Net's 2x2/2, DCGAN's 4x4/2, 3x3/2, 1-D and 3-D layers.
"""
from __future__ import annotations

import itertools
import math

import jax.numpy as jnp
from jax import lax

from ... import ops
from ...ops.layout import channels_last
from ...ops.shapes import positive_tuple
from .checked import check, finish

# The block-shift form pads the kernel to a multiple of the stride; above this many
# padded taps per real tap the per-tap form wins (3x3/2, 64 -> 32 at 16x16, batch 32:
# 11.0 ms by blocks, 7.0 ms by taps; experiments/bench_conv_transpose.py).
PHASES_MAX_PADDING = 1.25


def overlap_add(x_shape, w_shape, stride, groups: int = 1, layout: str = "NHWC") -> bool:
    """True when :func:`conv_transpose` takes the matmul + overlap-add form."""
    if not channels_last(layout) or groups != 1 or len(w_shape) < 3:
        return False
    rank = len(w_shape) - 2
    if len(x_shape) not in (rank + 1, rank + 2) or x_shape[-1] != w_shape[rank]:
        return False
    try:
        return any(s > 1 for s in positive_tuple(stride, rank, "stride", "conv_transpose"))
    except (ValueError, TypeError):
        return False      # the op reports it


def _overlap_add_taps(x, w, stride, dilation, out_sizes, pads):
    """Any dilation: each tap's products placed with an interior-padded ``lax.pad``."""
    rank = w.ndim - 2
    kernel, in_sizes = w.shape[:rank], x.shape[1:-1]
    z = jnp.tensordot(x, w, axes=((x.ndim - 1,), (rank,)))               # (N, *in, *kernel, C_out)
    full = [(n - 1) * s + d * (k - 1) + 1 for n, s, d, k in zip(in_sizes, stride, dilation, kernel)]
    y = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        piece = z[(slice(None),) * (1 + rank) + tap]                       # (N, *in, C_out)
        cfg = [(0, 0, 0)] + [(t * d, f - t * d - ((n - 1) * s + 1), s - 1)
                             for t, d, f, n, s in zip(tap, dilation, full, in_sizes, stride)] + [(0, 0, 0)]
        piece = lax.pad(piece, jnp.zeros((), piece.dtype), cfg)
        y = piece if y is None else y + piece
    return _crop_to(y, pads, out_sizes)


def _overlap_add_phases(x, w, stride, out_sizes, pads):
    """Dilation 1: tap ``t = a*s + r`` lands on phase ``r`` of output block ``i + a``, so
    the kernel (zero-padded to a multiple of the stride) splits into ``ceil(k/s)`` block
    shifts per dimension; each shift adds a whole ``(N, *in, *stride, C)`` slab, and the
    phases are interleaved by one transpose + reshape (for kernel == stride, e.g. U-Net's
    2x2/2, that transpose is all there is)."""
    rank = w.ndim - 2
    kernel, in_sizes = w.shape[:rank], x.shape[1:-1]
    blocks = [-(-k // s) for k, s in zip(kernel, stride)]
    w = jnp.pad(w, [(0, a * s - k) for a, s, k in zip(blocks, stride, kernel)] + [(0, 0), (0, 0)])
    z = jnp.tensordot(x, w, axes=((x.ndim - 1,), (rank,)))               # (N, *in, *(a*s), C_out)
    z = z.reshape(z.shape[:1 + rank] + tuple(v for a, s in zip(blocks, stride) for v in (a, s)) + z.shape[-1:])
    y = None
    for shift in itertools.product(*(range(a) for a in blocks)):
        piece = z[(slice(None),) * (1 + rank) + tuple(v for a in shift for v in (a, slice(None)))]
        cfg = [(0, 0, 0)] + [(a, b - 1 - a, 0) for a, b in zip(shift, blocks)] + [(0, 0, 0)] * (rank + 1)
        piece = lax.pad(piece, jnp.zeros((), piece.dtype), cfg)           # (N, *(in + b - 1), *stride, C_out)
        y = piece if y is None else y + piece
    perm = [0] + [v for d in range(rank) for v in (1 + d, 1 + rank + d)] + [1 + 2 * rank]
    y = jnp.transpose(y, perm)
    y = y.reshape((y.shape[0],) + tuple((n + b - 1) * s for n, b, s in zip(in_sizes, blocks, stride))
                  + y.shape[-1:])
    return _crop_to(y, pads, out_sizes)


def _crop_to(y, pads, out_sizes):
    """Output positions ``lo .. lo + out`` of the full overlap-add (zeros past its end:
    ``output_padding``); lax.pad's negative padding crops."""
    cfg = [(0, 0, 0)] + [(-lo, lo + o - n, 0) for (lo, _), o, n in zip(pads, out_sizes, y.shape[1:-1])] + \
        [(0, 0, 0)]
    return lax.pad(y, jnp.zeros((), y.dtype), cfg)


def conv_transpose(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1,
                   layout: str = "NHWC"):
    """``jaxcnn.ops.conv_transpose`` (same signature, values and errors); a strided one
    takes the matmul + overlap-add form (module docstring)."""
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                  groups=groups, layout=layout)
    if not (hasattr(x, "shape") and hasattr(w, "shape") and overlap_add(x.shape, w.shape, stride, groups, layout)):
        return ops.conv_transpose(x, w, b, **kwargs)
    c = check(ops.conv_transpose, "conv_transpose", x, w, b, **kwargs)
    rank = c.w.ndim - 2
    kernel = c.w.shape[:rank]
    out_sizes = c.out.shape[-1 - rank:-1]
    padded_taps = math.prod(-(-k // s) * s for k, s in zip(kernel, c.stride))
    if all(d == 1 for d in c.dilation) and padded_taps <= PHASES_MAX_PADDING * math.prod(kernel):
        y = _overlap_add_phases(c.x, c.w, c.stride, out_sizes, c.pads)
    else:
        y = _overlap_add_taps(c.x, c.w, c.stride, c.dilation, out_sizes, c.pads)
    return finish(y, b, c)
