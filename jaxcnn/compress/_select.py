"""Which leaves of a params pytree the compression functions act on.

A *weight* is a leaf named ``weight`` of rank >= 2: the kernels of Conv, ConvTranspose
and Dense (``jaxcnn/layers/conv.py``). Biases and batch-norm scales (rank 1) are never
pruned, quantised or binarised. The output-channel ("filter") axis is the last one: NHWC
conv kernels are ``(*kernel, C_in/groups, C_out)``, dense kernels ``(in, out)``.
Networks built with ``layout="NCHW"`` keep ``C_out`` first and are not supported here.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

WEIGHT_NAME = "weight"
FILTER_AXIS = -1


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_name(path) -> str:
    """``("conv1", "weight")`` key path -> ``"conv1/weight"``."""
    return "/".join(_key_name(e) for e in path)


def is_weight(path, leaf) -> bool:
    """True for a conv / dense kernel: a leaf named ``weight`` with rank >= 2."""
    return bool(path) and _key_name(path[-1]) == WEIGHT_NAME and getattr(leaf, "ndim", 0) >= 2


def weights(params) -> dict[str, Any]:
    """``{"conv1/weight": array, ...}`` for every kernel, in pytree (sorted key) order."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if is_weight(path, leaf):
            out[path_name(path)] = leaf
    return out


def map_weights(fn: Callable, params, *rest, other: Callable | None = None):
    """``fn(name, weight, *rest_leaves)`` on every kernel, ``other(leaf, *rest_leaves)`` (default:
    the leaf unchanged) on the rest; returns a pytree with the structure of ``params``."""
    def visit(path, leaf, *more):
        if is_weight(path, leaf):
            return fn(path_name(path), leaf, *more)
        return leaf if other is None else other(leaf, *more)
    return jax.tree_util.tree_map_with_path(visit, params, *rest)


def require_weights(params, fn_name: str) -> dict[str, Any]:
    """:func:`weights`, or a ValueError when ``params`` holds no conv / dense kernel."""
    found = weights(params)
    if not found:
        leaves = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]][:6]
        raise ValueError(f"{fn_name}: params have no conv or dense weight (a leaf named 'weight' of rank >= 2) to "
                         f"compress; leaves: {leaves}")
    return found
