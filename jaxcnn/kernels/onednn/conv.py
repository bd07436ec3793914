"""Convolution whose forward, input gradient and weight gradient are oneDNN's kernels.

XLA:CPU computes a convolution's weight gradient by transposing its input to
(C, *spatial, N) and running a convolution at about half its forward's rate; on
fmnist_cnn's 32 -> 32 3x3 layer (batch 128, 28x28) forward + VJP took 60.1 ms against
oneDNN's 37.8 ms, on MobileNetV2's depthwise layers 11-13x longer
(experiments/bench_conv_onednn.py, docs/performance.md).
PyTorch runs the same oneDNN kernels, which is most of why its CPU train step was
faster. Here each pass is an XLA FFI custom call into oneDNN (``conv.cc``, built on
first use by :mod:`.build`), tied together by a ``custom_vjp``; an input gradient
nobody needs (a first layer's) is dropped by XLA like any unused result.

Taken when (:func:`applies`): the library loaded, float32 or bfloat16 (input and kernel
of the same dtype; bfloat16 only on a CPU with native bfloat16, :mod:`.isa`),
channels-last layout, zero padding mode, 1-3 spatial dimensions.
bfloat16 (``make_train_step(precision="bf16")``) runs oneDNN's bfloat16 kernels (AMX or
AVX512-BF16 where the CPU has them) with float32 accumulation; its results and gradients
are bfloat16, the weight gradient rounded once from float32. Anything else -- float64
(the gradient tests' precision), mixed dtypes, NCHW, reflect/circular padding -- goes to
the convolution "auto" used before (:func:`jaxcnn.kernels.xla.conv`). On a platform
other than CPU the custom calls are never lowered: ``lax.platform_dependent`` puts
XLA's own convolution (and its autodiff) in their place.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ... import ops
from ...ops.layout import channels_last
from ...ops.shapes import conv_output_size
from ..xla.checked import check, finish
from ..xla.conv import conv as fast_conv, lax_conv
from . import build, isa


def geometry_attribute(groups, stride, dilation, pads) -> np.ndarray:
    """conv.cc's geometry attribute: [groups, rank, stride, dilation, pad_lo, pad_hi]."""
    return np.array([groups, len(stride), *stride, *dilation, *(lo for lo, _ in pads), *(hi for _, hi in pads)],
                    dtype=np.int64)


DTYPES = (jnp.float32, jnp.bfloat16)


def _call(target, result_shape, a, b, geometry):
    if a.dtype == jnp.bfloat16:
        target += "_bf16"
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(result_shape, a.dtype),
                            vmap_method="sequential")(a, b, geometry=geometry)


def output_shape(x, w, stride, pads, dilation) -> tuple:
    """``(N, *out_spatial, C_out)`` of a convolution of ``x`` (N, *spatial, C) with ``w``
    (``(*kernel, C_in/groups, C_out)``): the custom calls' result shape, by arithmetic."""
    spatial = [conv_output_size(size, k, stride[i], pads[i], dilation[i])
               for i, (size, k) in enumerate(zip(x.shape[1:-1], w.shape[:-2]))]
    return (x.shape[0], *spatial, w.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, geo):   # geo: (stride, pads, dilation, groups), lax_conv's order
    stride, pads, dilation, groups = geo
    return lax.platform_dependent(
        x, w, default=lambda x, w: lax_conv(x, w, *geo),
        cpu=lambda x, w: _call("jaxcnn_onednn_conv_forward", output_shape(x, w, stride, pads, dilation), x, w,
                               geometry_attribute(groups, stride, dilation, pads)))


def _conv_fwd(x, w, geo):
    return _conv(x, w, geo), (x, w)


def _conv_bwd(geo, residuals, dy):
    x, w = residuals
    stride, pads, dilation, groups = geo
    attr = geometry_attribute(groups, stride, dilation, pads)

    def other(x, w, dy):
        return jax.vjp(lambda x, w: lax_conv(x, w, *geo), x, w)[1](dy)

    def cpu(x, w, dy):
        return (_call("jaxcnn_onednn_conv_input_grad", x.shape, dy, w, attr),
                _call("jaxcnn_onednn_conv_weight_grad", w.shape, x, dy, attr))
    return lax.platform_dependent(x, w, dy, cpu=cpu, default=other)


_conv.defvjp(_conv_fwd, _conv_bwd)


def applies(x, w, layout: str = "NHWC", padding_mode: str = "zeros") -> bool:
    """True when :func:`conv` runs oneDNN for these arguments: the library loads, and
    non-empty float32 or bfloat16 (both of one dtype; bfloat16 where the CPU has it,
    :func:`.isa.bfloat16`) channels-last input with 1-3 spatial dims and zero padding mode."""
    if not (hasattr(x, "shape") and hasattr(w, "shape")) or not channels_last(layout) or padding_mode != "zeros":
        return False
    dtype = jnp.result_type(x, w)
    if not 3 <= w.ndim <= 5 or dtype not in DTYPES or 0 in (*x.shape, *w.shape):
        return False
    if dtype == jnp.bfloat16 and not (jnp.result_type(x) == jnp.result_type(w) == jnp.bfloat16 and isa.bfloat16()):
        return False
    return build.load()


def conv(x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
         layout: str = "NHWC"):
    """``jaxcnn.ops.conv`` (same signature, values and errors) with oneDNN's three passes
    where :func:`applies`, else :func:`jaxcnn.kernels.xla.conv`."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  layout=layout)
    if not applies(x, w, layout, padding_mode):
        return fast_conv(x, w, b, **kwargs)
    c = check(ops.conv, "conv", x, w, b, **kwargs)
    if c.out.dtype not in DTYPES:           # e.g. a float64 bias promotes the result
        return fast_conv(x, w, b, **kwargs)
    y = _conv(c.x, c.w, (c.stride, c.pads, c.dilation, groups))
    return finish(y, b, c)
