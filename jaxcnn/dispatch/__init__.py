"""The ops as the layers call them: ``dispatch.conv(...)`` is ``jaxcnn.ops.conv`` under
the "autodiff" mode, its custom_vjp twin (explicit backward, :mod:`jaxcnn.backprop.twins`)
under "explicit", and under "auto" the formulation :mod:`jaxcnn.dispatch.auto`'s table
chose for it, the op itself (autodiff) for ops without an entry.

Public API: :func:`backprop_mode` / :func:`current_mode` / :data:`DEFAULT_MODE`
(:mod:`.mode`); :func:`auto_table`, :func:`set_auto_table`, :func:`auto_choices`,
:data:`FORMULATIONS`, :data:`DEFAULT_TABLE` (:mod:`.auto`); :func:`observe` (:mod:`.observe`).
In explicit mode an op without a twin raises instead of silently falling back to
autodiff, unless it is listed in :data:`AUTODIFF_OK` (ops with no parameters whose
autodiff backward is the textbook one, e.g. reshapes).
"""
from __future__ import annotations

from .. import ops
from ..backprop.twins import TWINS
from .auto import DEFAULT_TABLE, FORMULATIONS, auto_choices, auto_table, check_table, resolve, set_auto_table  # noqa: F401
from .mode import DEFAULT_MODE, MODES, backprop_mode, check_mode, current_mode  # noqa: F401
from .observe import observe, observers

# reshapes/permutations (their autodiff backward is the inverse permutation) and
# metrics that are never differentiated
AUTODIFF_OK = {"flatten", "channel_shuffle", "pad", "identity", "accuracy"}


def explicit_ops() -> tuple[str, ...]:
    """The ops that have a hand-written (explicit) backward twin."""
    return tuple(sorted(TWINS))


def _make(name: str):
    autodiff_fn = getattr(ops, name)

    def call(*args, **kwargs):
        for callback in observers():
            callback(name, args, kwargs)
        mode = current_mode()
        if mode == "auto":
            return (_auto_fn(name) or autodiff_fn)(*args, **kwargs)
        if mode == "explicit":
            if name in TWINS:
                return TWINS[name](*args, **kwargs)
            if name not in AUTODIFF_OK:
                raise NotImplementedError(f"backprop='explicit': op {name!r} has no explicit backward pass; "
                                          f"available: {', '.join(explicit_ops())}")
        return autodiff_fn(*args, **kwargs)

    call.__name__ = name
    call.__doc__ = autodiff_fn.__doc__
    return call


def _auto_fn(name: str):
    return resolve(name) if name in FORMULATIONS else None


def _fused(pair: str):
    """The formulation "auto"'s table chose for the fused ``pair`` if called now, else None."""
    return _auto_fn(pair) if current_mode() == "auto" else None


def fuses(pair: str) -> bool:
    """True when a fused pair (``"conv_relu"``, ``"conv_sigmoid"``, ``"conv_bn_eval"``) runs as one
    formulation if called now: under "auto" with the table choosing one for it. Callers
    that would otherwise call the ops separately (``combinators.serial``) fuse only then,
    so "autodiff" and "explicit" trace exactly the ops they always did."""
    return _fused(pair) is not None


def _conv_activation(pair: str, activation: str, x, w, b, conv_kwargs):
    fused = _fused(pair)
    if fused is None:       # dispatch.<activation>(dispatch.conv(...)): the two layers' ops
        return __getattr__(activation)(__getattr__("conv")(x, w, b, **conv_kwargs))
    for callback in observers():
        callback(pair, (x, w, b), conv_kwargs)
    return fused(x, w, b, **conv_kwargs)


def conv_relu(x, w, b=None, **conv_kwargs):
    """``relu(conv(x, w, b, **conv_kwargs))``: under "auto", the formulation the table
    chose for ``"conv_relu"`` (oneDNN with the bias and ReLU fused into the forward);
    otherwise ``dispatch.conv`` then ``dispatch.relu``, the same ops (and observer
    calls) as the two layers make unfused. Not an op of :mod:`jaxcnn.ops`: a pair
    ``combinators.serial`` fuses (see :mod:`jaxcnn.layers.fusion`)."""
    return _conv_activation("conv_relu", "relu", x, w, b, conv_kwargs)


def conv_sigmoid(x, w, b=None, **conv_kwargs):
    """``sigmoid(conv(x, w, b, **conv_kwargs))``: :func:`conv_relu` for the sigmoid (table
    entry ``"conv_sigmoid"``: oneDNN with the bias and a logistic post-op)."""
    return _conv_activation("conv_sigmoid", "sigmoid", x, w, b, conv_kwargs)


def conv_bn_eval(x, w, b, running_mean, running_var, weight=None, bias=None, *, eps: float = 1e-5,
                 relu: bool = False, **conv_kwargs):
    """``[relu](batch_norm(conv(x, w, b, **conv_kwargs), running_mean, running_var,
    weight, bias, train=False, eps=eps))``, a Conv, the BatchNorm after it (evaluation
    mode: its running statistics) and, when ``relu``, a ReLU. Under "auto", the
    formulation the table chose for ``"conv_bn_eval"`` (the BatchNorm folded into the
    convolution's weight and bias, then one oneDNN forward with the bias and ReLU as
    post-ops: :mod:`jaxcnn.kernels.onednn.fold`); otherwise ``dispatch.conv``,
    ``dispatch.batch_norm`` and ``dispatch.relu``, the ops the layers call unfused. Not
    an op of :mod:`jaxcnn.ops`: a run of layers ``combinators.serial`` fuses in
    evaluation only (:mod:`jaxcnn.layers.fusion`); training needs the batch's statistics."""
    fused = _fused("conv_bn_eval")
    if fused is None:
        y = __getattr__("conv")(x, w, b, **conv_kwargs)
        y = __getattr__("batch_norm")(y, running_mean, running_var, weight, bias, train=False, eps=eps,
                                      layout=conv_kwargs.get("layout", "NHWC"))[0]
        return __getattr__("relu")(y) if relu else y
    for callback in observers():
        callback("conv_bn_eval", (x, w, b, running_mean, running_var, weight, bias),
                 dict(conv_kwargs, eps=eps, relu=relu))
    return fused(x, w, b, running_mean, running_var, weight, bias, eps=eps, relu=relu, **conv_kwargs)


def __getattr__(name: str):
    if name.startswith("__") or not hasattr(ops, name):
        raise AttributeError(f"jaxcnn.ops has no op {name!r}")
    fn = _make(name)
    globals()[name] = fn
    return fn
