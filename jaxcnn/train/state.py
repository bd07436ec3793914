"""The training state: one pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ..models.base import as_model


@flax.struct.dataclass
class TrainState:
    """``params`` (trainable), ``state`` (batch-norm running statistics, possibly empty),
    ``opt_state`` (optax) and ``step`` (int32 scalar, the number of updates applied)."""

    params: Any
    state: Any
    opt_state: Any
    step: jax.Array


def create_train_state(model, tx: optax.GradientTransformation, key, input_shape) -> TrainState:
    """Initialise ``model`` (a Model or a Layer, see :func:`jaxcnn.models.as_model`) for
    inputs of ``input_shape`` (batch included, NHWC) and ``tx``."""
    params, state = as_model(model).init(key, tuple(input_shape))
    return TrainState(params=params, state=state, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))


def abstract_train_state(model, tx: optax.GradientTransformation, input_shape) -> TrainState:
    """The shapes and dtypes of :func:`create_train_state`, computed without allocating."""
    return jax.eval_shape(lambda k: create_train_state(model, tx, k, input_shape), jax.random.PRNGKey(0))
