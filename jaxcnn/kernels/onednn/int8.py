"""Int8 x int8 -> int32 convolution and matrix product on oneDNN's integer kernels.

XLA:CPU has no fast integer convolution: ``lax.conv_general_dilated`` of int8 operands
with ``preferred_element_type=int32`` ran fmnist_cnn's int8 inference 31x slower than
its float32 (docs/performance.md). oneDNN multiplies int8 by int8 on the CPU's VNNI
instructions and AMX int8 tiles and sums in int32, what PyTorch's x86 int8 backend uses.
The sums are exact integers, so :func:`conv_int8` and :func:`matmul_int8` return the
same int32 values as their lax counterparts (tests/test_kernels_onednn_int8.py).

Taken when (:func:`conv_applies` / :func:`matmul_applies`): the library loaded, int8
operands, the CPU platform, and for the convolution channels-last input ``(N, *spatial,
C)``, a kernel ``(*kernel, C/groups, O)``, 1-3 spatial dims, no input dilation and
non-negative padding; for the matrix product ``(M, K) x (K, N)``. Otherwise the callers
(:func:`jaxcnn.compress.int8_apply`) keep lax's integer ops.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import build
from .conv import geometry_attribute


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
    return _on_cpu() and build.load()


def matmul_applies(a, b) -> bool:
    """True when :func:`matmul_int8` runs oneDNN for int8 ``a`` (M, K) and ``b`` (K, N)."""
    if not (hasattr(a, "dtype") and hasattr(b, "dtype")) or a.dtype != jnp.int8 or b.dtype != jnp.int8:
        return False
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or 0 in (*a.shape, *b.shape):
        return False
    return _on_cpu() and build.load()


def conv_int8(x, w, *, stride, pads, dilation, groups: int = 1):
    """The int32 convolution of int8 ``x`` (N, *spatial, C) with int8 ``w`` (*kernel,
    C/groups, O): ``stride`` and ``dilation`` per spatial dim, ``pads`` a ``(lo, hi)``
    pair per spatial dim (zeros). Result ``(N, *out_spatial, O)`` int32. Only where
    :func:`conv_applies`."""
    stride, dilation = tuple(int(s) for s in stride), tuple(int(d) for d in dilation)
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    spatial = []
    for i, (size, k) in enumerate(zip(x.shape[1:-1], w.shape[:-2])):
        span = dilation[i] * (k - 1) + 1
        spatial.append((size + pads[i][0] + pads[i][1] - span) // stride[i] + 1)
    out = jax.ShapeDtypeStruct((x.shape[0], *spatial, w.shape[-1]), jnp.int32)
    return jax.ffi.ffi_call("jaxcnn_onednn_conv_forward_s8", out, vmap_method="sequential")(
        x, w, geometry=geometry_attribute(groups, stride, dilation, pads))


def matmul_int8(a, b):
    """``a @ b`` of int8 ``a`` (M, K) and ``b`` (K, N), as int32 (exact). Only where
    :func:`matmul_applies`."""
    out = jax.ShapeDtypeStruct((a.shape[0], b.shape[1]), jnp.int32)
    return jax.ffi.ffi_call("jaxcnn_onednn_matmul_s8", out, vmap_method="sequential")(a, b)

