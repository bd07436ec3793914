"""Depthwise convolution as shifted multiply-adds (an XLA-CPU fast path).

A depthwise conv (``groups == C_in == C_out``) is, per channel, a sum over the kernel's
taps of the input shifted by that tap and scaled by that tap's weight:

    y[n, i, c] = sum_k x_pad[n, i*s + k*d, c] * w[k, c]

XLA's CPU backend runs grouped convolutions with one group per channel slowly (and
their backward passes slower still); written as ``prod(kernel)`` strided slices and
elementwise multiply-adds, autodiff's backward is also slices and multiply-adds. The
speed-up is measured in ``experiments/bench_depthwise.py``; :func:`jaxcnn.kernels.xla.conv`
takes this path only on the CPU backend and only where that benchmark showed it faster
(:func:`use_shifted_depthwise`). Set ``JAXCNN_SHIFTED_DEPTHWISE=0`` to switch it off.
"""
from __future__ import annotations

import itertools

import jax
from jax import lax

from ... import config
from ...ops.layout import channels_last, spatial_axes


def use_shifted_depthwise(c_in_per_group: int, c_out: int, groups: int) -> bool:
    """True where :func:`jaxcnn.kernels.xla.conv` should take the shifted multiply-add path: a depthwise conv
    with channel multiplier 1 (one input and one output channel per group) on the CPU
    backend, not switched off by the environment. Read at trace time; the result is a
    pure function either way."""
    if not config.flag("JAXCNN_SHIFTED_DEPTHWISE"):
        return False
    return groups > 1 and c_in_per_group == 1 and c_out == groups and jax.default_backend() == "cpu"


def depthwise_shifted(x, w, *, stride, pads, dilation, layout: str):
    """Depthwise conv of a batched ``x`` (zero padding ``pads`` as (lo, hi) pairs);
    equals ``lax.conv_general_dilated(..., feature_group_count=C)``."""
    rank = w.ndim - 2
    axes = spatial_axes(x.ndim, layout)
    config = [(0, 0, 0)] * x.ndim
    for a, (lo, hi) in zip(axes, pads):
        config[a] = (lo, hi, 0)
    x = lax.pad(x, lax.convert_element_type(0, x.dtype), config)
    if channels_last(layout):
        kernel = w.shape[:rank]
        taps = w[..., 0, :]                                  # (*kernel, C)
    else:
        kernel = w.shape[2:]
        taps = jax.numpy.moveaxis(w[:, 0], 0, -1)           # (*kernel, C)
    out = [(x.shape[a] - d * (k - 1) - 1) // s + 1 for a, k, s, d in zip(axes, kernel, stride, dilation)]
    y = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        start, limit, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
        for a, t, s, d, o in zip(axes, tap, stride, dilation, out):
            start[a], limit[a], strides[a] = t * d, t * d + (o - 1) * s + 1, s
        weight = taps[tap]                                   # (C,)
        if not channels_last(layout):
            weight = weight.reshape((-1,) + (1,) * rank)
        term = lax.slice(x, start, limit, strides) * weight
        y = term if y is None else y + term
    return y
