"""Batch normalisation with running statistics.

Trainable ``weight``/``bias`` (gamma/beta) live in params; the running statistics live
in state -- Keras' "non-trainable params". ``train`` is chosen at apply time: batch
statistics and a state update when True, running statistics and the state unchanged
when False. ``momentum`` is torch's (new = (1-m)*old + m*batch; Keras' 0.99 is 0.01
here) and the running variance is updated with the unbiased batch variance.
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import dispatch  # the ops as traced under the current backprop mode
from ..ops.layout import channels_last
from ..ops.shapes import describe
from . import fusion
from .base import leaf


def BatchNorm(momentum: float = 0.1, eps: float = 1e-5, use_scale: bool = True, use_bias: bool = True,
              axis_name=None, layout: str = "NHWC", name: str = "BatchNorm"):
    """torch.nn.BatchNorm{1,2,3}d. Works on (N, C) and (N, *spatial, C) inputs (NHWC)
    or (N, C, *spatial) (NCHW). ``axis_name`` averages batch statistics across a
    pmap/shard_map axis (torch's SyncBatchNorm). Params: ``weight`` (ones), ``bias``
    (zeros); state: ``running_mean`` (zeros), ``running_var`` (ones).

    ``axis_name`` is normally not given here: the train step passes its own axis to
    ``apply(..., axis_name=...)`` and every BatchNorm in the network averages over it, so
    where a network runs decides how it normalises, not how it was built. A name given
    here overrides the apply-time one."""
    built_axis = axis_name
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

    def forward(params, state, x, train, key, axis_name):
        y, mean, var = dispatch.batch_norm(x, state["running_mean"], state["running_var"], params.get("weight"),
                                    params.get("bias"), train=train, momentum=momentum, eps=eps,
                                    axis_name=built_axis or axis_name, layout=layout)
        new_state = {"running_mean": mean, "running_var": var} if train else state
        return y, new_state

    # registered: a Conv before it may fold it into its weights in evaluation (layers.fusion)
    return fusion.register_batch_norm(leaf(name, meta, forward, make_params, make_state, stateful=True), eps,
                                      layout)
