"""The one network protocol every training, inspection and gradcheck function accepts.

A :class:`Model` is a :class:`~jaxcnn.types.Layer` with metadata (a name, its natural
input shape, the number of classes, the hyper-parameters it was built with). Its
``init`` returns two values, ``(params, state)``, because the output shape is
metadata (``model.output_shape(input_shape)``); ``apply`` is the layer's. ``model.layer``
is the underlying 3-value Layer, usable in combinators.

:func:`as_model` turns anything trainable into a Model: a Model is returned as it is, a
Layer (e.g. ``serial(...)``) is wrapped, so ``create_train_state(serial(...), tx, key,
(1, 28, 28, 1))`` works as ``create_train_state(models.create("lenet5"), ...)`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax

from ..types import Layer, as_layer


@dataclass(frozen=True)
class Model:
    """A network with metadata.

    * ``layer``: the 3-value :class:`Layer` that computes it.
    * ``name``: a label for logs and summaries.
    * ``input_shape``: the natural input shape *without* the batch axis (NHWC), or
      ``None`` when the network accepts any (then ``init`` needs an explicit shape).
    * ``num_classes``: the width of the logits, when the network is a classifier.
    * ``hparams``: the keyword arguments it was built with (kept in run configs).

    ``init(key, input_shape=None) -> (params, state)``, ``apply(params, state, x, *,
    train=False, key=None, axis_name=None) -> (y, new_state)``; ``init, apply = model``
    unpacks like a stax pair.
    """

    layer: Layer
    name: str
    input_shape: tuple | None = None
    num_classes: int | None = None
    hparams: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.init, self.apply))

    def _shape(self, input_shape):
        if input_shape is not None:
            return tuple(int(s) for s in input_shape)
        if self.input_shape is None:
            raise ValueError(f"model {self.name!r} has no natural input shape: pass input_shape "
                             f"(with the batch axis, e.g. (1, 28, 28, 1))")
        return (1,) + tuple(self.input_shape)

    def init(self, key, input_shape=None) -> tuple[Any, Any]:
        """``(params, state)`` for ``input_shape`` (with batch axis; default: batch 1 of
        the natural input shape)."""
        _, params, state = self.layer.init(key, self._shape(input_shape))
        return params, state

    def apply(self, params, state, x, *, train: bool = False, key=None, axis_name=None):
        """``(y, new_state)``; ``train`` selects batch statistics and dropout; ``axis_name``
        averages batch statistics over a pmap / shard_map axis."""
        return self.layer.apply(params, state, x, train=train, key=key, axis_name=axis_name)

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


def as_model(network, input_shape=None, *, name: str | None = None, num_classes: int | None = None) -> Model:
    """``network`` as a :class:`Model`: a Model is returned unchanged; a :class:`Layer`
    is wrapped (``input_shape`` without the batch axis is its natural input, optional).

    Raises ``TypeError`` for anything else (e.g. a bare ``(init, apply)`` tuple of
    stax functions: wrap it as ``Layer(init, apply)``).
    """
    if isinstance(network, Model):
        return network
    layer = as_layer(network)
    return Model(layer, name or layer.name, tuple(input_shape) if input_shape is not None else None,
                 num_classes)


def count(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))
