"""Int8 convolution, matrix product and max pool on oneDNN's integer kernels.

XLA:CPU has no fast integer convolution: ``lax.conv_general_dilated`` of int8 operands
with ``preferred_element_type=int32`` ran fmnist_cnn's int8 inference 31x slower than
its float32 (docs/performance.md). oneDNN multiplies int8 by int8 on the CPU's VNNI
instructions and AMX int8 tiles and sums in int32, what PyTorch's x86 int8 backend uses.
The sums are exact integers, so :func:`conv_int8` and :func:`matmul_int8` return the
same int32 values as their lax counterparts (tests/test_kernels_onednn_int8.py).

:func:`conv_int8_fused` / :func:`matmul_int8_fused` run the same products with the work
that follows them inside oneDNN, as PyTorch's quantised kernels do: the int32 sums times a
per-output-channel float32 scale (oneDNN's runtime weights scale), an epilogue of
:data:`EPILOGUE_OPS` (bias, ReLU, per-channel binary ops, one residual tensor add) as
post-ops, and a float32 result or an int8 one quantised with a runtime scale (round half
to even of ``v * (1 / scale)``, saturated to [-128, 127]: ``compress.quantize``'s
integers). Their float32 operations are XLA's on the same integers, to float rounding (an
FMA). Without them XLA read each int32 result back and did that work in separate passes:
fmnist_cnn's int8 pass took 9.2 ms against PyTorch's 7.5 ms with 5.2 ms in oneDNN.
:func:`max_pool_int8` is ``lax.reduce_window_max`` on int8 through oneDNN's pooling (XLA's
int8 reduce_window is slower than its float32 one), exact.

Taken when (:func:`conv_applies` / :func:`matmul_applies` / :func:`max_pool_applies`): the
library loaded, int8 operands, the CPU platform, for the products a CPU on which they
are exact (VNNI or AMX, :func:`.isa.exact_int8`; the pool only compares, exact on any),
and for the convolution channels-last input ``(N, *spatial, C)``, a kernel ``(*kernel,
C/groups, O)``, 1-3 spatial dims, no input dilation and non-negative padding; for the matrix product ``(M, K) x (K, N)``; for the
pool a spatial window on channels-last input with padding inside the window. Otherwise
the callers (:func:`jaxcnn.compress.int8_apply`) keep lax's integer ops.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...ops.shapes import conv_output_size
from . import build, isa
from .conv import geometry_attribute, output_shape


# the custom calls that multiply (the max pool only compares, and is taken on any CPU)
PRODUCT_TARGETS = ("jaxcnn_onednn_conv_forward_s8", "jaxcnn_onednn_matmul_s8", "jaxcnn_onednn_conv_s8_fused",
                   "jaxcnn_onednn_matmul_s8_fused")


def calls_products(lowered_text: str) -> bool:
    """True when a lowered (StableHLO) program multiplies int8 on oneDNN: it calls one of
    :data:`PRODUCT_TARGETS`."""
    return any(f"@{target}(" in lowered_text for target in PRODUCT_TARGETS)


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def conv_applies(x, w, *, lhs_dilation=None, pads=()) -> bool:
    """True when :func:`conv_int8` runs oneDNN for int8 ``x`` (N, *spatial, C) and ``w``
    (*kernel, C/groups, O)."""
    if not (hasattr(x, "dtype") and hasattr(w, "dtype")) or x.dtype != jnp.int8 or w.dtype != jnp.int8:
        return False
    if not 3 <= x.ndim <= 5 or w.ndim != x.ndim or 0 in (*x.shape, *w.shape):
        return False
    if any(d != 1 for d in (lhs_dilation or ())) or any(lo < 0 or hi < 0 for lo, hi in pads):
        return False
    return _on_cpu() and build.load() and isa.exact_int8()


def matmul_applies(a, b) -> bool:
    """True when :func:`matmul_int8` runs oneDNN for int8 ``a`` (M, K) and ``b`` (K, N)."""
    if not (hasattr(a, "dtype") and hasattr(b, "dtype")) or a.dtype != jnp.int8 or b.dtype != jnp.int8:
        return False
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or 0 in (*a.shape, *b.shape):
        return False
    return _on_cpu() and build.load() and isa.exact_int8()


def conv_int8(x, w, *, stride, pads, dilation, groups: int = 1):
    """The int32 convolution of int8 ``x`` (N, *spatial, C) with int8 ``w`` (*kernel,
    C/groups, O): ``stride`` and ``dilation`` per spatial dim, ``pads`` a ``(lo, hi)``
    pair per spatial dim (zeros). Result ``(N, *out_spatial, O)`` int32. Only where
    :func:`conv_applies`."""
    stride, dilation = tuple(int(s) for s in stride), tuple(int(d) for d in dilation)
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    out = jax.ShapeDtypeStruct(output_shape(x, w, stride, pads, dilation), jnp.int32)
    return jax.ffi.ffi_call("jaxcnn_onednn_conv_forward_s8", out, vmap_method="sequential")(
        x, w, geometry=geometry_attribute(groups, stride, dilation, pads))


def matmul_int8(a, b):
    """``a @ b`` of int8 ``a`` (M, K) and ``b`` (K, N), as int32 (exact). Only where
    :func:`matmul_applies`."""
    out = jax.ShapeDtypeStruct((a.shape[0], b.shape[1]), jnp.int32)
    return jax.ffi.ffi_call("jaxcnn_onednn_matmul_s8", out, vmap_method="sequential")(a, b)


# The epilogue ops a fused product applies after its rescale, in order (conv.cc's
# EpilogueCode): "relu", a binary op with one float32 value per output channel, or
# "add_tensor" (at most one: adds a float32 tensor shaped like the result, a residual
# branch); "bias" (first only) adds its row through oneDNN's bias argument, cheaper than
# a binary "add".
EPILOGUE_OPS = {"relu": 0, "add": 1, "sub": 2, "mul": 3, "div": 4, "max": 5, "min": 6, "bias": 7, "add_tensor": 8}
_NO_ROW = ("relu", "add_tensor")


def _epilogue_operands(ops, vectors, scale, out_scale, tensor, result_shape):
    """(codes attribute, float32 scale (C,), vectors (per-channel ops, C), dst scale (1,),
    tensor) of a fused call; ValueError for an unknown op, a wrong number of vectors or a
    tensor that does not match its "add_tensor"."""
    channels = result_shape[-1]
    unknown = [op for op in ops if op not in EPILOGUE_OPS]
    if unknown:
        raise ValueError(f"fused int8: unknown epilogue ops {unknown}; choose from {sorted(EPILOGUE_OPS)}")
    if "bias" in ops[1:]:
        raise ValueError(f"fused int8: \"bias\" may only be the first epilogue op, got {tuple(ops)}")
    rows = sum(op not in _NO_ROW for op in ops)
    vectors = jnp.zeros((0, channels), jnp.float32) if vectors is None else jnp.asarray(vectors, jnp.float32)
    if vectors.shape != (rows, channels):
        raise ValueError(f"fused int8: vectors must be ({rows}, {channels}) for ops {tuple(ops)}, "
                         f"got {vectors.shape}")
    if ops.count("add_tensor") != (tensor is not None) or (tensor is not None and tuple(tensor.shape) != result_shape):
        raise ValueError(f"fused int8: one \"add_tensor\" takes a tensor shaped {result_shape}; got ops {tuple(ops)} "
                         f"and tensor {None if tensor is None else tuple(tensor.shape)}")
    tensor = jnp.zeros((0,), jnp.float32) if tensor is None else jnp.asarray(tensor, jnp.float32)
    dst_scale = jnp.ones((1,), jnp.float32) if out_scale is None else \
        jnp.reshape(jnp.asarray(out_scale, jnp.float32), (1,))
    codes = np.array([EPILOGUE_OPS[op] for op in ops], dtype=np.int64)
    return codes, jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (channels,)), vectors, dst_scale, tensor


def _fused_result(shape, out_scale):
    return jax.ShapeDtypeStruct(shape, jnp.float32 if out_scale is None else jnp.int8)


def conv_int8_fused(x, w, scale, ops=(), vectors=None, out_scale=None, *, stride, pads, dilation, groups: int = 1,
                    tensor=None):
    """:func:`conv_int8` with its epilogue inside oneDNN: the int32 sums times ``scale``
    (float32, one per output channel, or a scalar), then ``ops`` in order -- ``"relu"``,
    ``"add_tensor"`` (``v = v + tensor``, float32 shaped like the result) or a binary op of
    :data:`EPILOGUE_OPS` with the next row of ``vectors`` (float32, ``(per-channel ops,
    O)``: ``v = v op row[channel]``). Result float32 ``(N, *out_spatial, O)``;
    with ``out_scale`` (a float32 scalar) int8: ``clip(round_half_even(v * (1 /
    out_scale)), -128, 127)``, :func:`jaxcnn.compress.quantize.quantize`'s integers. Only
    where :func:`conv_applies`."""
    stride, dilation = tuple(int(s) for s in stride), tuple(int(d) for d in dilation)
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    shape = output_shape(x, w, stride, pads, dilation)
    codes, scale, vectors, dst_scale, tensor = _epilogue_operands(ops, vectors, scale, out_scale, tensor, shape)
    return jax.ffi.ffi_call("jaxcnn_onednn_conv_s8_fused", _fused_result(shape, out_scale), vmap_method="sequential")(
        x, w, scale, vectors, dst_scale, tensor, geometry=geometry_attribute(groups, stride, dilation, pads),
        epilogue=codes)


def matmul_int8_fused(a, b, scale, ops=(), vectors=None, out_scale=None, *, tensor=None):
    """:func:`matmul_int8` with its epilogue inside oneDNN (``scale``, ``ops``, ``vectors``,
    ``out_scale`` and ``tensor`` as in :func:`conv_int8_fused`, one value per column of
    ``b``): ``(M, N)`` float32, or int8 with ``out_scale``. Only where :func:`matmul_applies`."""
    shape = (a.shape[0], b.shape[1])
    codes, scale, vectors, dst_scale, tensor = _epilogue_operands(ops, vectors, scale, out_scale, tensor, shape)
    return jax.ffi.ffi_call("jaxcnn_onednn_matmul_s8_fused", _fused_result(shape, out_scale),
                            vmap_method="sequential")(a, b, scale, vectors, dst_scale, tensor, epilogue=codes)


def max_pool_applies(x, window, strides, padding, base_dilation=None, window_dilation=None) -> bool:
    """True when :func:`max_pool_int8` runs oneDNN for ``lax.reduce_window_max``'s arguments:
    int8 ``x`` (N, *spatial, C) with 1-3 spatial dims, a window, stride and dilation of 1 on
    the batch and channel axes, no base dilation, no padding there and spatial padding
    smaller than the (dilated) window (each window holds one real element)."""
    if not hasattr(x, "dtype") or x.dtype != jnp.int8 or not 3 <= x.ndim <= 5 or 0 in x.shape:
        return False
    wd = tuple(window_dilation or (1,) * x.ndim)
    if any(d != 1 for d in (base_dilation or ())) or len(window) != x.ndim or len(padding) != x.ndim:
        return False
    ends = (0, x.ndim - 1)
    if any(window[i] != 1 or strides[i] != 1 or wd[i] != 1 or tuple(padding[i]) != (0, 0) for i in ends):
        return False
    if any(max(lo, hi) >= wd[i] * (window[i] - 1) + 1 or min(lo, hi) < 0 for i, (lo, hi) in enumerate(padding)):
        return False
    return _on_cpu() and build.load()


def max_pool_int8(x, window, strides, padding, window_dilation=None):
    """``lax.reduce_window_max`` of int8 ``x`` (N, *spatial, C) on oneDNN's pooling (its
    arguments per axis, as the primitive takes them). Only where :func:`max_pool_applies`."""
    wd = tuple(int(d) for d in (window_dilation or (1,) * x.ndim))
    spatial = range(1, x.ndim - 1)
    out = [conv_output_size(x.shape[i], window[i], strides[i], tuple(padding[i]), wd[i]) for i in range(x.ndim)]
    attr = np.array([x.ndim - 2, *(window[i] for i in spatial), *(strides[i] for i in spatial),
                     *(wd[i] for i in spatial), *(padding[i][0] for i in spatial), *(padding[i][1] for i in spatial)],
                    dtype=np.int64)
    return jax.ffi.ffi_call("jaxcnn_onednn_max_pool_s8", jax.ShapeDtypeStruct(tuple(out), jnp.int8),
                            vmap_method="sequential")(x, window=attr)
