"""Core types shared by every module.

A layer is a pair of pure functions over plain pytrees (see docs/protocol.md):

    init(key, input_shape) -> (output_shape, params, state)
    apply(params, state, x, *, train=False, key=None, axis_name=None) -> (y, new_state)

``init, apply = layer`` unpacks a Layer as in ``jax.example_libraries.stax``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import jax

Array = jax.Array
PRNGKey = jax.Array
Shape = tuple[int, ...]
Params = dict[str, Any]
State = dict[str, Any]


@dataclass(frozen=True, eq=False)
class Layer:
    """A named pair of pure functions: ``init`` builds parameters, ``apply`` runs.

    * ``init(key, input_shape) -> (output_shape, params, state)``; ``input_shape``
      includes the batch axis.
    * ``apply(params, state, x, *, train=False, key=None, axis_name=None) -> (y, new_state)``;
      ``train`` selects batch statistics and dropout, ``key`` is the dropout key and
      ``axis_name`` names the pmap / shard_map axis that batch statistics are averaged
      over (``None``: this device's batch only).

    ``meta`` is a static, read-only description used by the inspection tools
    (summary, receptive field, torch import): ``{"type": "Conv2d", ...hyper-parameters}``.
    It never influences what ``init``/``apply`` compute.

    ``init, apply = layer`` works as in stax; every training, inspection and gradcheck
    function also accepts a Layer wherever it accepts a :class:`jaxcnn.models.Model`
    (see :func:`jaxcnn.models.as_model`).
    """

    init: Callable[..., tuple[Shape, Params, State]]
    apply: Callable[..., tuple[Array, State]]
    name: str = "layer"
    meta: Optional[Mapping[str, Any]] = None

    def __iter__(self):
        # stax's ``init_fun, apply_fun = layer``
        return iter((self.init, self.apply))

    def __repr__(self) -> str:
        return f"Layer(name={self.name!r}, type={(self.meta or {}).get('type', self.name)!r})"


def as_layer(network) -> Layer:
    """The 3-value :class:`Layer` behind ``network``: a Layer itself, or a Model's ``.layer``.

    Raises ``TypeError`` naming what was given when it is neither.
    """
    if isinstance(network, Layer):
        return network
    layer = getattr(network, "layer", None)
    if isinstance(layer, Layer):
        return layer
    raise TypeError(f"expected a jaxcnn Layer (e.g. from serial(...)) or Model (from models.create), "
                    f"got {type(network).__name__}")
