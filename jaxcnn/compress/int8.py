"""Post-training int8 inference that really multiplies int8 by int8.

The network is traced once to a jaxpr (``jax.make_jaxpr`` of ``model.apply`` in eval
mode) and interpreted equation by equation. Every convolution / matrix product whose
right operand is a conv or dense kernel of ``params`` is replaced:

* its input is quantised per tensor, symmetric int8 (scale from a MinMax observer run over
  calibration batches, :func:`calibrate`; symmetric so that zero padding stays exact);
* its kernel is quantised per output channel, symmetric int8 (torch's
  PerChannelMinMaxObserver, zero point 0);
* the product runs on the int8 operands to an exact int32 result -- oneDNN's int8
  kernels (VNNI / AMX, :mod:`jaxcnn.kernels.onednn.int8`) for a channels-last
  convolution or a 2-D matrix product on CPU, else ``lax.conv_general_dilated`` /
  ``lax.dot_general`` with ``preferred_element_type=int32`` (the same integers) -- and is
  rescaled by ``input_scale * kernel_scale[channel]``.

Everything else (bias, batch norm, activations, pooling) runs in float32 as traced.
:func:`fake_int8_apply` computes the same network in float32 with both operands fake
quantised, which equals the int8 path up to float summation order. Works for any model
whose kernels reach a conv / dot directly (every zoo model; a depthwise conv that the ops
compute as shifted multiply-adds stays float). The network is traced under
``backprop_mode("autodiff")``, whatever mode the caller is in.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.extend.core as jcore
import jax.numpy as jnp

from ..dispatch import backprop_mode
from ..kernels.onednn import int8 as onednn_int8
from ._select import is_weight, path_name
from .quantize import QParams, fake_quant, minmax, observe, qparams, quantize

_OPS = ("conv_general_dilated", "dot_general")
BITS = 8
# the key of a compressed file's meta holding the calibrated input scales
# ({kernel name: float}), written by `jaxcnn compress --quantize int8`
INPUT_SCALES = "int8_input_scales"


def _trace(model, params, state, x):
    """The closed jaxpr of ``(params, state, x) -> logits`` and ``{invar: kernel name}``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_name(p) if is_weight(p, leaf) else None for p, leaf in leaves]
    n = len(leaves)

    def f(flat, st, inputs):
        p = jax.tree_util.tree_unflatten(treedef, flat)
        return model.apply(p, st, inputs, train=False)[0]
    # traced with the plain lax ops (autodiff mode): the interpreter must see every conv
    # and matmul, not "auto"'s oneDNN custom calls that hide them
    with backprop_mode("autodiff"):
        closed = jax.make_jaxpr(f)([leaf for _, leaf in leaves], state, x)
    kernels = {v: name for v, name in zip(closed.jaxpr.invars[:n], names) if name is not None}
    args = [leaf for _, leaf in leaves] + jax.tree.leaves(state) + [x]
    return closed, kernels, args


def _out_axis(eqn):
    """(kernel output-channel axis, result channel axis) of a conv / dot equation, or None."""
    if eqn.primitive.name == "conv_general_dilated":
        dn = eqn.params["dimension_numbers"]
        return dn.rhs_spec[0], dn.out_spec[1]
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rank = len(eqn.invars[1].aval.shape)
    free = [d for d in range(rank) if d not in rhs_contract and d not in rhs_batch]
    if len(free) != 1 or rhs_batch:
        return None
    return free[0], len(eqn.outvars[0].aval.shape) - 1


