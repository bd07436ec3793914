"""Which adjacent layers ``combinators.serial`` may run as one fused op:

* a ``Conv`` and the ``ReLU`` (or sigmoid) right after it, as ``dispatch.conv_relu``
  (``dispatch.conv_sigmoid``) (under ``backprop="auto"``: oneDNN's convolution with the
  bias and the activation as post-ops, :mod:`jaxcnn.kernels.onednn.fused`), in training
  and evaluation alike;
* in evaluation only (``train=False``), a ``Conv``, the ``BatchNorm`` right after it (of
  the same layout) and, optionally, a ``ReLU`` after that, as ``dispatch.conv_bn_eval``:
  the BatchNorm's running statistics and affine folded into the convolution's weight and
  bias (:mod:`jaxcnn.kernels.onednn.fold`), then one oneDNN convolution with the bias
  (and the ReLU) as post-ops. The BatchNorm's state is returned unchanged, as its
  evaluation mode does. Training is never folded: it normalises with the batch's
  statistics and updates the running ones.

Why a registry and not the layers' ``meta``: ``meta`` is descriptive and never decides
what a layer computes (:class:`jaxcnn.types.Layer`); a wrapped or user-written layer may
carry ``kind="conv"`` and compute something else. Here only the very layer objects that
:func:`jaxcnn.layers.Conv`, :func:`jaxcnn.layers.BatchNorm`, :func:`jaxcnn.layers.Relu` and
the sigmoid activation layers built are known, each Conv with the functions the runs then call; any other layer (a
masked or quantised copy, a user's) is never fused. Nothing changes for the model: same
params and state trees, layer names, summary -- the run's children are still initialised
and named as before.

A run is fused only while :func:`active` for its table entry: "auto" with an entry for
``conv_relu`` / ``conv_sigmoid`` / ``conv_bn_eval`` (so "autodiff" and "explicit" trace exactly the unfused
programs) and nothing watching the children's outputs
(:func:`jaxcnn.layers.base.recording` for the summary and torch import,
:func:`~jaxcnn.layers.base.tapping` for activations / Grad-CAM): those need the
convolution's own output, which a fused run never materialises.
"""
from __future__ import annotations

import weakref
from typing import Callable, NamedTuple, Optional, Sequence

from .. import dispatch
from ..ops.layout import channels_last
from ..types import Layer
from .base import watched


class _Conv(NamedTuple):
    activation: Callable    # (params, x, "relu" | "sigmoid") -> act(conv(x))
    batch_norm: Callable    # (params, x, bn_params, bn_state, eps, relu) -> [relu](bn_eval(conv(x)))
    channels_last: bool


class Fold(NamedTuple):
    """A Conv -> BatchNorm [-> ReLU] run of ``length`` children (2 or 3) that evaluation
    may run as ``run(conv_params, bn_params, bn_state, x)``."""
    run: Callable
    length: int


_CONVS: "weakref.WeakKeyDictionary[Layer, _Conv]" = weakref.WeakKeyDictionary()
# activation layer -> "relu" / "sigmoid"
_ACTIVATIONS: "weakref.WeakKeyDictionary[Layer, str]" = weakref.WeakKeyDictionary()
# activation -> the auto-table entry (and dispatch function) of a Conv followed by it
PAIRS = {"relu": "conv_relu", "sigmoid": "conv_sigmoid"}
# BatchNorm layer -> (eps, channels-last?)
_BATCH_NORMS: "weakref.WeakKeyDictionary[Layer, tuple[float, bool]]" = weakref.WeakKeyDictionary()


def register_conv(layer: Layer, conv_activation: Callable, conv_bn_eval: Callable, layout: str) -> Layer:
    """Record that ``layer`` (a Conv in ``layout``) followed by a ReLU or a sigmoid may run
    as ``conv_activation(params, x, activation)`` (the activation of the layer's output),
    and followed by an evaluation-mode BatchNorm (and maybe a ReLU) as
    ``conv_bn_eval(params, x, bn_params, bn_state, eps, relu)``; returns ``layer``."""
    _CONVS[layer] = _Conv(conv_activation, conv_bn_eval, channels_last(layout))
    return layer


def register_activation(layer: Layer, activation: str) -> Layer:
    """Record that ``layer`` is a plain ``activation`` (a key of :data:`PAIRS`:
    ``dispatch.relu`` / ``dispatch.sigmoid``, no state, no options); returns it."""
    if activation not in PAIRS:
        raise ValueError(f"register_activation: activation must be one of {sorted(PAIRS)}, got {activation!r}")
    _ACTIVATIONS[layer] = activation
    return layer


def register_batch_norm(layer: Layer, eps: float, layout: str) -> Layer:
    """Record that ``layer`` is a plain BatchNorm (``dispatch.batch_norm`` of its params
    ``weight`` / ``bias`` and state ``running_mean`` / ``running_var``, ``eps``) in
    ``layout``; returns it."""
    _BATCH_NORMS[layer] = (eps, channels_last(layout))
    return layer


def active(pair: str = "conv_relu") -> bool:
    """True when fusing ``pair`` (``"conv_relu"``, ``"conv_sigmoid"`` or ``"conv_bn_eval"``, its auto-table
    entry) now would change neither the program's mode nor what an inspection tool sees
    (module docstring)."""
    return dispatch.fuses(pair) and not watched()


class Pair(NamedTuple):
    """A Conv and the activation after it, run as ``run(conv_params, x)`` while
    ``active(name)`` (``name``: ``"conv_relu"`` or ``"conv_sigmoid"``)."""
    run: Callable
    name: str


def conv_activation(first: Layer, second: Layer) -> Optional[Pair]:
    """The :class:`Pair` computing ``second(first(x))`` when ``first`` is a registered Conv
    and ``second`` a registered ReLU or sigmoid, else None."""
    conv, activation = _CONVS.get(first), _ACTIVATIONS.get(second)
    if conv is None or activation is None:
        return None

    def run(params, x):
        return conv.activation(params, x, activation)
    return Pair(run, PAIRS[activation])


def conv_bn_eval(layers: Sequence[Layer]) -> Optional[Fold]:
    """The :class:`Fold` of ``layers[0]`` (a registered Conv), ``layers[1]`` (a registered
    BatchNorm of the Conv's layout) and ``layers[2]`` when it is a registered ReLU; None
    when the first two are not such a pair. ``fold.run`` computes the run's evaluation-mode
    output (``train=False``)."""
    if len(layers) < 2 or (conv := _CONVS.get(layers[0])) is None or layers[1] not in _BATCH_NORMS:
        return None
    eps, bn_channels_last = _BATCH_NORMS[layers[1]]
    if bn_channels_last != conv.channels_last:   # normalising another axis than the conv's channels
        return None
    relu = len(layers) > 2 and _ACTIVATIONS.get(layers[2]) == "relu"

    def run(params, bn_params, bn_state, x):
        return conv.batch_norm(params, x, bn_params, bn_state, eps, relu)
    return Fold(run, 3 if relu else 2)
