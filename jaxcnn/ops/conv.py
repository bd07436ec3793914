"""Convolution (1-3-D) and transposed convolution on ``lax.conv_general_dilated``.

Deep-learning "convolution" is cross-correlation: ``y[i] = sum_k x[i*s + k*d] w[k]``.
True convolution is cross-correlation with the kernel flipped in every spatial axis.

Weights: channels-last (``layout="NHWC"``) ``(*kernel, C_in/groups, C_out)``;
channels-first (``layout="NCHW"``) torch's ``(C_out, C_in/groups, *kernel)``.
Transposed conv weights: NHWC ``(*kernel, C_in, C_out/groups)``; NCHW torch's
``(C_in, C_out/groups, *kernel)``.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .checks import (as_float_array, check_channels, check_groups, check_output_positive, check_rank,
                     check_window_fits, common_float)
from .layout import channels_last, dimension_numbers, spatial_axes
from .pad import pad_spatial
from .shapes import (conv_output_size, conv_transpose_output_size, describe, ntuple, positive_tuple,
                     resolve_conv_padding)

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def kernel_geometry(w, layout: str, transpose: bool = False):
    """Return ``(kernel_sizes, dim0, dim1)`` of a weight array.

    For conv ``dim0 = C_in/groups, dim1 = C_out``; for transposed conv
    ``dim0 = C_in, dim1 = C_out/groups``.
    """
    rank = w.ndim - 2
    if channels_last(layout):
        return tuple(w.shape[:rank]), w.shape[rank], w.shape[rank + 1]
    if transpose:
        return tuple(w.shape[2:]), w.shape[0], w.shape[1]
    return tuple(w.shape[2:]), w.shape[1], w.shape[0]


def _add_bias(y, b, layout: str, op: str, c_out: int):
    if b is None:
        return y
    if b.shape != (c_out,):
        raise ValueError(f"{op}: bias must have shape ({c_out},), got {describe(b.shape)}")
    if channels_last(layout):
        return y + b
    return y + b.reshape((c_out,) + (1,) * (y.ndim - 2))


def _weight_rank(w, op: str) -> int:
    rank = w.ndim - 2
    if not 1 <= rank <= 3:
        raise ValueError(f"{op}: weight must have rank 3, 4 or 5 (1-3 spatial dims plus two channel "
                         f"axes), got shape {describe(w.shape)}")
    return rank


def conv(x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
         layout: str = "NHWC"):
    """N-D convolution (cross-correlation); the spatial rank follows from ``w``.

    With ``layout="NCHW"`` this is exactly ``torch.nn.functional.conv{1,2,3}d`` (plus
    nn.ConvNd's ``padding_mode``). ``padding`` is an int, per-dim ints, per-dim
    ``(lo, hi)`` pairs, or ``"valid"``/``"same"``/``"full"``/``"causal"``.
    An input without the batch axis is accepted and returned without it.
    """
    op = "conv"
    channels_last(layout, op)          # a bad layout is reported under this op's name
    x = as_float_array(x, op)
    w = as_float_array(w, op, "weight")
    b = None if b is None else as_float_array(b, op, "bias")
    x, w, b = common_float(op, x, w, b)
    rank = _weight_rank(w, op)
    x, unbatched = check_rank(x, rank, layout, op)
    kernel, c_in_g, c_out = kernel_geometry(w, layout)
    check_groups(c_in_g * groups, c_out, groups, op)
    check_channels(x, c_in_g * groups, layout, op)
    stride = positive_tuple(stride, rank, "stride", op)
    dilation = positive_tuple(dilation, rank, "dilation", op)
    sizes = [x.shape[a] for a in spatial_axes(x.ndim, layout)]
    pads = resolve_conv_padding(padding, kernel, stride, dilation, sizes, op)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    check_window_fits(sizes, pads, eff, op, x.shape)
    out = [conv_output_size(n, k, s, p, d) for n, k, s, p, d in zip(sizes, kernel, stride, pads, dilation)]
    check_output_positive(out, op, x.shape)
    if padding_mode != "zeros":
        x = pad_spatial(x, pads, mode=padding_mode, layout=layout, op=op)
        pads = [(0, 0)] * rank
    y = lax.conv_general_dilated(x, w, window_strides=stride, padding=pads, rhs_dilation=dilation,
                                 dimension_numbers=dimension_numbers(rank, layout, op),
                                 feature_group_count=groups)
    y = _add_bias(y, b, layout, op, c_out)
    return y[0] if unbatched else y


def transposed_kernel(w, groups: int, layout: str):
    """The transposed-kernel rule: reflect every spatial axis and swap in/out channels.

    Maps a transposed-conv weight (NHWC ``(*k, C_in, C_out/g)``, NCHW
    ``(C_in, C_out/g, *k)``) to the forward-conv kernel (NHWC ``(*k, C_in/g, C_out)``,
    NCHW ``(C_out, C_in/g, *k)``) that computes the transposed conv on the stride-dilated
    input. Applied to a conv weight read as a transposed-conv weight, it gives the kernel
    that back-propagates dL/dy to dL/dx (the seeds' eq. 12.6).
    """
    rank = w.ndim - 2
    if channels_last(layout):
        *k, c_in, c_out_g = w.shape
        v = w.reshape(*k, groups, c_in // groups, c_out_g)
        v = jnp.moveaxis(v, rank, rank + 1)               # (*k, C_in/g, g, C_out/g)
        v = v.reshape(*k, c_in // groups, groups * c_out_g)
        return jnp.flip(v, axis=tuple(range(rank)))       # HWIO with I = C_in/g, O = C_out
    c_in, c_out_g, *k = w.shape
    v = w.reshape(groups, c_in // groups, c_out_g, *k)
    v = jnp.swapaxes(v, 1, 2).reshape(groups * c_out_g, c_in // groups, *k)
    return jnp.flip(v, axis=tuple(range(2, 2 + rank)))


def conv_transpose(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1,
                   layout: str = "NHWC"):
    """Transposed convolution with torch's ConvTranspose semantics.

    It is the adjoint (gradient w.r.t. the input) of ``conv`` with the same weight,
    stride, padding, dilation and groups, computed as a forward conv of the input
    dilated by ``stride`` with the reflected kernel and padding ``d*(k-1) - p``:
    ``H_out = (H-1)*s - 2p + d*(k-1) + output_padding + 1``.
    ``padding`` is an int, per-dim ints or per-dim ``(lo, hi)`` pairs (or ``"valid"``).
    """
    op = "conv_transpose"
    channels_last(layout, op)          # a bad layout is reported under this op's name
    x = as_float_array(x, op)
    w = as_float_array(w, op, "weight")
    b = None if b is None else as_float_array(b, op, "bias")
    x, w, b = common_float(op, x, w, b)
    rank = _weight_rank(w, op)
    x, unbatched = check_rank(x, rank, layout, op)
    kernel, c_in, c_out_g = kernel_geometry(w, layout, transpose=True)
    check_groups(c_in, c_out_g * groups, groups, op)
    check_channels(x, c_in, layout, op)
    stride = positive_tuple(stride, rank, "stride", op)
    dilation = positive_tuple(dilation, rank, "dilation", op)
    out_pad = ntuple(output_padding, rank, "output_padding", op)
    if isinstance(padding, str) and padding.lower() != "valid":
        raise ValueError(f"{op}: only padding='valid' is accepted as a string, got {padding!r}")
    sizes = [x.shape[a] for a in spatial_axes(x.ndim, layout)]
    pads = resolve_conv_padding(padding, kernel, stride, dilation, sizes, op)
    for op_, s, d in zip(out_pad, stride, dilation):
        if not 0 <= op_ < max(s, d):
            raise ValueError(f"{op}: output_padding must be smaller than stride or dilation, got "
                             f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    out = [conv_transpose_output_size(n, k, s, p, d, o)
           for n, k, s, p, d, o in zip(sizes, kernel, stride, pads, dilation, out_pad)]
    check_output_positive(out, op, x.shape)
    fwd_pads = [(d * (k - 1) - lo, d * (k - 1) - hi + o)
                for k, d, (lo, hi), o in zip(kernel, dilation, pads, out_pad)]
    kernel_fwd = transposed_kernel(w, groups, layout)
    if any(s > 1 for s in stride):
        # Insert the stride's zeros (and the padding) with lax.pad instead of passing
        # lhs_dilation: jax's weight-gradient rule for a conv with lhs_dilation, rhs_dilation
        # and groups together builds a conv that XLA's algebraic simplifier rejects with a
        # fatal CHECK ("Window dimensions do not match RHS shape"), killing the process
        # (tests/test_conv_transpose_abort.py). The gradient of an interior pad is a strided
        # slice, and the remaining conv is a plain dilated one; the values are identical.
        cfg = [(0, 0, 0)] * x.ndim
        for ax, (lo, hi), s in zip(spatial_axes(x.ndim, layout), fwd_pads, stride):
            cfg[ax] = (lo, hi, s - 1)
        x = lax.pad(x, jnp.zeros((), x.dtype), cfg)
        fwd_pads = [(0, 0)] * rank
    y = lax.conv_general_dilated(x, kernel_fwd, window_strides=(1,) * rank, padding=fwd_pads,
                                 rhs_dilation=dilation, dimension_numbers=dimension_numbers(rank, layout, op),
                                 feature_group_count=groups)
    y = _add_bias(y, b, layout, op, c_out_g * groups)
    return y[0] if unbatched else y
