"""Output-shape formulas (the seeds' formulas) and argument normalisation.

    conv:            H_out = floor((H + lo + hi - d*(k-1) - 1) / s) + 1
                     (= floor((H + 2P - K)/S + 1) for d = 1, symmetric P)
    transposed conv: H_out = (H - 1)*s - lo - hi + d*(k-1) + output_padding + 1
    pooling:         the conv formula, or with ``ceil_mode`` the ceiling, dropping a
                     last window that would start inside the right padding (torch).
These are used by layers to compute shapes and by every op's error messages.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def ntuple(value, n: int, name: str, op: str) -> tuple[int, ...]:
    """Broadcast an int to an n-tuple, or check a sequence has length n."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    try:
        values = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a sequence of {n} ints, got {value!r}") from None
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{op}: {name} must have {n} entries for {n} spatial dims, got {value!r}")
    return values


def positive_tuple(value, n: int, name: str, op: str) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``n``) as an ``n``-tuple of ints >= 1;
    ``ValueError`` naming ``op`` and ``name`` otherwise."""
    values = ntuple(value, n, name, op)
    if any(v < 1 for v in values):
        raise ValueError(f"{op}: {name} must be positive, got {value!r}")
    return values


def conv_output_size(size: int, kernel: int, stride: int = 1, pad: tuple[int, int] | int = 0,
                     dilation: int = 1) -> int:
    """floor((size + lo + hi - dilation*(kernel-1) - 1)/stride) + 1."""
    lo, hi = (pad, pad) if isinstance(pad, int) else pad
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, pad: tuple[int, int] | int = 0,
                               dilation: int = 1, output_padding: int = 0) -> int:
    """(size - 1)*stride - lo - hi + dilation*(kernel-1) + output_padding + 1."""
    lo, hi = (pad, pad) if isinstance(pad, int) else pad
    return (size - 1) * stride - lo - hi + dilation * (kernel - 1) + output_padding + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """torch's pooling output size, including the ceil_mode rule."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        # torch: the last window must start inside the input or the left padding.
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = span // stride + 1
    return out


def resolve_conv_padding(padding, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                         in_sizes: Sequence[int], op: str) -> list[tuple[int, int]]:
    """Turn any accepted padding spec into explicit ``(lo, hi)`` pairs per spatial dim.

    Accepts an int, per-dimension ints, per-dimension ``(lo, hi)`` pairs, or the strings
    ``"valid"``, ``"same"`` (TF-style for stride > 1: output = ceil(input/stride), extra
    padding on the high side, as torch does for stride 1), ``"full"`` and ``"causal"``
    (1-D only: all ``dilation*(k-1)`` padding on the left).
    """
    n = len(kernel)
    eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return [(0, 0)] * n
        if mode == "same":
            pads = []
            for size, e, s in zip(in_sizes, eff, stride):
                out = -(-size // s)
                total = max((out - 1) * s + e - size, 0)
                pads.append((total // 2, total - total // 2))
            return pads
        if mode == "full":
            return [(e - 1, e - 1) for e in eff]
        if mode == "causal":
            if n != 1:
                raise ValueError(f"{op}: padding='causal' is only defined for 1-D convolution, got {n}-D")
            return [(eff[0] - 1, 0)]
        raise ValueError(f"{op}: padding must be an int, a tuple, or one of 'valid', 'same', 'full', "
                         f"'causal'; got {padding!r}")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        pads = [(int(padding), int(padding))] * n
    else:
        try:
            items = list(padding)
        except TypeError:
            raise TypeError(f"{op}: padding must be an int, a sequence or a string, got {padding!r}") from None
        if len(items) == 1 and n > 1:
            items = items * n
        if len(items) != n:
            raise ValueError(f"{op}: padding needs {n} entries (one per spatial dim), got {padding!r}")
        pads = []
        for item in items:
            if isinstance(item, (int, np.integer)):
                pads.append((int(item), int(item)))
            else:
                lo, hi = item
                pads.append((int(lo), int(hi)))
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return pads


def describe(shape) -> str:
    """A shape as Python writes a tuple: ``(7,)`` for one axis, ``(2, 3)`` otherwise."""
    items = [str(s) for s in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
