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

**Fused** (``int8_apply(..., fused=True)``, the default), where oneDNN computes the
product, the float work after it runs inside the same oneDNN call instead of in XLA
(:func:`_plan_fusions` reads it off the jaxpr): the run of equations that each are the
only reader of the value before them and are a ReLU (``max(x, 0)``, ``jax.nn.relu``), an
add / sub / mul / div / max / min with a per-channel (or scalar) float32 constant -- a
bias, an inference batch norm's four ops -- or one add of a float32 tensor of the result's
shape (a residual branch). Runs of add / sub / mul are folded to one affine (into the
rescale and oneDNN's bias right after the product, else one mul and one add post-op). When
the run's result is used only as the next kernel product's input (through max pools and
reshapes, which commute with a per-tensor quantisation), the call writes it as that
product's int8 input (its input scale as oneDNN's destination scale: round half to even,
saturated to [-128, 127], :func:`quantize`'s integers), so int8 flows between the layers
and the max pools run on int8 (oneDNN's pooling). Anything else keeps the unfused path.

Everything not fused (pooling on floats, softmax, a shared input...) runs in float32 as
traced. :func:`fake_int8_apply` computes the same network in float32 with both operands
fake quantised. The unfused path equals it up to float summation order; the fused path
performs the same float32 operations on the same integers except that folding rounds
differently (a few ulps), so a value within rounding of a half step can land one level
apart: every product's int8 input is within one quantisation step of the unfused path's
and the simulation's (tests/test_kernels_onednn_int8.py). Works for any model whose
kernels reach a conv / dot directly (every zoo model; a depthwise conv that the ops
compute as shifted multiply-adds stays float). The network is traced under
``backprop_mode("autodiff")``, whatever mode the caller is in.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

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


# ---- the fused path: a product's float epilogue (and the next input's quantisation) in oneDNN ----
# binary ops an epilogue may take with a per-channel constant: either operand order, or
# the chained value first only
_EITHER_SIDE = ("add", "mul", "max", "min")
_VALUE_FIRST = ("sub", "div")
# ops that commute with a per-tensor quantisation (monotone, shape only): they run on the
# int8 result of a fused product whose only consumer is the next product's quantisation
_COMMUTE_WITH_QUANTISE = ("reduce_window_max", "reshape")


class _Fusion(NamedTuple):
    """A kernel product fused with the equations ``chain`` (indices into the jaxpr, in
    order) that follow it: ``ops`` (EPILOGUE_OPS names) with ``operands`` (per binary op,
    the jaxpr variable / literal of its per-channel constant) and ``tensor`` (the variable
    an ``"add_tensor"`` adds, a residual branch; None without one). ``quantise_for``: the
    kernel whose input scale quantises the result to int8 (its only use is that kernel's
    input, through :data:`_COMMUTE_WITH_QUANTISE` ops), else None (a float32 result)."""
    chain: tuple
    ops: tuple
    operands: tuple
    tensor: Any
    quantise_for: str | None


class _Quantised(NamedTuple):
    """int8 ``ints`` standing for ``quantize(value, input scale of kernel)``."""
    ints: Any
    kernel: str


class _Fuser(NamedTuple):
    """:func:`_interpret`'s fusion hooks: the plan, ``fusable(eqn, name, invals) -> bool``
    (oneDNN computes this product) and ``fused(eqn, name, axes, invals, fusion, read)``."""
    fusions: dict
    fusable: Any
    fused: Any


def _uses(jaxpr) -> dict:
    """``{var: [(equation index or None for an output of the jaxpr, operand position)]}``."""
    uses: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for pos, v in enumerate(eqn.invars):
            if not isinstance(v, jcore.Literal):
                uses.setdefault(v, []).append((i, pos))
    for v in jaxpr.outvars:
        if not isinstance(v, jcore.Literal):
            uses.setdefault(v, []).append((None, 0))
    return uses


def _only_use(uses, v):
    """``(equation index, position)`` of the one equation that reads ``v``, else None."""
    found = uses.get(v, [])
    return found[0] if len(found) == 1 and found[0][0] is not None else None


def _is_zero(v) -> bool:
    return isinstance(v, jcore.Literal) and np.ndim(v.val) == 0 and v.val == 0


def _is_relu(eqn) -> bool:
    """``max(x, 0)``, or a call (jax.nn.relu's custom_jvp, a jit) of exactly that."""
    name = eqn.primitive.name
    if name == "max":
        return len(eqn.invars) == 2 and any(_is_zero(v) for v in eqn.invars)
    inner = eqn.params.get("call_jaxpr", eqn.params.get("jaxpr")) if name in ("custom_jvp_call", "jit", "pjit") \
        else None
    inner = getattr(inner, "jaxpr", inner)
    if inner is None or len(inner.eqns) != 1 or len(inner.invars) != 1 or len(eqn.invars) != 1:
        return False
    only = inner.eqns[0]
    return _is_relu(only) and inner.invars[0] in only.invars and list(inner.outvars) == list(only.outvars)


def _per_channel(v, shape, axis) -> bool:
    """True when float32 ``v`` broadcasts against ``shape`` as a scalar or one value per index
    of ``axis``."""
    aval = v.aval
    if aval.dtype != jnp.float32:
        return False
    return aval.shape == () or (len(aval.shape) == len(shape) and
                                all(d == 1 or (i == axis and d == shape[axis]) for i, d in enumerate(aval.shape)))


def _epilogue_op(eqn, pos, shape, axis):
    """``(op name, operand or None)`` when ``eqn``, reading the chained value (shaped
    ``shape``, float32) at operand ``pos``, is one epilogue op -- relu, a binary op with a
    per-channel constant, or (``"add_tensor"``) an add of a float32 tensor of the same shape
    -- else None."""
    if len(eqn.outvars) != 1 or eqn.outvars[0].aval.shape != shape or eqn.outvars[0].aval.dtype != jnp.float32:
        return None
    if _is_relu(eqn):
        return "relu", None
    name = eqn.primitive.name
    if len(eqn.invars) != 2 or not (name in _EITHER_SIDE or (name in _VALUE_FIRST and pos == 0)):
        return None
    other = eqn.invars[1 - pos]
    if _per_channel(other, shape, axis):
        return name, other
    full = not isinstance(other, jcore.Literal) and other.aval.shape == shape and other.aval.dtype == jnp.float32
    return ("add_tensor", other) if name == "add" and full else None


def _quantising_kernel(jaxpr, uses, kernels, v):
    """The kernel whose input quantisation is the only use of ``v`` (through ops that commute
    with it), else None."""
    while (use := _only_use(uses, v)) is not None:
        eqn = jaxpr.eqns[use[0]]
        if use[1] == 0 and eqn.primitive.name in _COMMUTE_WITH_QUANTISE and len(eqn.outvars) == 1:
            v = eqn.outvars[0]
            continue
        name = _kernel_of(eqn, kernels)
        return name if use[1] == 0 and name and _out_axis(eqn) is not None else None
    return None


def _plan_fusions(jaxpr, kernels) -> dict:
    """``{index of a kernel product: _Fusion}`` for every kernel product of ``jaxpr``: the
    longest run of epilogue ops (:func:`_epilogue_op`, at most one ``"add_tensor"``) each
    the only reader of the value before it, and whether the result can be the next
    product's int8 input. An equation joins one run at most: a residual add of two
    products' results (a shortcut convolution's) goes to the product traced first."""
    uses, plan, claimed = _uses(jaxpr), {}, set()
    for i, eqn in enumerate(jaxpr.eqns):
        name = _kernel_of(eqn, kernels)
        axes = _out_axis(eqn) if name else None
        if axes is None:
            continue
        v, chain, ops, operands, tensor = eqn.outvars[0], [], [], [], None
        shape = v.aval.shape
        while (use := _only_use(uses, v)) is not None and use[0] not in claimed and \
                (op := _epilogue_op(jaxpr.eqns[use[0]], use[1], shape, axes[1])) is not None:
            if op[0] == "add_tensor":
                if tensor is not None:
                    break
                tensor = op[1]
            elif op[1] is not None:
                operands.append(op[1])
            chain.append(use[0])
            ops.append(op[0])
            v = jaxpr.eqns[use[0]].outvars[0]
        claimed.update(chain)
        plan[i] = _Fusion(tuple(chain), tuple(ops), tuple(operands), tensor,
                          _quantising_kernel(jaxpr, uses, kernels, v))
    return plan


def _on_quantised(eqn, invals):
    """An equation between a fused s8 result and its product's quantisation, run on the
    integers (the plan lets only :data:`_COMMUTE_WITH_QUANTISE` ops see one): a max pool on
    oneDNN's int8 pooling where it applies (XLA's int8 reduce_window is slower than its
    float32 one), anything else as traced."""
    q = invals[0]
    if eqn.primitive.name not in _COMMUTE_WITH_QUANTISE or not isinstance(q, _Quantised) or len(invals) != 1:
        raise AssertionError(f"int8_apply: a fused int8 value reached {eqn.primitive.name}")
    if eqn.primitive.name == "reduce_window_max":
        p = eqn.params
        pool = (p["window_dimensions"], p["window_strides"], p["padding"])
        if onednn_int8.max_pool_applies(q.ints, *pool, p["base_dilation"], p["window_dilation"]):
            return _Quantised(onednn_int8.max_pool_int8(q.ints, *pool, p["window_dilation"]), q.kernel)
    with eqn.ctx.manager:
        return _Quantised(eqn.primitive.bind(q.ints, **eqn.primitive.get_bind_params(eqn.params)), q.kernel)


def _kernel_of(eqn, kernels):
    """The kernel name of a conv / dot equation whose right operand is a kernel, else None."""
    if eqn.primitive.name not in _OPS or len(eqn.invars) < 2 or isinstance(eqn.invars[1], jcore.Literal):
        return None
    return kernels.get(eqn.invars[1])


def _interpret(closed, kernels, args, handler, fuser=None):
    """Evaluates ``closed`` on ``args``, every kernel product through ``handler(eqn, name,
    axes, invals)``. With a :class:`_Fuser`, a product its plan fuses and its ``fusable``
    accepts is computed by its ``fused`` in place of the product and its epilogue (at the
    last epilogue equation, whose operands all exist by then); otherwise the product and
    its epilogue run as traced. Values may be :class:`_Quantised` (a fused s8 result):
    only the equations :func:`_plan_fusions` allows between it and its product see one."""
    env: dict = {}
    fusions = fuser.fusions if fuser else {}
    pending: dict[int, tuple] = {}    # index of a fusion's last equation -> (start eqn, fusion)
    skipped: set[int] = set()

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]
    for v, a in zip(closed.jaxpr.constvars, closed.consts):
        env[v] = a
    for v, a in zip(closed.jaxpr.invars, args):
        env[v] = a
    for i, eqn in enumerate(closed.jaxpr.eqns):
        if i in skipped:
            continue
        if i in pending:
            start, fusion = pending.pop(i)
            env[eqn.outvars[0]] = fuser.fused(start, _kernel_of(start, kernels), _out_axis(start),
                                              [read(v) for v in start.invars], fusion, read)
            continue
        invals = [read(v) for v in eqn.invars]
        name = _kernel_of(eqn, kernels)
        axes = _out_axis(eqn) if name else None
        fusion = fusions.get(i) if axes is not None else None
        if fusion is not None and fuser.fusable(eqn, name, invals):
            last = fusion.chain[-1] if fusion.chain else i
            if last == i:
                env[eqn.outvars[0]] = fuser.fused(eqn, name, axes, invals, fusion, read)
                continue
            pending[last] = (eqn, fusion)
            skipped.update(fusion.chain[:-1])
            continue
        if axes is not None:
            out = handler(eqn, name, axes, invals)
        elif any(isinstance(a, _Quantised) for a in invals):
            out = _on_quantised(eqn, invals)
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


def _rows(x):
    """``x`` (array or shape struct) as the 2-D ``(rows, last axis)`` a matrix product takes."""
    return jax.ShapeDtypeStruct((int(np.prod(x.shape[:-1])), x.shape[-1]), x.dtype)


def _onednn_form(eqn, x_int, w_int) -> str | None:
    """``"conv"`` or ``"matmul"`` when oneDNN computes ``eqn`` (a conv / dot) on these int8
    operands (a channels-last convolution, a dot contracting the last axis of ``x`` with a
    2-D kernel's first), else None."""
    p = eqn.params
    if eqn.primitive.name == "conv_general_dilated":
        rank = x_int.ndim - 2
        if p["batch_group_count"] == 1 and _channels_last_specs(p["dimension_numbers"], rank) and \
                onednn_int8.conv_applies(x_int, w_int, lhs_dilation=p["lhs_dilation"], pads=p["padding"]):
            return "conv"
        return None
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = p["dimension_numbers"]
    if tuple(lhs_contract) == (x_int.ndim - 1,) and tuple(rhs_contract) == (0,) and not lhs_batch \
            and not rhs_batch and w_int.ndim == 2 and \
            onednn_int8.matmul_applies(_rows(x_int), w_int):
        return "matmul"
    return None


def _conv_geometry(eqn) -> dict:
    p = eqn.params
    return dict(stride=p["window_strides"], pads=p["padding"], dilation=p["rhs_dilation"],
                groups=p["feature_group_count"])


def _int32_product(eqn, x_int, w_int):
    """The exact int32 result of ``eqn`` (a conv / dot) on int8 operands: oneDNN where it
    applies, else the traced lax op with an int32 result."""
    form = _onednn_form(eqn, x_int, w_int)
    if form == "conv":
        return onednn_int8.conv_int8(x_int, w_int, **_conv_geometry(eqn))
    if form == "matmul":
        a = x_int.reshape(-1, x_int.shape[-1])
        return onednn_int8.matmul_int8(a, w_int).reshape(*x_int.shape[:-1], w_int.shape[1])
    return _bind(eqn, x_int, w_int, preferred_element_type=jnp.int32)


def _fused_product(eqn, x_int, w_int, scale, ops, vectors, out_scale, tensor=None):
    """``eqn`` on int8 operands with its rescale, epilogue (``tensor``: an ``"add_tensor"``'s,
    shaped like the result) and (``out_scale`` given) int8 quantisation in one oneDNN call
    (:func:`onednn_int8.conv_int8_fused`); only where :func:`_onednn_form` is not None."""
    if _onednn_form(eqn, x_int, w_int) == "conv":
        return onednn_int8.conv_int8_fused(x_int, w_int, scale, ops, vectors, out_scale, tensor=tensor,
                                           **_conv_geometry(eqn))
    a = x_int.reshape(-1, x_int.shape[-1])
    tensor = None if tensor is None else tensor.reshape(a.shape[0], w_int.shape[1])
    y = onednn_int8.matmul_int8_fused(a, w_int, scale, ops, vectors, out_scale, tensor=tensor)
    return y.reshape(*x_int.shape[:-1], w_int.shape[1])


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


def _channel_vector(value, channels: int):
    """A per-channel (or scalar) epilogue constant as a float32 ``(channels,)`` row."""
    return jnp.broadcast_to(jnp.reshape(jnp.asarray(value, jnp.float32), (-1,)), (channels,))


_AFFINE = ("add", "sub", "mul")


def _fold_epilogue(ops, rows, scale):
    """``(ops, rows, scale)`` of a fused call with each run of per-channel add / sub / mul
    folded to one affine ``v * a + b``: the run right after the product into ``scale`` and a
    leading ``"bias"``, a later run (after a relu, say) into at most one ``"mul"`` and one
    ``"add"``. Each binary post-op costs a pass over the result inside oneDNN (about a sixth
    of fmnist_cnn's 32 -> 32 convolution); folding rounds differently from the traced ops
    (float32, a few ulps), which is why the fused path equals :func:`fake_int8_apply` within
    one quantisation step rather than bit for bit."""
    out_ops, out_rows = [], []
    a, b = None, None                    # the pending affine (None: identity part)
    first = True

    def flush():
        nonlocal a, b, scale
        if first:
            scale = scale if a is None else scale * a
            if b is not None:
                out_ops.insert(0, "bias")
                out_rows.insert(0, b)
        else:
            if a is not None:
                out_ops.append("mul")
                out_rows.append(a)
            if b is not None:
                out_ops.append("add")
                out_rows.append(b)
        a, b = None, None
    rows = iter(rows)
    for op in ops:
        if op in _AFFINE:
            c = next(rows)
            if op == "mul":
                a = c if a is None else a * c
                b = None if b is None else b * c
            else:
                c = c if op == "add" else -c
                b = c if b is None else b + c
            continue
        flush()
        first = False
        out_ops.append(op)
        if op not in ("relu", "add_tensor"):
            out_rows.append(next(rows))
    flush()
    return tuple(out_ops), out_rows, scale


def int8_apply(model, qparams_, params, state, x, *, fused: bool = True):
    """Logits of ``model`` on ``x`` with every kernel product computed in int8 x int8 -> int32
    (see the module doc); ``qparams_`` from :func:`calibrate`. ``fused=False`` keeps every
    epilogue and quantisation in XLA (the path before the fused oneDNN calls). Pure and
    jit-able."""
    from ..models import as_model
    model = as_model(model)

    def input_ints(name, value):
        if isinstance(value, _Quantised):     # a fused product already quantised it for this kernel
            assert value.kernel == name, (value.kernel, name)
            return value.ints
        return quantize(value, _input_q(qparams_["inputs"][name]))

    def int8_op(eqn, name, axes, invals):
        w_int, w_scale = qparams_["weights"][name]
        s_in = qparams_["inputs"][name]
        y = _int32_product(eqn, input_ints(name, invals[0]), w_int)
        shape = [1] * y.ndim
        shape[axes[1]] = -1
        return y.astype(jnp.float32) * (s_in * w_scale).reshape(shape)

    def fusable(eqn, name, invals):
        x_like = jax.ShapeDtypeStruct(invals[0].ints.shape if isinstance(invals[0], _Quantised) else
                                      invals[0].shape, jnp.int8)
        return _onednn_form(eqn, x_like, qparams_["weights"][name][0]) is not None

    def fused_op(eqn, name, axes, invals, fusion, read):
        w_int, w_scale = qparams_["weights"][name]
        channels = eqn.outvars[0].aval.shape[axes[1]]
        scale = _channel_vector(qparams_["inputs"][name] * w_scale, channels)
        ops, rows, scale = _fold_epilogue(fusion.ops, [_channel_vector(read(v), channels) for v in fusion.operands],
                                          scale)
        target = fusion.quantise_for
        out_scale = None if target is None else qparams_["inputs"][target]
        tensor = None if fusion.tensor is None else read(fusion.tensor)
        y = _fused_product(eqn, input_ints(name, invals[0]), w_int, scale, ops,
                           jnp.stack(rows) if rows else None, out_scale, tensor)
        return y if target is None else _Quantised(y, target)

    closed, kernels, args = _trace(model, params, state, x)
    fuser = _Fuser(_plan_fusions(closed.jaxpr, kernels), fusable, fused_op) if fused else None
    return _interpret(closed, kernels, args, int8_op, fuser)[0]


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
