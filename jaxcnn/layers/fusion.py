"""Which adjacent layers ``combinators.serial`` may run as one fused op: a ``Conv`` and the
``ReLU`` right after it, as ``dispatch.conv_relu`` (under ``backprop="auto"``: oneDNN's
convolution with the bias and ReLU as post-ops, :mod:`jaxcnn.kernels.onednn.fused`).

Why a registry and not the layers' ``meta``: ``meta`` is descriptive and never decides
what a layer computes (:class:`jaxcnn.types.Layer`); a wrapped or user-written layer may
carry ``kind="conv"`` and compute something else. Here only the very layer objects that
:func:`jaxcnn.layers.Conv` and :func:`jaxcnn.layers.Relu` built are known, each with the
function the pair then runs; any other layer (a masked or quantised copy, a user's) is
never fused. Nothing changes for the model: same params and state trees, layer names,
summary -- the pair's two children are still initialised and named as before.

A pair is fused only while :func:`active`: "auto" with a table entry for ``conv_relu``
(so "autodiff" and "explicit" trace exactly the unfused programs) and nothing watching
the children's outputs (:func:`jaxcnn.layers.base.recording` for the summary and torch
import, :func:`~jaxcnn.layers.base.tapping` for activations / Grad-CAM): those need the
convolution's own output, which a fused pair never materialises.
"""
from __future__ import annotations

import weakref
from typing import Callable, Optional

from .. import dispatch
from ..types import Layer
from .base import watched

# Conv layer -> fused(params, x) = relu(that conv's output)
_CONV_RELU: "weakref.WeakKeyDictionary[Layer, Callable]" = weakref.WeakKeyDictionary()
_RELUS: "weakref.WeakSet[Layer]" = weakref.WeakSet()


def register_conv(layer: Layer, conv_relu: Callable) -> Layer:
    """Record that ``layer`` (a Conv) followed by a ReLU may run as ``conv_relu(params,
    x)`` (relu of the layer's output); returns ``layer``."""
    _CONV_RELU[layer] = conv_relu
    return layer


def register_relu(layer: Layer) -> Layer:
    """Record that ``layer`` is a plain ReLU (``dispatch.relu``, no state); returns it."""
    _RELUS.add(layer)
    return layer


def active() -> bool:
    """True when fusing now would change neither the program's mode nor what an
    inspection tool sees (module docstring)."""
    return dispatch.fuses("conv_relu") and not watched()


def conv_relu(first: Layer, second: Layer) -> Optional[Callable]:
    """``fused(params_of_first, x)`` computing ``second(first(x))`` when ``first`` is a
    registered Conv and ``second`` a registered ReLU, else None."""
    if second not in _RELUS:
        return None
    return _CONV_RELU.get(first)
