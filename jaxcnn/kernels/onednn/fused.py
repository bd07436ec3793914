"""A convolution with its bias and a following ReLU or sigmoid inside oneDNN's forward
primitive.

Unfused, a train step's ``relu(conv(x, w) + b)`` is oneDNN's forward writing the
convolution, then an XLA pass reading it back to add the bias and clamp; backward, XLA
masks dy, reduces it for the bias gradient and hands the mask to the two gradient calls.
Here the forward is one custom call (``jaxcnn_onednn_conv_bias_forward``: the bias as
oneDNN's bias argument, the ReLU as an eltwise post-op) that writes ``y`` once.
Backward, the bias gradient stays an XLA reduction, which XLA fuses into the pass that
masks dy: conv.cc can also return it from the weight-gradient primitive
(``jaxcnn_onednn_conv_weight_bias_grad``, :data:`BIAS_GRAD_IN_ONEDNN`), but fmnist_cnn's
step was no faster that way: float32 0.998x / 0.992x the unfused step against 1.029x /
1.001x with XLA's reduction, bfloat16 1.313x / 1.240x against 1.228x / 1.255x (two runs
each, experiments/bench_conv_relu.py --db-in-onednn, docs/performance.md). The sigmoid
pairs (LeNet-5's, 6 and 16 channels) do take it from oneDNN: :data:`DB_IN_ONEDNN_FOR`.

Gradients are those of ``jax.nn.relu(conv + b)``: ``g = dy`` where ``y > 0``, else 0
(derivative 0 at exactly 0, torch's and ``jax.nn.relu``'s convention; ``y > 0`` iff the
pre-activation is), then ``dx``, ``dw`` and ``db = sum(g)`` over batch and space. For
the sigmoid (oneDNN's ``eltwise_logistic`` post-op; LeNet-5's conv -> sigmoid pairs),
those of ``jax.nn.sigmoid(conv + b)``: ``g = dy * (y * (1 - y))`` from the saved output,
``jax.nn.sigmoid``'s own derivative, which XLA fuses with the bias-gradient reduction.

:func:`conv_bias` is the same call with the activation optional (``activation=None``:
the bias alone, added by oneDNN -- a folded BatchNorm's, :mod:`.fold`); :func:`conv_relu`
and :func:`conv_sigmoid` are it with the ReLU and the sigmoid. Taken where
:func:`.conv.applies` (float32 / bfloat16 channels-last, zero padding, the library
loaded) and the result dtype stays float32 / bfloat16; everywhere else :func:`conv_bias`
is :func:`.conv.conv` (then ``ops.relu`` / ``ops.sigmoid``) -- what "auto" ran unfused. On
other platforms ``lax.platform_dependent`` puts lax's convolution (and its autodiff) in
the custom calls' place.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ... import ops
from ..xla.checked import check, finish
from ..xla.conv import lax_conv
from .conv import DTYPES, applies, conv, geometry_attribute, output_shape

# The bias gradient from oneDNN's weight-gradient primitive (True) or an XLA reduction
# fused with the activation's backward pass (False); None: per activation, as measured
# (DB_IN_ONEDNN_FOR). Read when traced.
BIAS_GRAD_IN_ONEDNN: bool | None = None
# Where None puts it: the ReLU pairs' db in XLA (fmnist_cnn's step no faster in oneDNN,
# module docstring); the sigmoid pairs' in oneDNN (lenet5's step 1.19x the unfused one
# against 1.15x with XLA's reduction, whose 6-channel conv1 sum it runs slowly;
# experiments/bench_conv_relu.py --model lenet5 --without conv_sigmoid,avg_pool --db-in-onednn).
DB_IN_ONEDNN_FOR = {None: False, "relu": False, "sigmoid": True}


def bias_grad_in_onednn(activation) -> bool:
    """Whether a pair with ``activation`` takes its bias gradient from oneDNN (now)."""
    return DB_IN_ONEDNN_FOR[activation] if BIAS_GRAD_IN_ONEDNN is None else bool(BIAS_GRAD_IN_ONEDNN)

# activation -> (conv.cc's "activation" attribute, the op an unfused run applies)
ACTIVATIONS = {None: (0, None), "relu": (1, ops.relu), "sigmoid": (2, ops.sigmoid)}


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"conv_bias: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")


def _activate(y, activation):
    op = ACTIVATIONS[activation][1]
    return y if op is None else op(y)


def _reference(x, w, b, geo, activation):
    """lax's ``[act](conv(x, w) + b)`` (``b`` empty: no bias): other platforms' branch."""
    y = lax_conv(x, w, *geo)
    if b.size:
        y = y + b
    return _activate(y, activation)


def _target(name, dtype):
    return name + ("_bf16" if dtype == jnp.bfloat16 else "")


def _attr(geo):
    stride, pads, dilation, groups = geo
    return geometry_attribute(groups, stride, dilation, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_bias(x, w, b, geo, activation):   # b: (C_out,) or (0,) for none; geo: lax_conv's order
    def cpu(x, w, b):
        out = jax.ShapeDtypeStruct(output_shape(x, w, *geo[:3]), x.dtype)
        return jax.ffi.ffi_call(_target("jaxcnn_onednn_conv_bias_forward", x.dtype), out, vmap_method="sequential")(
            x, w, b, geometry=_attr(geo), activation=ACTIVATIONS[activation][0])
    return lax.platform_dependent(x, w, b, cpu=cpu, default=lambda x, w, b: _reference(x, w, b, geo, activation))


def _conv_bias_fwd(x, w, b, geo, activation):
    y = _conv_bias(x, w, b, geo, activation)
    return y, (x, w, b, None if activation is None else y)


def _bias_grad(g, b):
    """sum of g over batch and space in b's dtype ((0,) for no bias)."""
    if not b.size:
        return jnp.zeros_like(b)
    return jnp.sum(g, axis=tuple(range(g.ndim - 1)), dtype=jnp.float32).astype(b.dtype)


