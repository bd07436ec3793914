"""Core types shared by every module.

A layer is a pair of pure functions over plain pytrees (see ../shared/design.md):

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, train=False, key=None) -> (y, new_state)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

Array = jax.Array
PRNGKey = jax.Array
Shape = tuple[int, ...]
Params = dict[str, Any]
State = dict[str, Any]


class Layer(NamedTuple):
    """A named pair of pure functions: ``init`` builds parameters, ``apply`` runs."""

    init: Callable[..., tuple[Shape, Params, State]]
    apply: Callable[..., tuple[Array, State]]
    name: str = "layer"
