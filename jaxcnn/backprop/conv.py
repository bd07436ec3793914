"""Explicit backward passes of ``conv`` and ``conv_transpose`` (the seeds' eqs. 12.5-12.6).

For ``y = conv(x, w)`` with stride ``s``, padding ``(lo, hi)``, dilation ``d``, groups ``g``:

* ``dL/dx``: ``dy`` dilated by ``s`` (zeros between entries, ``lhs_dilation``), then
  cross-correlated with the *transposed kernel* (every spatial axis reflected, in/out
  channels swapped per group) with padding ``d*(k-1) - lo`` below and, above, whatever
  restores the input size -- this absorbs the remainder rows a stride that does not
  divide evenly leaves unread (they get zero gradient).
* ``dL/dW``: the cross-correlation of ``x`` with ``dy``: per tap ``k``,
  ``sum_{n,o} x[n, o*s + k*d] dy[n, o]``. Either one ``lax.conv_general_dilated`` in
  which the batch axis is the contraction (``rhs_dilation=s``, ``window_strides=d``,
  ``batch_group_count=g``), or (``weight_grad_method="taps"``) one dot product per
  kernel tap of a strided slice of ``x`` with ``dy``.
* ``dL/db``: ``dy`` summed over batch and space.
* ``padding_mode`` reflect/replicate/circular: the forward pads explicitly, so the
  gradient w.r.t. the padded input is folded back by :func:`fold_padding`.

``conv_transpose`` is the adjoint of ``conv``, so its input gradient is a *forward*
conv of ``dy`` with the same weight, and its weight gradient the same correlation as
above with the roles of input and cotangent swapped.

Nothing here calls jax.grad/vjp/jvp/linear_transpose; tests compare against them.
"""
from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..ops.conv import PADDING_MODES, kernel_geometry, transposed_kernel
from ..ops.layout import channel_axis, channels_last, dimension_numbers, spatial_axes
from ..ops.pad import pad_spatial
from ..ops.shapes import ntuple, positive_tuple, resolve_conv_padding
from .padfold import fold_padding

WEIGHT_GRAD_METHODS = ("auto", "conv", "taps")


def _spatial_letters(rank: int) -> str:
    return "DHW"[3 - rank:]


def _sizes(a, layout):
    return [a.shape[ax] for ax in spatial_axes(a.ndim, layout)]


def _bias_grad(dy, layout):
    """dL/db: dy summed over every axis but the channel axis."""
    c = channel_axis(dy.ndim, layout)
    return jnp.sum(dy, axis=tuple(a for a in range(dy.ndim) if a != c))


def conv_input_grad(dy, w, *, in_sizes, stride, pads, dilation, groups, layout):
    """dL/dx of a zero-padded conv with weight ``w`` (conv layout), for input sizes ``in_sizes``.

    ``dy`` dilated by the stride, cross-correlated with the reflected, channel-swapped
    kernel (the transposed-kernel rule) with padding ``d*(k-1) - lo`` and a high side
    ``n + lo - (o-1)*s - 1`` that makes the result exactly ``in_sizes`` long (negative
    padding crops: lax accepts it).
    """
    rank = w.ndim - 2
    kernel, _, _ = kernel_geometry(w, layout)
    back_pads = [(d * (k - 1) - lo, n + lo - (o - 1) * s - 1)
                 for n, o, k, s, d, (lo, _) in zip(in_sizes, _sizes(dy, layout), kernel, stride, dilation, pads)]
    # transposed_kernel maps a transposed-conv weight to the forward kernel of its
    # computation; a conv weight read as a transposed-conv weight of the reverse map is
    # (C_out, C_in/g, *k) in NCHW (as is) and (*k, C_out, C_in/g) in NHWC (swap the last two).
    w_t = w if not channels_last(layout) else jnp.swapaxes(w, -1, -2)
    w_back = transposed_kernel(w_t, groups, layout)
    return lax.conv_general_dilated(dy, w_back, window_strides=(1,) * rank, padding=back_pads,
                                    lhs_dilation=stride, rhs_dilation=dilation,
                                    dimension_numbers=dimension_numbers(rank, layout),
                                    feature_group_count=groups)


def _trimmed_pads(in_sizes, out_sizes, kernel, stride, pads, dilation):
    # A stride that does not divide leaves r trailing input rows no window reaches;
    # drop them so the correlation yields exactly `kernel` taps.
    trimmed = []
    for n, o, k, s, d, (lo, hi) in zip(in_sizes, out_sizes, kernel, stride, dilation, pads):
        r = (n + lo + hi - d * (k - 1) - 1) - (o - 1) * s
        trimmed.append((lo, hi - r))
    return trimmed


