"""custom_vjp twins of the ops: the forward is the op itself (same numbers), the backward
is this package's explicit one. Collected in :data:`TWINS` (op name -> twin), which
:mod:`jaxcnn.dispatch` calls under ``backprop_mode("explicit")``, so layers built on
``dispatch.<op>`` train with them.

Every argument that is not a differentiable array (stride, padding, layout, flags...)
is frozen into a hashable tuple and passed as a ``nondiff_argnums`` static argument.
Arguments are bound with the op's own signature, so a twin accepts exactly what the
op accepts, positionally or by keyword.
"""
from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from .. import ops
from ..ops.checks import as_float_array

from .activations import ELEMENTWISE, activation_backward
from .conv import conv_backward, conv_transpose_backward
from .dense import dense_backward
from .losses import cross_entropy_backward, mse_loss_backward
from .norm import batch_norm_backward
from .pool import (adaptive_avg_pool_backward, adaptive_max_pool_backward, avg_pool_backward,
                   global_avg_pool_backward, global_max_pool_backward, lp_pool_backward, max_pool_backward)
from .resample import max_unpool_backward, upsample_backward

TWINS: dict = {}


def register(name: str):
    """Decorator: record ``fn`` in :data:`TWINS` as the explicit-backward twin of ``jaxcnn.ops.<name>``."""
    def deco(fn):
        TWINS[name] = fn
        return fn
    return deco


