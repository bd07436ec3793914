"""Batch normalisation with running statistics.

Trainable ``weight``/``bias`` (gamma/beta) live in params; the running statistics live
in state -- Keras' "non-trainable params". ``train`` is chosen at apply time: batch
statistics and a state update when True, running statistics and the state unchanged
when False. ``momentum`` is torch's (new = (1-m)*old + m*batch; Keras' 0.99 is 0.01
here) and the running variance is updated with the unbiased batch variance.
"""
from __future__ import annotations

import contextlib
import contextvars

import jax.numpy as jnp

from ..backprop import dispatch as F
from ..ops.layout import channels_last
from ..ops.shapes import describe
from .base import leaf

# The axis that BatchNorm layers *built* inside ``sync_batch_norm`` average over. Read
# once at construction (never at trace time), so the built layer stays a pure function.
_DEFAULT_AXIS = contextvars.ContextVar("jaxcnn_batch_norm_axis", default=None)


@contextlib.contextmanager
def sync_batch_norm(axis_name: str | None):
    """Every ``BatchNorm`` constructed inside this block without an explicit
    ``axis_name`` averages its batch statistics over ``axis_name`` (torch's
    SyncBatchNorm). The train loop builds zoo models inside it under ``--parallel pmap``
    so that any model gets cross-device statistics without a per-builder option::

        with sync_batch_norm("batch"):
            model = models.create("resnet18")
    """
    token = _DEFAULT_AXIS.set(axis_name)
    try:
        yield
    finally:
        _DEFAULT_AXIS.reset(token)


def BatchNorm(momentum: float = 0.1, eps: float = 1e-5, use_scale: bool = True, use_bias: bool = True,
              axis_name=None, layout: str = "NHWC", name: str = "BatchNorm"):
    """torch.nn.BatchNorm{1,2,3}d. Works on (N, C) and (N, *spatial, C) inputs (NHWC)
    or (N, C, *spatial) (NCHW). ``axis_name`` averages batch statistics across a
    pmap/shard_map axis. Params: ``weight`` (ones), ``bias`` (zeros); state:
    ``running_mean`` (zeros), ``running_var`` (ones). Without ``axis_name`` the
    enclosing :func:`sync_batch_norm` block's axis (if any) is used."""
    if axis_name is None:
        axis_name = _DEFAULT_AXIS.get()
    meta = dict(type=name, kind="batch_norm", momentum=momentum, eps=eps, layout=layout, rf="pointwise")

    def channels(input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{name}: expected an input with a batch and a channel axis, got shape "
                             f"{describe(input_shape)}")
        return input_shape[-1] if channels_last(layout) or len(input_shape) == 2 else input_shape[1]

    def make_params(key, input_shape):
        c = channels(input_shape)
        params = {}
        if use_scale:
            params["weight"] = jnp.ones((c,), jnp.float32)
        if use_bias:
            params["bias"] = jnp.zeros((c,), jnp.float32)
        return params

    def make_state(input_shape):
        c = channels(input_shape)
        return {"running_mean": jnp.zeros((c,), jnp.float32), "running_var": jnp.ones((c,), jnp.float32)}

    def forward(params, state, x, train, key):
        y, mean, var = F.batch_norm(x, state["running_mean"], state["running_var"], params.get("weight"),
                                    params.get("bias"), train=train, momentum=momentum, eps=eps,
                                    axis_name=axis_name, layout=layout)
        new_state = {"running_mean": mean, "running_var": var} if train else state
        return y, new_state

    return leaf(name, meta, forward, make_params, make_state, stateful=True)