def correlation_weight_grad(inp, cot, *, kernel, stride, pads, dilation, groups, layout, transposed=False):
    """``sum_{n,o} inp[n, o*s + k*d - lo] cot[n, o]`` for every tap ``k``, per group.

    One conv in which the batch axis is contracted: ``inp``'s channels play the batch,
    its batch plays the features; ``cot`` is the kernel dilated by the stride; the
    window stride is the dilation. Returns the conv weight (``transposed=False``: NHWC
    ``(*k, C_in/g, C_out)``, NCHW ``(C_out, C_in/g, *k)``) or, with ``transposed=True``
    (inp = the transposed conv's output grad, cot = its input), its weight (NHWC
    ``(*k, C_in, C_out/g)``, NCHW ``(C_in, C_out/g, *k)``).
    """
    rank = len(kernel)
    sp = _spatial_letters(rank)
    trimmed = _trimmed_pads(_sizes(inp, layout), _sizes(cot, layout), kernel, stride, pads, dilation)
    if channels_last(layout):
        dn = ("C" + sp + "N", "I" + sp + "O", sp + ("CN" if transposed else "NC"))
    else:
        dn = ("CN" + sp, "IO" + sp, "CN" + sp)
    return lax.conv_general_dilated(inp, cot, window_strides=dilation, padding=trimmed, rhs_dilation=stride,
                                    dimension_numbers=dn, batch_group_count=groups)


