"""An inference-mode BatchNorm folded into the convolution before it, run as one oneDNN
forward (:func:`.fused.conv_bias`: the folded bias, and a ReLU when one follows, as
oneDNN's post-ops).

In evaluation a BatchNorm is a per-channel affine map of its input with fixed numbers,
``(y - mean) * gamma / sqrt(var + eps) + beta``, so with ``scale = gamma / sqrt(var +
eps)`` the convolution ``y = conv(x, w) + b`` followed by it is one convolution::

    w' = w * scale            (over the weight's output-channel axis)
    b' = (b - mean) * scale + beta

computed when the program runs, from the current params and state (a few vectors and one
pass over the weight: nothing is precomputed or cached, so a changed running statistic
is always seen). The convolution's output is then written once, with no XLA pass reading
it back for the BatchNorm's arithmetic (nor for the ReLU).

Rounding: the fold is computed in at least float32 (float64 when a statistic or weight is
float64) and ``w'`` rounded once to the weight's dtype; the convolution then sums
products of ``w'`` instead of scaling a sum afterwards. That is the same result to float32
rounding (tests/test_fold_batch_norm.py compares with the unfused network in float64), but
not bit for bit the unfused one. The result dtype is the unfused one's (JAX's promotion of
the conv's and the BatchNorm's dtypes).

Where oneDNN does not take the folded convolution (:func:`.conv.applies` false, other
platforms, a float64 result) :func:`.fused.conv_bias` falls back exactly where
:func:`.fused.conv_relu` does: the folded convolution then runs as :func:`.conv.conv`
(lax's / "fast"'s convolution plus the bias), still one convolution and correct values.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ... import ops
from ...ops.layout import channels_last
from ...ops.shapes import describe
from .conv import conv
from .fused import conv_bias


def fold_batch_norm(w, b, running_mean, running_var, weight=None, bias=None, *, eps: float = 1e-5,
                    layout: str = "NHWC"):
    """``(w', b')`` such that ``ops.conv(x, w', b', ...)`` equals
    ``ops.batch_norm(ops.conv(x, w, b, ...), running_mean, running_var, weight, bias,
    train=False, eps=eps)`` for any batched ``x`` (module docstring). ``w`` is the conv's
    weight in ``layout``'s convention (output channels last for channels-last, first for
    channels-first); ``b``, ``weight`` and ``bias`` may be None (0, 1, 0). A statistic
    whose shape is not ``(C_out,)`` raises ``ValueError`` as ``ops.batch_norm`` would."""
    out_axis = w.ndim - 1 if channels_last(layout, "conv") else 0
    c_out = w.shape[out_axis]
    vectors = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, arr in vectors.items():
        if arr is not None and tuple(jnp.shape(arr)) != (c_out,):
            raise ValueError(f"batch_norm: {name} must have shape ({c_out},) for the {c_out} output channels of "
                             f"the convolution before it, got {describe(jnp.shape(arr))}")
    given = [a for a in (b, *vectors.values()) if a is not None]
    bias_dtype = jnp.result_type(*given)             # what the unfused BatchNorm's output promotes to
    dtype = jnp.result_type(jnp.float32, w, *given)  # fold in at least float32 (bfloat16 params)
    scale = lax.rsqrt(jnp.asarray(running_var, dtype) + eps)   # ops.batch_norm's rsqrt
    if weight is not None:
        scale = scale * jnp.asarray(weight, dtype)
    shift = (0 if b is None else jnp.asarray(b, dtype)) - jnp.asarray(running_mean, dtype)
    new_b = shift * scale + (0 if bias is None else jnp.asarray(bias, dtype))
    per_out = [1] * w.ndim
    per_out[out_axis] = c_out
    new_w = jnp.asarray(w, dtype) * scale.reshape(per_out)
    return new_w.astype(jnp.result_type(w)), new_b.astype(bias_dtype)


def conv_bn_eval(x, w, b, running_mean, running_var, weight=None, bias=None, *, eps: float = 1e-5,
                 relu: bool = False, stride=1, padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
                 layout: str = "NHWC"):
    """``[ops.relu](ops.batch_norm(ops.conv(x, w, b, ...), running_mean, running_var,
    weight, bias, train=False, eps=eps)[0])`` as one convolution with the BatchNorm folded
    into ``w`` and ``b`` (:func:`fold_batch_norm`) and the bias and ReLU as oneDNN
    post-ops (:func:`.fused.conv_bias`, with its fallbacks)."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  layout=layout)
    if jnp.ndim(x) < jnp.ndim(w) and not channels_last(layout, "conv"):
        # unbatched channels-first: ops.batch_norm's channel axis (1) is then a spatial axis
        # of the conv's output, not its channels -- nothing to fold; what unfused computes
        y = ops.batch_norm(conv(x, w, b, **kwargs), running_mean, running_var, weight, bias, eps=eps,
                           layout=layout)[0]
        return ops.relu(y) if relu else y
    new_w, new_b = fold_batch_norm(w, b, running_mean, running_var, weight, bias, eps=eps, layout=layout)
    return conv_bias(x, new_w, new_b, activation="relu" if relu else None, **kwargs)