def _interpret(closed, kernels, args, handler):
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]
    for v, a in zip(closed.jaxpr.constvars, closed.consts):
        env[v] = a
    for v, a in zip(closed.jaxpr.invars, args):
        env[v] = a
    for eqn in closed.jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = kernels.get(eqn.invars[1]) if eqn.primitive.name in _OPS and len(eqn.invars) > 1 and \
            not isinstance(eqn.invars[1], jcore.Literal) else None
        axes = _out_axis(eqn) if name else None
        if axes is not None:
            out = handler(eqn, name, axes, invals)
        else:
            with eqn.ctx.manager:
                out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        for v, o in zip(eqn.outvars, out if eqn.primitive.multiple_results else [out]):
            env[v] = o
    return [read(v) for v in closed.jaxpr.outvars]


def _bind(eqn, lhs, rhs, **overrides):
    params = dict(eqn.params, **overrides)
    return eqn.primitive.bind(lhs, rhs, **params)


def _channels_last_specs(dn, rank: int) -> bool:
    """True for (N, *spatial, C) input and output with a (*kernel, C/G, O) kernel."""
    lhs = (0, rank + 1, *range(1, rank + 1))
    return tuple(dn.lhs_spec) == lhs and tuple(dn.out_spec) == lhs and \
        tuple(dn.rhs_spec) == (rank + 1, rank, *range(rank))