def _freeze(v):
    """Hashable form of a static argument (lists -> tuples, arrays of ints -> tuples)."""
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(i) for i in v)
    if isinstance(v, np.ndarray):
        return _freeze(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    return v


def _cast_like(g, primal):
    if primal is None or g is None:
        return None
    return jnp.asarray(g).astype(primal.dtype).reshape(primal.shape)


def make_twin(op, arrays, backward, float_arrays=None):
    """Build the custom_vjp twin of ``op``.

    ``arrays``: names of the op's array arguments (traced; None allowed). ``float_arrays``
    (default: all of ``arrays``) are differentiated; the others (labels) get no cotangent.
    ``backward(a: dict, dy, cfg: dict) -> tuple`` returns one gradient per name in
    ``float_arrays``.
    """
    sig = inspect.signature(op)
    float_arrays = tuple(arrays if float_arrays is None else float_arrays)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def core(cfg, *vals):
        return op(**dict(cfg), **dict(zip(arrays, vals)))

    def fwd(cfg, *vals):
        return core(cfg, *vals), vals

    def bwd(cfg, vals, dy):
        a = dict(zip(arrays, vals))
        grads = dict(zip(float_arrays, backward(a, dy, dict(cfg))))
        return tuple(_cast_like(grads[n], a[n]) if n in grads else None for n in arrays)

    core.defvjp(fwd, bwd)

    @functools.wraps(op)
    def twin(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        vals = []
        for n in arrays:
            v = bound.arguments[n]
            if v is not None and n in float_arrays:
                v = as_float_array(v, op.__name__, n)
            vals.append(v)
        cfg = tuple((k, _freeze(v)) for k, v in bound.arguments.items() if k not in arrays)
        return core(cfg, *vals)

    return twin


# -- convolution ---------------------------------------------------------------------------
def _conv_bwd(a, dy, cfg):
    return conv_backward(a["x"], a["w"], dy, **cfg)


def _conv_transpose_bwd(a, dy, cfg):
    return conv_transpose_backward(a["x"], a["w"], dy, **cfg)


conv = register("conv")(make_twin(ops.conv, ("x", "w", "b"), _conv_bwd))
conv_transpose = register("conv_transpose")(
    make_twin(ops.conv_transpose, ("x", "w", "b"), _conv_transpose_bwd))


# -- pooling -------------------------------------------------------------------------------
def _max_pool_bwd(a, dy, cfg):
    cfg = {k: v for k, v in cfg.items() if k != "return_indices"}
    return (max_pool_backward(a["x"], dy, **cfg),)


_max_pool_values = make_twin(ops.max_pool, ("x",), _max_pool_bwd)


@register("max_pool")
@functools.wraps(ops.max_pool)
def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
             layout="NHWC"):
    y = _max_pool_values(x, kernel_size, stride, padding, dilation, ceil_mode, False, layout=layout)
    if not return_indices:
        return y
    # integer indices carry no gradient: take them from the op on a constant copy
    _, idx = ops.max_pool(jax.lax.stop_gradient(x), kernel_size, stride, padding, dilation, ceil_mode, True,
                          layout=layout)
    return y, idx


avg_pool = register("avg_pool")(make_twin(
    ops.avg_pool, ("x",), lambda a, dy, cfg: (avg_pool_backward(a["x"], dy, **cfg),)))
adaptive_avg_pool = register("adaptive_avg_pool")(make_twin(
    ops.adaptive_avg_pool, ("x",), lambda a, dy, cfg: (adaptive_avg_pool_backward(a["x"], dy, **cfg),)))
global_avg_pool = register("global_avg_pool")(make_twin(
    ops.global_avg_pool, ("x",), lambda a, dy, cfg: (global_avg_pool_backward(a["x"], dy, **cfg),)))
global_max_pool = register("global_max_pool")(make_twin(
    ops.global_max_pool, ("x",), lambda a, dy, cfg: (global_max_pool_backward(a["x"], dy, **cfg),)))
lp_pool = register("lp_pool")(make_twin(
    ops.lp_pool, ("x",), lambda a, dy, cfg: (lp_pool_backward(a["x"], dy, **cfg),)))

_adaptive_max_pool_values = make_twin(
    ops.adaptive_max_pool, ("x",),
    lambda a, dy, cfg: (adaptive_max_pool_backward(a["x"], dy, cfg["output_size"], layout=cfg["layout"]),))


@register("adaptive_max_pool")
@functools.wraps(ops.adaptive_max_pool)
def adaptive_max_pool(x, output_size, return_indices=False, *, layout="NHWC"):
    y = _adaptive_max_pool_values(x, output_size, False, layout=layout)
    if not return_indices:
        return y
    # integer indices carry no gradient: take them from the op on a constant copy
    _, idx = ops.adaptive_max_pool(jax.lax.stop_gradient(x), output_size, True, layout=layout)
    return y, idx


# -- resampling ----------------------------------------------------------------------------
upsample = register("upsample")(make_twin(
    ops.upsample, ("x",), lambda a, dy, cfg: (upsample_backward(a["x"], dy, **cfg),)))
max_unpool = register("max_unpool")(make_twin(
    ops.max_unpool, ("x", "indices"),
    lambda a, dy, cfg: (max_unpool_backward(a["x"], a["indices"], dy, **cfg),), float_arrays=("x",)))


# -- dense, activations --------------------------------------------------------------------
dense = register("dense")(make_twin(
    ops.dense, ("x", "w", "b"), lambda a, dy, cfg: dense_backward(a["x"], a["w"], dy)))


def _activation_twin(name):
    op = getattr(ops, name)
    return register(name)(make_twin(
        op, ("x",), lambda a, dy, cfg: (activation_backward(name, a["x"], dy, **cfg),)))


ACTIVATION_TWINS = {name: _activation_twin(name) for name in ELEMENTWISE + ("softmax", "log_softmax")}


# -- batch norm, dropout, losses -----------------------------------------------------------
def _batch_norm_bwd(a, dys, cfg):
    dy, d_new_mean, d_new_var = dys
    dx, dweight, dbias = batch_norm_backward(a["x"], a["running_mean"], a["running_var"], a["weight"],
                                             a["bias"], dy, **cfg)
    # The running statistics are state: in training they only feed the (stop-gradient)
    # update new = (1 - momentum) * old + ..., whose transpose is below; in evaluation
    # they also normalise, a path the train step never differentiates, so it is not
    # back-propagated here (documented in gradcheck).
    keep = 1.0 - cfg.get("momentum", 0.1)
    d_rm = None if a["running_mean"] is None else keep * d_new_mean
    d_rv = None if a["running_var"] is None else keep * d_new_var
    return dx, d_rm, d_rv, dweight, dbias


batch_norm = register("batch_norm")(make_twin(
    ops.batch_norm, ("x", "running_mean", "running_var", "weight", "bias"), _batch_norm_bwd))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _masked_scale(rate, x, scale):
    """``x * scale`` (scale = keep / (1 - rate)); backward ``dy * scale``."""
    return x * scale


def _masked_scale_fwd(rate, x, scale):
    return _masked_scale(rate, x, scale), (x, scale)


def _masked_scale_bwd(rate, res, g):
    x, scale = res
    return g * scale, g * x


_masked_scale.defvjp(_masked_scale_fwd, _masked_scale_bwd)


@register("dropout")
@functools.wraps(ops.dropout)
def dropout(key, x, rate: float, *, train: bool):
    if not train or rate == 0.0:
        return ops.dropout(key, x, rate, train=train)
    # the op's own mask (same key, same bernoulli draw): ones through the op give keep/(1-rate)
    scale = jax.lax.stop_gradient(ops.dropout(key, jnp.ones_like(x), rate, train=True))
    return _masked_scale(float(rate), x, scale)


@register("spatial_dropout")
@functools.wraps(ops.spatial_dropout)
def spatial_dropout(key, x, rate: float, *, train: bool, layout: str = "NHWC"):
    if not train or rate == 0.0:
        return ops.spatial_dropout(key, x, rate, train=train, layout=layout)
    scale = jax.lax.stop_gradient(ops.spatial_dropout(key, jnp.ones_like(x), rate, train=True, layout=layout))
    return _masked_scale(float(rate), x, scale)


_cross_entropy_index = make_twin(
    ops.cross_entropy, ("logits", "labels", "weight"),
    lambda a, dy, cfg: (cross_entropy_backward(a["logits"], a["labels"], dy, weight=a["weight"], **cfg),),
    float_arrays=("logits",))
_cross_entropy_prob = make_twin(
    ops.cross_entropy, ("logits", "labels", "weight"),
    lambda a, dy, cfg: cross_entropy_backward(a["logits"], a["labels"], dy, weight=a["weight"], **cfg),
    float_arrays=("logits", "labels"))


@register("cross_entropy")
@functools.wraps(ops.cross_entropy)
def cross_entropy(logits, labels, **kwargs):
    # class-probability targets are differentiated too; integer class indices are not
    prob = hasattr(labels, "dtype") and jnp.issubdtype(labels.dtype, jnp.floating)
    return (_cross_entropy_prob if prob else _cross_entropy_index)(logits, labels, **kwargs)


mse_loss = register("mse_loss")(make_twin(
    ops.mse_loss, ("y", "target"),
    lambda a, dy, cfg: (mse_loss_backward(a["y"], a["target"], dy, **cfg),
                        -mse_loss_backward(a["y"], a["target"], dy, **cfg))))
