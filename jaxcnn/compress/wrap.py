"""Models whose forward pass sees compressed weights while the float weights train.

``transformed_model(model, fn)`` is ``model`` with ``apply(params, ...)`` computing
``model.apply(fn(params), ...)``; ``init`` and the parameter tree are unchanged, so the
train loop, optimisers and checkpoints work as for the float model. Quantisation-aware
training and binary-weight training are two such ``fn`` with straight-through gradients.
"""
from __future__ import annotations

from typing import Callable

from ..models import Model, as_model
from ..types import Layer
from .binarize import binarize
from .quantize import fake_quantize


def transformed_model(model, fn: Callable, *, suffix: str = "compressed") -> Model:
    """``model`` (a Model or Layer) applying ``fn`` to its params before every forward pass."""
    model = as_model(model)
    inner = model.layer

    def apply(params, state, x, *, train=False, key=None, axis_name=None, **kwargs):
        return inner.apply(fn(params), state, x, train=train, key=key, axis_name=axis_name, **kwargs)

    layer = Layer(inner.init, apply, inner.name, inner.meta)
    return Model(layer, f"{model.name}+{suffix}", model.input_shape, model.num_classes, dict(model.hparams))


def qat_model(model, bits: int = 8, scheme: str = "per_channel_symmetric") -> Model:
    """Quantisation-aware training: kernels fake-quantised (straight-through) in every forward."""
    return transformed_model(model, lambda p: fake_quantize(p, bits, scheme, ste=True), suffix=f"qat{bits}")


def binary_model(model, method: str = "xnor") -> Model:
    """Binary-weight network (BinaryConnect or XNOR-Net weights, straight-through)."""
    return transformed_model(model, lambda p: binarize(p, method, ste=True), suffix=method)
