"""Convolution of a narrow input (an image's first layer) as shifted multiply-adds,
with XLA's own convolution backward.

XLA:CPU runs a convolution with one input channel badly: on (128, 28, 28, 1) a 3x3
conv to 32 channels took 3.2-4.8 ms and lenet5's 5x5 conv to 6 channels 5.3-8.1 ms,
where the same result as ``prod(kernel) * C_in`` shifted slices, each scaled by one
tap's weights (``(C_out,)``, broadcast), took 0.55 ms and 0.9 ms
(experiments/bench_conv_narrow.py). Written that way, autodiff's weight gradient
would be ``prod(kernel) * C_in`` full reductions (slower than XLA's conv backward,
8.6-9.9 ms), so the backward here is the VJP of ``lax.conv_general_dilated`` itself:
the same gradients ``backprop="autodiff"`` gives, and its input gradient is dropped
by XLA when nobody needs it (a first layer's input is data).

Fast path (:func:`narrow`): channels-last layout, zero padding, ``groups == 1``, and
``C_in == 1`` or ``C_in <= 3`` into at most 32 output channels (where the benchmark
showed it faster: RGB into 64 channels was not).

A second fast path (:func:`gemm_input_grad`) keeps XLA's forward and weight gradient
but computes the input gradient of a stride-1 conv with 4-6 input channels as one
matmul ``dy @ w^T`` for all taps followed by col2im (each tap's slice added back where
it was read): XLA's transposed conv into so few channels is slow. lenet5's conv2
(6 -> 16, 5x5 on 14x14, batch 128): 5.1 -> 3.0 ms; 4 -> 16, 3x3: 2.4 -> 0.7 ms; but 8 -> 32
(3x3 on 28x28) 9.4 -> 10.5 ms, hence the limit of 6.

A depthwise conv (channel multiplier 1, channels-last, zero padding) is shifted
multiply-adds (:mod:`.depthwise`: 1.4-22x faster forward+backward on XLA:CPU,
experiments/bench_depthwise.py). Everything else is ``jaxcnn.ops.conv``.
"""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from ... import ops
from ...ops.layout import channels_last, dimension_numbers
from ...ops.shapes import positive_tuple
from .checked import check, finish
from .depthwise import depthwise_shifted, use_shifted_depthwise

NARROW_MAX_IN = 3          # input channels the shifted forward is used for ...
NARROW_MAX_OUT = 32        # ... when there are more than one of them
GEMM_INPUT_GRAD_MAX_IN = 6  # input channels up to which dx is one matmul + col2im


def narrow(x_shape, w_shape, groups: int = 1, layout: str = "NHWC", padding_mode: str = "zeros") -> bool:
    """True when :func:`conv` takes the shifted multiply-add forward for these shapes."""
    if not channels_last(layout) or groups != 1 or padding_mode != "zeros" or len(w_shape) < 3:
        return False
    c_in, c_out = w_shape[-2], w_shape[-1]
    if len(x_shape) not in (len(w_shape) - 1, len(w_shape)) or x_shape[-1] != c_in:
        return False
    return c_in == 1 or (c_in <= NARROW_MAX_IN and c_out <= NARROW_MAX_OUT)


def gemm_input_grad(x_shape, w_shape, stride, dilation, groups: int = 1, layout: str = "NHWC",
                    padding_mode: str = "zeros") -> bool:
    """True when :func:`conv` computes the input gradient as one matmul plus col2im: a
    few input channels (more than :func:`narrow` takes), stride 1, no dilation."""
    if not channels_last(layout) or groups != 1 or padding_mode != "zeros" or len(w_shape) < 3:
        return False
    rank = len(w_shape) - 2
    try:
        unit = all(v == 1 for v in positive_tuple(stride, rank, "stride", "conv") +
                   positive_tuple(dilation, rank, "dilation", "conv"))
    except (ValueError, TypeError):
        return False      # the op reports it
    if not unit:
        return False
    c_in = w_shape[-2]
    return NARROW_MAX_IN < c_in <= GEMM_INPUT_GRAD_MAX_IN and x_shape[-1] == c_in


def _depthwise(w_shape, groups: int, layout: str, padding_mode: str) -> bool:
    return (channels_last(layout) and padding_mode == "zeros" and len(w_shape) >= 3
            and use_shifted_depthwise(w_shape[-2], w_shape[-1], groups))


