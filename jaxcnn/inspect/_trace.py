"""Trace a model once, abstractly, and return what every leaf layer saw.

Shared by summary, receptive_field and interop: shapes come from ``jax.eval_shape``
(no parameter or activation is allocated) and the data flow from the recorded calls.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..layers.base import recording
from ..types import as_layer


def trace(model, input_shape):
    """``(param_shapes, state_shapes, records, output_shape)`` for a batched input shape."""
    layer = as_layer(model)
    input_shape = tuple(int(s) for s in input_shape)
    box = []

    def init(k):
        out, p, s = layer.init(k, input_shape)
        box.append(out)
        return p, s

    params, state = jax.eval_shape(init, jax.random.PRNGKey(0))
    with recording() as records:
        y = jax.eval_shape(lambda p, s, x: layer.apply(p, s, x, train=False)[0], params, state,
                           jax.ShapeDtypeStruct(input_shape, jnp.float32))
        # Records hold tracers; keep only what is needed after tracing ends.
        records = list(records)
    return params, state, records, tuple(y.shape)


def subtree(tree, path):
    """The entry of a nested dict at ``path``, or ``{}`` when absent."""
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return {}
        tree = tree[name]
    return tree
