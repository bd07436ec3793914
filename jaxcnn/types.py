"""Core types shared by every module.

A layer is a pair of pure functions over plain pytrees (see ../shared/design.md):

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, train=False, key=None) -> (y, new_state)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax

Array = jax.Array
PRNGKey = jax.Array
Shape = tuple[int, ...]
Params = dict[str, Any]
State = dict[str, Any]


class Layer(NamedTuple):
    """A named pair of pure functions: ``init`` builds parameters, ``apply`` runs.

    ``meta`` is a static, read-only description used by the inspection tools
    (summary, receptive field, torch import): ``{"type": "Conv2d", ...hyper-parameters}``.
    It never influences what ``init``/``apply`` compute.
    """

    init: Callable[..., tuple[Shape, Params, State]]
    apply: Callable[..., tuple[Array, State]]
    name: str = "layer"
    meta: Optional[Mapping[str, Any]] = None
