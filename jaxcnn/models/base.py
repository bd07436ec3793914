"""The model wrapper returned by ``models.create``.

A model is a Layer with a two-value ``init``: ``init(key, input_shape) -> (params,
state)`` (the output shape is ``model.output_shape(input_shape)``); ``apply`` is the
layer's. ``model.layer`` is the underlying 3-value Layer, usable in combinators.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax

from ..types import Layer


@dataclass(frozen=True)
class Model:
    layer: Layer
    name: str
    input_shape: tuple            # natural input shape, without the batch axis (NHWC)
    num_classes: int | None = None
    hparams: dict = field(default_factory=dict)

    def _shape(self, input_shape):
        if input_shape is None:
            return (1,) + tuple(self.input_shape)
        return tuple(int(s) for s in input_shape)

    def init(self, key, input_shape=None) -> tuple[Any, Any]:
        """``(params, state)`` for ``input_shape`` (with batch axis; default: batch 1 of
        the natural input shape)."""
        _, params, state = self.layer.init(key, self._shape(input_shape))
        return params, state

    def apply(self, params, state, x, *, train: bool = False, key=None):
        """``(y, new_state)``; ``train`` selects batch statistics and dropout."""
        return self.layer.apply(params, state, x, train=train, key=key)

    def output_shape(self, input_shape=None) -> tuple:
        """Output shape for ``input_shape`` computed without allocating parameters."""
        shape, box = self._shape(input_shape), []

        def shapes_only(k):
            out, params, state = self.layer.init(k, shape)
            box.append(out)  # a static Python tuple, read after tracing
            return params, state
        jax.eval_shape(shapes_only, jax.random.PRNGKey(0))
        return box[0]

    def param_shapes(self, input_shape=None):
        """``(params, state)`` as ShapeDtypeStructs (``jax.eval_shape`` of init)."""
        return jax.eval_shape(lambda k: self.init(k, self._shape(input_shape)), jax.random.PRNGKey(0))

    @property
    def meta(self):
        return self.layer.meta


def count(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    import math
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))