def _activation_grad(dy, y, activation):
    """dL/d(pre-activation) from dL/dy and the saved output ``y``."""
    if activation == "relu":
        # jax.nn.relu's derivative (0 at 0); a where, not dy * mask: NaN/inf in dy stay put
        return jnp.where(y > 0, dy, jnp.zeros_like(dy))
    if activation == "sigmoid":
        return dy * (y * (1 - y))           # jax.nn.sigmoid's derivative, from its output
    return dy


def _conv_bias_bwd(geo, activation, residuals, dy):
    x, w, b, y = residuals
    g = _activation_grad(dy, y, activation)
    attr = _attr(geo)

    def cpu(x, w, b, g):
        dx = jax.ffi.ffi_call(_target("jaxcnn_onednn_conv_input_grad", g.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype),
                              vmap_method="sequential")(g, w, geometry=attr)
        if not (b.size and bias_grad_in_onednn(activation)):
            dw = jax.ffi.ffi_call(_target("jaxcnn_onednn_conv_weight_grad", g.dtype),
                                  jax.ShapeDtypeStruct(w.shape, w.dtype), vmap_method="sequential")(x, g, geometry=attr)
            return dx, dw, _bias_grad(g, b)
        dw, db = jax.ffi.ffi_call(_target("jaxcnn_onednn_conv_weight_bias_grad", g.dtype),
                                  (jax.ShapeDtypeStruct(w.shape, w.dtype), jax.ShapeDtypeStruct(b.shape, b.dtype)),
                                  vmap_method="sequential")(x, g, geometry=attr)
        return dx, dw, db

    def other(x, w, b, g):
        return jax.vjp(lambda x, w, b: _reference(x, w, b, geo, None), x, w, b)[1](g)
    return lax.platform_dependent(x, w, b, g, cpu=cpu, default=other)


_conv_bias.defvjp(_conv_bias_fwd, _conv_bias_bwd)


def conv_bias(x, w, b=None, *, activation: str | None, stride=1, padding=0, dilation=1, groups: int = 1,
              padding_mode: str = "zeros", layout: str = "NHWC"):
    """``[act](ops.conv(x, w, b, ...))`` for ``activation`` None, ``"relu"`` or
    ``"sigmoid"`` (the conv's signature, values and errors; the activation's gradients
    those of ``jax.nn.relu`` / ``jax.nn.sigmoid``) as one oneDNN forward with the bias
    and the activation fused, and oneDNN's backward passes (module docstring); off
    oneDNN's path :func:`.conv.conv` then ``ops.relu`` / ``ops.sigmoid``. Another
    ``activation`` raises ``ValueError``."""
    _check_activation(activation)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                  layout=layout)

    def unfused():
        return _activate(conv(x, w, b, **kwargs), activation)
    if not applies(x, w, layout, padding_mode):
        return unfused()
    c = check(ops.conv, "conv", x, w, b, **kwargs)
    if c.out.dtype not in DTYPES:           # e.g. a float64 bias promotes the result
        return unfused()
    bias = jnp.zeros((0,), c.out.dtype) if b is None else jnp.asarray(b, c.out.dtype)
    y = _conv_bias(c.x, c.w, bias, (c.stride, c.pads, c.dilation, groups), activation)
    return finish(y, None, c)


def conv_relu(x, w, b=None, **conv_kwargs):
    """``ops.relu(ops.conv(x, w, b, **conv_kwargs))``: :func:`conv_bias` with the ReLU."""
    return conv_bias(x, w, b, activation="relu", **conv_kwargs)


def conv_sigmoid(x, w, b=None, **conv_kwargs):
    """``ops.sigmoid(ops.conv(x, w, b, **conv_kwargs))``: :func:`conv_bias` with the sigmoid."""
    return conv_bias(x, w, b, activation="sigmoid", **conv_kwargs)
