"""Uniform integer quantisation with torch's observer semantics.

Observers (:func:`minmax`) record the running min / max of a tensor (per tensor, or per
channel along ``axis``); :func:`qparams` turns them into ``(scale, zero_point)`` exactly as
``torch.ao.quantization.MinMaxObserver`` / ``PerChannelMinMaxObserver`` do for ``qint8``
(range ``[-2**(bits-1), 2**(bits-1) - 1]``, i.e. -128..127 for 8 bits):

* symmetric: ``scale = max(-min_neg, max_pos) / ((qmax - qmin) / 2)``, ``zero_point = 0``;
* affine: ``scale = (max_pos - min_neg) / (qmax - qmin)``,
  ``zero_point = clamp(qmin - round(min_neg / scale), qmin, qmax)``;

with ``min_neg = min(min, 0)``, ``max_pos = max(max, 0)`` and ``scale >= float32 eps``.
:func:`fake_quant` is ``torch.fake_quantize_per_{tensor,channel}_affine``:
``(clamp(round(x * (1 / scale)) + zero_point, qmin, qmax) - zero_point) * scale`` in float32,
rounding half to even. :func:`fake_quant_ste` is the same forward with the straight-through
gradient (1 inside the representable range, 0 where clamped: torch's FakeQuantize).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._select import FILTER_AXIS, map_weights, require_weights

SCHEMES = ("per_channel_symmetric", "per_channel_affine", "per_tensor_symmetric", "per_tensor_affine")
_EPS = np.finfo(np.float32).eps


class QParams(NamedTuple):
    scale: jax.Array        # float32, () per tensor or (C,) per channel
    zero_point: jax.Array   # int32, same shape
    bits: int
    axis: int | None        # the channel axis of the tensor these belong to (None: per tensor)


def qrange(bits: int) -> tuple[int, int]:
    """Signed integer range for ``bits`` (torch's qint8 for 8: -128, 127)."""
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"quantize: bits must be an integer in [2, 8], got {bits!r}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def check_scheme(scheme: str, fn_name: str) -> tuple[bool, bool]:
    """``(per_channel, symmetric)`` of a scheme name, or a ValueError naming the choices."""
    if scheme not in SCHEMES:
        raise ValueError(f"{fn_name}: scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return scheme.startswith("per_channel"), scheme.endswith("symmetric")


def minmax(x, axis: int | None = None, previous: tuple | None = None) -> tuple[jax.Array, jax.Array]:
    """``(min, max)`` of ``x`` over everything (``axis=None``) or per slice along ``axis``,
    combined with a ``previous`` observation (a running MinMax observer over batches)."""
    x = jnp.asarray(x, jnp.float32)
    if axis is None:
        lo, hi = jnp.min(x), jnp.max(x)
    else:
        moved = jnp.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
        lo, hi = moved.min(axis=1), moved.max(axis=1)
    if previous is not None:
        lo, hi = jnp.minimum(lo, previous[0]), jnp.maximum(hi, previous[1])
    return lo, hi


def _exact_div(x, divisor):
    """``x / divisor`` rounded as IEEE division (torch's): XLA on CPU turns a division by a
    constant into a multiplication by its reciprocal, one ulp off; the barrier stops that."""
    return x / jax.lax.optimization_barrier(jnp.full(x.shape, divisor, x.dtype))


def qparams(min_val, max_val, bits: int = 8, symmetric: bool = True, axis: int | None = None) -> QParams:
    """torch's ``_calculate_qparams`` for a signed ``bits``-bit integer (see the module doc)."""
    qmin, qmax = qrange(bits)
    min_neg = jnp.minimum(jnp.asarray(min_val, jnp.float32), 0.0)
    max_pos = jnp.maximum(jnp.asarray(max_val, jnp.float32), 0.0)
    if symmetric:
        scale = jnp.maximum(_exact_div(jnp.maximum(-min_neg, max_pos), (qmax - qmin) / 2), _EPS)
        zero_point = jnp.zeros(scale.shape, jnp.int32)
    else:
        scale = jnp.maximum(_exact_div(max_pos - min_neg, qmax - qmin), _EPS)
        zero_point = jnp.clip(qmin - jnp.round(min_neg / scale).astype(jnp.int32), qmin, qmax)
    return QParams(scale, zero_point, bits, axis)


def observe(x, bits: int = 8, scheme: str = "per_channel_symmetric", axis: int = FILTER_AXIS) -> QParams:
    """Observer + qparams in one call: ``per_channel_*`` along ``axis``, ``per_tensor_*`` over all."""
    per_channel, symmetric = check_scheme(scheme, "observe")
    ax = (axis % x.ndim) if per_channel else None
    return qparams(*minmax(x, ax), bits=bits, symmetric=symmetric, axis=ax)


def _broadcast(v, q: QParams, ndim: int):
    if q.axis is None:
        return v
    shape = [1] * ndim
    shape[q.axis] = -1
    return v.reshape(shape)


def quantize(x, q: QParams) -> jax.Array:
    """The integers (int8) ``clamp(round(x * (1 / scale)) + zero_point, qmin, qmax)``."""
    qmin, qmax = qrange(q.bits)
    inv = _broadcast(1.0 / q.scale, q, x.ndim)
    zp = _broadcast(q.zero_point, q, x.ndim).astype(jnp.float32)
    return jnp.clip(jnp.round(x * inv) + zp, qmin, qmax).astype(jnp.int8)


def dequantize(ints, q: QParams, dtype=jnp.float32) -> jax.Array:
    """``(ints - zero_point) * scale``."""
    zp = _broadcast(q.zero_point, q, ints.ndim)
    return ((ints.astype(jnp.int32) - zp).astype(jnp.float32) * _broadcast(q.scale, q, ints.ndim)).astype(dtype)


def fake_quant(x, q: QParams) -> jax.Array:
    """Quantise then dequantise (torch.fake_quantize_per_{tensor,channel}_affine's values)."""
    return dequantize(quantize(x, q), q, x.dtype)


def fake_quant_ste(x, q: QParams) -> jax.Array:
    """:func:`fake_quant` forward; straight-through gradient: 1 where ``round(x / scale) +
    zero_point`` lies in ``[qmin, qmax]``, 0 where it is clamped (torch's FakeQuantize mask)."""
    qmin, qmax = qrange(q.bits)
    q = q._replace(scale=jax.lax.stop_gradient(q.scale), zero_point=jax.lax.stop_gradient(q.zero_point))
    xs = jax.lax.stop_gradient(x)
    level = jnp.round(xs * _broadcast(1.0 / q.scale, q, x.ndim)) + _broadcast(q.zero_point, q, x.ndim)
    inside = ((level >= qmin) & (level <= qmax)).astype(x.dtype)
    # (x - stop_gradient(x)) is 0 forward and has derivative 1: the gradient is exactly `inside`
    return fake_quant(xs, q) + (x - xs) * inside


def fake_quantize(params, bits: int = 8, scheme: str = "per_channel_symmetric", *, ste: bool = False) -> Any:
    """Every conv and dense weight of ``params`` quantised to ``bits`` and dequantised, with
    scales / zero points from the weight itself (per output channel or per tensor, torch's
    observers); other leaves unchanged. ``ste=True`` uses the straight-through gradient
    (quantisation-aware training). Raises ValueError when ``params`` has no conv/dense weight."""
    check_scheme(scheme, "fake_quantize")
    qrange(bits)
    require_weights(params, "fake_quantize")
    fq = fake_quant_ste if ste else fake_quant

    def one(_, w):
        return fq(w, observe(jax.lax.stop_gradient(w), bits, scheme))
    return map_weights(one, params)


def quantize_weights(params, bits: int = 8, scheme: str = "per_channel_symmetric") -> dict[str, tuple]:
    """``{"conv1/weight": (int8 array, QParams), ...}``: the integers a compressed checkpoint
    stores (:mod:`.storage`) and the int8 inference path multiplies."""
    check_scheme(scheme, "quantize_weights")
    out = {}
    for name, w in require_weights(params, "quantize_weights").items():
        q = observe(w, bits, scheme)
        out[name] = (quantize(w, q), q)
    return out