def _int32_product(eqn, x_int, w_int):
    """The exact int32 result of ``eqn`` (a conv / dot) on int8 operands: oneDNN where it
    applies, else the traced lax op with an int32 result."""
    p = eqn.params
    if eqn.primitive.name == "conv_general_dilated":
        rank = x_int.ndim - 2
        if p["batch_group_count"] == 1 and _channels_last_specs(p["dimension_numbers"], rank) and \
                onednn_int8.conv_applies(x_int, w_int, lhs_dilation=p["lhs_dilation"], pads=p["padding"]):
            return onednn_int8.conv_int8(x_int, w_int, stride=p["window_strides"], pads=p["padding"],
                                         dilation=p["rhs_dilation"], groups=p["feature_group_count"])
    else:
        (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = p["dimension_numbers"]
        if tuple(lhs_contract) == (x_int.ndim - 1,) and tuple(rhs_contract) == (0,) and not lhs_batch \
                and not rhs_batch and w_int.ndim == 2:
            a = x_int.reshape(-1, x_int.shape[-1])
            if onednn_int8.matmul_applies(a, w_int):
                return onednn_int8.matmul_int8(a, w_int).reshape(*x_int.shape[:-1], w_int.shape[1])
    return _bind(eqn, x_int, w_int, preferred_element_type=jnp.int32)


def calibrate(model, params, state, batches) -> dict[str, Any]:
    """Int8 quantisation parameters: ``{"weights": {name: (int8 kernel, float32 per-channel
    scale)}, "inputs": {name: float32 scale of the kernel's input}}``, the input scales from a
    per-tensor symmetric MinMax observer over ``batches`` (arrays of images)."""
    from ..models import as_model
    model = as_model(model)
    axes_of: dict[str, int] = {}

    @jax.jit
    def observe_batch(p, st, x):
        found = {}

        def record(eqn, name, axes, invals):
            found[name] = minmax(invals[0])
            axes_of[name] = axes[0]  # static, filled in while tracing
            return _bind(eqn, *invals)
        _interpret(*_trace(model, p, st, x), record)
        return found

    seen: dict[str, tuple] = {}
    count = 0
    for x in batches:
        for name, (lo, hi) in observe_batch(params, state, jnp.asarray(x)).items():
            seen[name] = (lo, hi) if name not in seen else minmax(jnp.stack([lo, hi]), previous=seen[name])
        count += 1
    if not count:
        raise ValueError("calibrate: batches is empty; give at least one batch of images")
    kernels = {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
               if is_weight(p, leaf)}
    weights, inputs = {}, {}
    for name, (lo, hi) in seen.items():
        w = kernels[name]
        q = observe(w, BITS, "per_channel_symmetric", axis=axes_of[name])
        weights[name] = (quantize(w, q), q.scale)
        inputs[name] = qparams(lo, hi, BITS, symmetric=True).scale
    return {"weights": weights, "inputs": inputs}


def _kernel_q(scale, axis):
    return QParams(scale, jnp.zeros(scale.shape, jnp.int32), BITS, axis)


def _input_q(scale):
    return QParams(scale, jnp.zeros((), jnp.int32), BITS, None)


def int8_apply(model, qparams_, params, state, x):
    """Logits of ``model`` on ``x`` with every kernel product computed in int8 x int8 -> int32
    (see the module doc); ``qparams_`` from :func:`calibrate`. Pure and jit-able."""
    from ..models import as_model
    model = as_model(model)

    def int8_op(eqn, name, axes, invals):
        w_int, w_scale = qparams_["weights"][name]
        s_in = qparams_["inputs"][name]
        x_int = quantize(invals[0], _input_q(s_in))
        y = _int32_product(eqn, x_int, w_int)
        shape = [1] * y.ndim
        shape[axes[1]] = -1
        return y.astype(jnp.float32) * (s_in * w_scale).reshape(shape)

    return _interpret(*_trace(model, params, state, x), int8_op)[0]


def fake_int8_apply(model, qparams_, params, state, x):
    """:func:`int8_apply` simulated in float32: both operands of every kernel product fake
    quantised with the same scales (quantisation-aware evaluation; the accuracy reference)."""
    from ..models import as_model
    model = as_model(model)

    def fake_op(eqn, name, axes, invals):
        w_int, w_scale = qparams_["weights"][name]
        s_in = qparams_["inputs"][name]
        w = fake_quant(invals[1], _kernel_q(w_scale, axes[0]))
        return _bind(eqn, fake_quant(invals[0], _input_q(s_in)), w)

    return _interpret(*_trace(model, params, state, x), fake_op)[0]


def input_scales_meta(qparams_) -> dict[str, float]:
    """:func:`calibrate`'s input scales as JSON numbers (float32 -> float -> float32 is
    exact), for a compressed file's meta under :data:`INPUT_SCALES`."""
    return {name: float(s) for name, s in qparams_["inputs"].items()}


def kernel_axes(model, params, state, x) -> dict[str, int]:
    """``{kernel name: its output-channel axis}`` for every kernel product of ``model`` on
    inputs shaped like ``x`` (a trace, nothing computed)."""
    from ..models import as_model
    model = as_model(model)
    axes: dict[str, int] = {}

    def record(eqn, name, axes_, invals):
        axes[name] = axes_[0]
        return _bind(eqn, *invals)
    jax.eval_shape(lambda p, s, v: _interpret(*_trace(model, p, s, v), record), params, state, x)
    return axes


def stored_qparams(model, params, state, x, int8_kernels: dict, meta: dict) -> dict | None:
    """:func:`int8_apply`'s ``qparams_`` rebuilt from a compressed file
    (:func:`jaxcnn.compress.storage.read_compressed`'s ``int8`` and ``meta``) for ``model``
    on inputs shaped like ``x``: its stored integers and scales, and the recorded input
    scales. None when the file cannot run the int8 path: no input scales recorded (written
    before they were, or never calibrated), or a kernel product of the model whose kernel
    is not stored as symmetric 8-bit integers per output channel (or per tensor), or that
    has no input scale."""
    scales = meta.get(INPUT_SCALES)
    if not isinstance(scales, dict) or not scales:
        return None
    weights, inputs = {}, {}
    for name, axis in kernel_axes(model, params, state, x).items():
        scale = scales.get(name)
        if name not in int8_kernels or isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not scale > 0:
            return None
        ints, q = int8_kernels[name]
        if q.bits != BITS or bool(jnp.any(q.zero_point != 0)) or q.axis not in (None, axis % ints.ndim):
            return None
        weights[name] = (jnp.asarray(ints, jnp.int8), jnp.asarray(q.scale, jnp.float32))
        inputs[name] = jnp.float32(scale)
    return {"weights": weights, "inputs": inputs}