def taps_weight_grad(inp, cot, *, kernel, stride, pads, dilation, groups, layout, transposed=False):
    """Same result as :func:`correlation_weight_grad`, as one dot product per kernel tap.

    For tap ``k`` the strided slice ``inp_padded[:, k*d :: s]`` (exactly as many rows as
    ``cot``) is contracted with ``cot`` over batch and space: a tall-skinny matrix
    product, which XLA:CPU runs at matmul speed where its batch-contracting conv is slow.
    """
    rank = len(kernel)
    last = channels_last(layout)
    out_sizes = _sizes(cot, layout)
    trimmed = _trimmed_pads(_sizes(inp, layout), out_sizes, kernel, stride, pads, dilation)
    # zero-pad low side; the (possibly negative) high side crops: lax.pad accepts both.
    cfg = [(0, 0, 0)] * inp.ndim
    for ax, (lo, hi) in zip(spatial_axes(inp.ndim, layout), trimmed):
        cfg[ax] = (lo, hi, 0)
    xp = lax.pad(inp, jnp.zeros((), inp.dtype), cfg)
    if not last:  # channels-last makes each tap's slice a (rows, C) matrix
        xp = jnp.moveaxis(xp, 1, -1)
        cot = jnp.moveaxis(cot, 1, -1)
    c_in, c_out = xp.shape[-1], cot.shape[-1]
    n = cot.shape[0]
    cot_g = cot.reshape(-1, groups, c_out // groups)
    taps = []
    for k in itertools.product(*[range(kk) for kk in kernel]):
        start = (0,) + tuple(kk * d for kk, d in zip(k, dilation)) + (0,)
        limit = (n,) + tuple(kk * d + (o - 1) * s + 1 for kk, d, o, s in zip(k, dilation, out_sizes, stride)) \
            + (c_in,)
        sl = lax.slice(xp, start, limit, (1,) + tuple(stride) + (1,))
        sl = sl.reshape(-1, groups, c_in // groups)
        # (rows, g, ci) x (rows, g, co) -> (g, ci, co), contracting rows, batching groups
        taps.append(lax.dot_general(sl, cot_g, (((0,), (0,)), ((1,), (1,)))))
    t = jnp.stack(taps).reshape(*kernel, groups, c_in // groups, c_out // groups)
    if transposed:
        # inp channels = the transposed conv's C_out; cot channels = its C_in.
        # t[..., g, co_t/g, ci_t/g] -> NHWC (*k, C_in, C_out/g): C_in index = g*ci_t/g + j.
        t = jnp.moveaxis(t, rank + 1, rank + 2).reshape(*kernel, c_out, c_in // groups)
        return t if last else jnp.moveaxis(t, tuple(range(rank)), tuple(range(2, rank + 2)))
    t = jnp.moveaxis(t, rank, rank + 1).reshape(*kernel, c_in // groups, c_out)
    return t if last else jnp.moveaxis(t, (rank, rank + 1), (1, 0))


def _weight_grad(method, **kw):
    if method == "auto":
        # measured on XLA:CPU (experiments/bench_backprop.py): a 1x1 kernel's weight grad is
        # one plain matmul and ~3x faster as "taps"; larger kernels favour the single conv
        method = "taps" if int(np.prod(kw["kernel"])) == 1 else "conv"
    if method == "conv":
        return correlation_weight_grad(**kw)
    if method == "taps":
        return taps_weight_grad(**kw)
    raise ValueError(f"weight_grad_method must be one of {WEIGHT_GRAD_METHODS}, got {method!r}")


def _prepare(x, dy, rank, layout):
    """Add the batch axis to unbatched (x, dy), as the forward ops accept them."""
    unbatched = x.ndim == rank + 1
    if unbatched:
        x, dy = x[None], dy[None]
    return x, dy, unbatched


def conv_backward(x, w, dy, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1,
                  padding_mode: str = "zeros", layout: str = "NHWC", weight_grad_method: str = "auto"):
    """Explicit VJP of ``jaxcnn.ops.conv``: returns ``(dx, dw, db)`` for output cotangent ``dy``.

    Takes the forward op's arguments (``b`` only decides nothing: ``db`` is always the
    summed ``dy``). Every stride (dividing or not), padding form, ``padding_mode``,
    dilation, groups (depthwise included), 1-3 spatial dims and both layouts.
    ``weight_grad_method``: "conv" (one batch-contracting conv), "taps" (a dot per tap) or
    "auto" (taps for 1x1 kernels, where it measured faster, else conv).
    """
    x, w, dy = jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy)
    rank = w.ndim - 2
    x, dy, unbatched = _prepare(x, dy, rank, layout)
    kernel, _, _ = kernel_geometry(w, layout)
    stride = positive_tuple(stride, rank, "stride", "conv_backward")
    dilation = positive_tuple(dilation, rank, "dilation", "conv_backward")
    pads = resolve_conv_padding(padding, kernel, stride, dilation, _sizes(x, layout), "conv_backward")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"conv_backward: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    dtype = jnp.result_type(x, w, dy)
    x, w, dy = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    inp, conv_pads = x, pads
    if padding_mode != "zeros":
        # the forward pads explicitly and convolves with no padding; mirror that
        inp = pad_spatial(x, pads, mode=padding_mode, layout=layout)
        conv_pads = [(0, 0)] * rank
    geo = dict(stride=stride, pads=conv_pads, dilation=dilation, groups=groups, layout=layout)
    dinp = conv_input_grad(dy, w, in_sizes=_sizes(inp, layout), **geo)
    dx = dinp if padding_mode == "zeros" else fold_padding(dinp, pads, padding_mode, layout)
    dw = _weight_grad(weight_grad_method, inp=inp, cot=dy, kernel=kernel, **geo)
    db = _bias_grad(dy, layout)
    return (dx[0] if unbatched else dx), dw, db


def conv_transpose_backward(x, w, dy, b=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                            groups: int = 1, layout: str = "NHWC", weight_grad_method: str = "auto"):
    """Explicit VJP of ``jaxcnn.ops.conv_transpose``: ``(dx, dw, db)`` for output cotangent ``dy``.

    ``conv_transpose`` is the adjoint of ``conv``: ``dx`` is the forward conv of ``dy``
    with the same weight (stride, padding ``(lo, hi - output_padding)``, dilation,
    groups), and ``dw`` correlates ``dy`` with ``x``.
    """
    x, w, dy = jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy)
    rank = w.ndim - 2
    x, dy, unbatched = _prepare(x, dy, rank, layout)
    kernel, _, _ = kernel_geometry(w, layout, transpose=True)
    stride = positive_tuple(stride, rank, "stride", "conv_transpose_backward")
    dilation = positive_tuple(dilation, rank, "dilation", "conv_transpose_backward")
    out_pad = ntuple(output_padding, rank, "output_padding", "conv_transpose_backward")
    pads = resolve_conv_padding(padding, kernel, stride, dilation, _sizes(x, layout), "conv_transpose_backward")
    dtype = jnp.result_type(x, w, dy)
    x, w, dy = x.astype(dtype), w.astype(dtype), dy.astype(dtype)
    # dy plays the input of the adjoint conv; output_padding rows were never read by it
    adj_pads = [(lo, hi - o) for (lo, hi), o in zip(pads, out_pad)]
    sp = _spatial_letters(rank)
    # the transposed-conv weight read directly as the adjoint conv's kernel:
    # NHWC (*k, C_in, C_out/g) is (*k, O, I); NCHW (C_in, C_out/g, *k) is (O, I, *k)
    dn = ("N" + sp + "C", sp + "OI", "N" + sp + "C") if channels_last(layout) else \
        ("NC" + sp, "OI" + sp, "NC" + sp)
    dx = lax.conv_general_dilated(dy, w, window_strides=stride, padding=adj_pads, rhs_dilation=dilation,
                                  dimension_numbers=dn, feature_group_count=groups)
    dw = _weight_grad(weight_grad_method, inp=dy, cot=x, kernel=kernel, stride=stride, pads=adj_pads,
                      dilation=dilation, groups=groups, layout=layout, transposed=True)
    db = _bias_grad(dy, layout)
    return (dx[0] if unbatched else dx), dw, db
