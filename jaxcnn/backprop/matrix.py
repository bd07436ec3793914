"""Convolution as a matrix (the seeds' demonstration).

A convolution is linear in its input, so for a fixed input shape it *is* a matrix
``A``: ``vec(conv(x)) = A @ vec(x)`` (``vec`` = row-major flatten of one unbatched
example in its layout). :func:`conv_matrix` builds ``A`` by placing kernel entries
by hand -- row ``(c_out, o)``, column ``(c_in, o*s + k*d - lo)`` gets ``w[c_out, c_in, k]``
-- so it checks the ops independently. The filter ``[-1, 1]`` on a length-10 signal
gives the 9x10 bidiagonal matrix; transposed convolution is ``A^T`` (it maps 9 values
back to 10: upsampling), and the input gradient of a conv is ``A^T @ vec(dy)``.
Only zero padding (it is the one that keeps the entries of A kernel entries).
"""
from __future__ import annotations

import itertools

import numpy as np

from ..ops.conv import kernel_geometry
from ..ops.layout import channels_last
from ..ops.shapes import conv_output_size, conv_transpose_output_size, ntuple, positive_tuple, resolve_conv_padding


def _split_shape(in_shape, rank, layout):
    """(channels, spatial sizes) of an unbatched input shape in ``layout``."""
    in_shape = tuple(int(s) for s in in_shape)
    if len(in_shape) != rank + 1:
        raise ValueError(f"conv_matrix: in_shape must be an unbatched {rank}-D shape of length {rank + 1} "
                         f"(channels and spatial sizes), got {in_shape}")
    if channels_last(layout):
        return in_shape[-1], list(in_shape[:-1])
    return in_shape[0], list(in_shape[1:])


def _place(wc, c_in, sizes, out, stride, pads, dilation, groups):
    """A[c_out, *o, c_in, *i] in channels-first index order, wc = (C_out, C_in/g, *k)."""
    c_out, c_in_g, *kernel = wc.shape
    rank = len(kernel)
    a = np.zeros((c_out, *out, c_in, *sizes), dtype=np.float64)
    grids = np.meshgrid(*[np.arange(o) for o in out], indexing="ij")
    per_group = c_out // groups
    for co, ci_l in itertools.product(range(c_out), range(c_in_g)):
        ci = (co // per_group) * c_in_g + ci_l
        for k in itertools.product(*[range(kk) for kk in kernel]):
            # input position read by output o through tap k; outside = zero padding
            pos = [g * s + kk * d - lo for g, s, kk, d, (lo, _) in zip(grids, stride, k, dilation, pads)]
            inside = np.ones(grids[0].shape, dtype=bool)
            for p, n in zip(pos, sizes):
                inside &= (p >= 0) & (p < n)
            o_idx = [g[inside] for g in grids]
            i_idx = [p[inside] for p in pos]
            np.add.at(a, (co, *o_idx, ci, *i_idx), wc[(co, ci_l) + k])
    return a


def _to_layout(a, rank, layout):
    """Reorder A's (c_out, *o, c_in, *i) axes to the layout's vec order and flatten to 2-D."""
    if channels_last(layout):
        a = np.moveaxis(a, 0, rank)                       # (*o, c_out, c_in, *i)
        a = np.moveaxis(a, rank + 1, 2 * rank + 1)        # (*o, c_out, *i, c_in)
    rows = int(np.prod(a.shape[:rank + 1]))
    return a.reshape(rows, -1)


def conv_matrix(w, in_shape, *, stride=1, padding=0, dilation=1, groups: int = 1, layout: str = "NHWC"):
    """The dense matrix ``A`` with ``vec(conv(x, w, ...)) == A @ vec(x)`` for one example of
    shape ``in_shape`` (unbatched, in ``layout``); ``A`` has shape (out elements, in elements)."""
    w = np.asarray(w, dtype=np.float64)
    rank = w.ndim - 2
    kernel, _, _ = kernel_geometry(w, layout)
    c_in, sizes = _split_shape(in_shape, rank, layout)
    stride = positive_tuple(stride, rank, "stride", "conv_matrix")
    dilation = positive_tuple(dilation, rank, "dilation", "conv_matrix")
    pads = resolve_conv_padding(padding, kernel, stride, dilation, sizes, "conv_matrix")
    out = [conv_output_size(n, k, s, p, d) for n, k, s, p, d in zip(sizes, kernel, stride, pads, dilation)]
    # NHWC (*k, C_in/g, C_out) -> torch's (C_out, C_in/g, *k)
    wc = np.moveaxis(w, (rank, rank + 1), (1, 0)) if channels_last(layout) else w
    a = _place(wc, c_in, sizes, out, stride, pads, dilation, groups)
    return _to_layout(a, rank, layout)


def conv_transpose_matrix(w, in_shape, *, stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1,
                          layout: str = "NHWC"):
    """The dense matrix of ``conv_transpose(x, w, ...)`` for one example of shape ``in_shape``:
    the transpose of the conv matrix of the same weight (read as a conv from the transposed
    conv's output back to its input)."""
    w = np.asarray(w, dtype=np.float64)
    rank = w.ndim - 2
    kernel, c_in, c_out_g = kernel_geometry(w, layout, transpose=True)
    _, sizes = _split_shape(in_shape, rank, layout)
    stride = positive_tuple(stride, rank, "stride", "conv_transpose_matrix")
    dilation = positive_tuple(dilation, rank, "dilation", "conv_transpose_matrix")
    out_pad = ntuple(output_padding, rank, "output_padding", "conv_transpose_matrix")
    pads = resolve_conv_padding(padding, kernel, stride, dilation, sizes, "conv_transpose_matrix")
    outs = [conv_transpose_output_size(n, k, s, p, d, o)
            for n, k, s, p, d, o in zip(sizes, kernel, stride, pads, dilation, out_pad)]
    # NCHW transposed weight (C_in, C_out/g, *k) is the conv weight (O, I, *k) of the adjoint conv
    wc = np.moveaxis(w, tuple(range(rank)), tuple(range(2, rank + 2))) if channels_last(layout) else w
    # the adjoint conv reads the transposed conv's output (outs) and produces exactly `sizes`
    a = _place(wc, c_out_g * groups, outs, sizes, stride, pads, dilation, groups)
    return _to_layout(a, rank, layout).T