def _col2im_input_grad(dy, w, in_sizes, pads):
    """``dx`` of a stride-1 conv: every output position's ``dy @ w_tap^T`` (one matmul for
    all taps) added back at the input positions that tap read, then the padding cropped."""
    rank = w.ndim - 2
    kernel = w.shape[:rank]
    z = jnp.tensordot(dy, w, axes=((dy.ndim - 1,), (w.ndim - 1,)))      # (N, *out, *kernel, C_in)
    padded = [n + lo + hi for n, (lo, hi) in zip(in_sizes, pads)]
    out = dy.shape[1:-1]
    dx = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        piece = z[(slice(None),) * (1 + rank) + tap]                     # (N, *out, C_in)
        cfg = [(0, 0, 0)] + [(t, p - o - t, 0) for t, p, o in zip(tap, padded, out)] + [(0, 0, 0)]
        piece = lax.pad(piece, jnp.zeros((), piece.dtype), cfg)
        dx = piece if dx is None else dx + piece
    start = [0] + [lo for lo, _ in pads] + [0]
    return lax.slice(dx, start, [dx.shape[0]] + [lo + n for (lo, _), n in zip(pads, in_sizes)] + [dx.shape[-1]])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _gemm_grad_conv(x, w, pads):
    return lax_conv(x, w, (1,) * (w.ndim - 2), pads, (1,) * (w.ndim - 2))


def _gemm_grad_conv_fwd(x, w, pads):
    return _gemm_grad_conv(x, w, pads), (x, w)


def _gemm_grad_conv_bwd(pads, residuals, dy):
    x, w = residuals
    ones = (1,) * (w.ndim - 2)
    _, weight_vjp = jax.vjp(lambda w: lax_conv(x, w, ones, pads, ones), w)
    return _col2im_input_grad(dy, w, x.shape[1:-1], pads), weight_vjp(dy)[0]


_gemm_grad_conv.defvjp(_gemm_grad_conv_fwd, _gemm_grad_conv_bwd)


def lax_conv(x, w, stride, pads, dilation, groups: int = 1):
    """XLA's convolution of batched channels-last ``x`` with an HWIO kernel, geometry
    already resolved (the form the formulations here and in :mod:`jaxcnn.kernels.onednn` fall back on)."""
    rank = w.ndim - 2
    return lax.conv_general_dilated(x, w, window_strides=stride, padding=pads, rhs_dilation=dilation,
                                    dimension_numbers=dimension_numbers(rank, "NHWC", "conv"),
                                    feature_group_count=groups)


def _shifted(x, w, stride, pads, dilation):
    """``sum over taps k and input channels c of slice_k(x_pad)[..., c] * w[k, c, :]``."""
    rank = w.ndim - 2
    kernel, c_in = w.shape[:rank], w.shape[rank]
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(x.shape[1:-1], kernel, stride, dilation)]
    y = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        start = [0] + [t * d for t, d in zip(tap, dilation)]
        limit = [x.shape[0]] + [t * d + (o - 1) * s + 1 for t, d, o, s in zip(tap, dilation, out, stride)]
        for c in range(c_in):
            window = lax.slice(x, start + [c], limit + [c + 1], [1, *stride, 1])    # (N, *out, 1)
            term = window * w[tap + (c,)]                                              # (N, *out, C_out)
            y = term if y is None else y + term
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _narrow_conv(x, w, stride, pads, dilation):
    return _shifted(x, w, stride, pads, dilation)


def _narrow_conv_fwd(x, w, stride, pads, dilation):
    return _shifted(x, w, stride, pads, dilation), (x, w)


def _narrow_conv_bwd(stride, pads, dilation, residuals, dy):
    x, w = residuals
    _, vjp = jax.vjp(lambda x, w: lax_conv(x, w, stride, pads, dilation), x, w)
    return vjp(dy)


_narrow_conv.defvjp(_narrow_conv_fwd, _narrow_conv_bwd)


def conv(x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
         layout: str = "NHWC"):
    """``jaxcnn.ops.conv`` (same signature, values and errors); a narrow input takes the
    shifted forward with XLA's conv backward (module docstring)."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  layout=layout)
    known = hasattr(x, "shape") and hasattr(w, "shape")
    if known and _depthwise(w.shape, groups, layout, padding_mode):
        c = check(ops.conv, "conv", x, w, b, **kwargs)
        y = depthwise_shifted(c.x, c.w, stride=c.stride, pads=c.pads, dilation=c.dilation, layout="NHWC")
        return finish(y, b, c)
    shifted = known and narrow(x.shape, w.shape, groups, layout, padding_mode)
    gemm = known and not shifted and gemm_input_grad(x.shape, w.shape, stride, dilation, groups, layout,
                                                      padding_mode)
    if not (shifted or gemm):
        return ops.conv(x, w, b, **kwargs)
    c = check(ops.conv, "conv", x, w, b, **kwargs)
    y = _narrow_conv(c.x, c.w, c.stride, c.pads, c.dilation) if shifted else _gemm_grad_conv(c.x, c.w, c.pads)
    return finish(y, b, c)
