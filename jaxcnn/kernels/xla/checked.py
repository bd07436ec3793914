"""What a fast formulation of a conv-like op does before and after its own arithmetic:
the op's input checks, dtype and output shape on an abstract evaluation (bad input fails
with the op's own messages, at no cost), a batch axis for unbatched input, and the
geometry as tuples; then the bias and the batch axis removed again."""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ...ops.shapes import positive_tuple, resolve_conv_padding


class Checked(NamedTuple):
    x: jax.Array            # batched, in the op's result dtype
    w: jax.Array
    out: jax.ShapeDtypeStruct   # the op's result (shape as the caller passed x: maybe unbatched)
    unbatched: bool
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]


def check(op: Callable, name: str, x, w, b, *, stride, padding, dilation, **kwargs) -> Checked:
    """``op(x, w, b, stride=..., padding=..., dilation=..., **kwargs)``'s checks and result
    spec, and its inputs ready for a channels-last formulation."""
    out = jax.eval_shape(functools.partial(op, stride=stride, padding=padding, dilation=dilation, **kwargs), *[
        None if a is None else jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in (x, w, b)])
    rank = w.ndim - 2
    x, w = jnp.asarray(x, out.dtype), jnp.asarray(w, out.dtype)
    unbatched = x.ndim == rank + 1
    if unbatched:
        x = x[None]
    stride = positive_tuple(stride, rank, "stride", name)
    dilation = positive_tuple(dilation, rank, "dilation", name)
    pads = resolve_conv_padding(padding, w.shape[:rank], stride, dilation, x.shape[1:-1], name)
    return Checked(x, w, out, unbatched, tuple(stride), tuple(dilation), tuple(tuple(p) for p in pads))


def finish(y, b, checked: Checked):
    """Add the bias (if any) and drop the batch axis :func:`check` added."""
    if b is not None:
        y = y + jnp.asarray(b, checked.out.dtype)
    return y[0] if checked.unbatched else y
