"""Model registry: ``create(name, num_classes=..., **hparams)`` and ``available()``."""
from __future__ import annotations

from typing import Callable

from .alexnet import alexnet
from .base import Model
from .densenet import densenet121
from .digits_cnn import digits_cnn
from .fmnist_cnn import fmnist_cnn
from .googlenet import googlenet
from .lenet import lenet5
from .mlp import mlp
from .mobilenet import mobilenet_v2
from .resnet import cifar_resnet18, resnet18, resnet34, resnet50
from .shufflenet import shufflenet_v2_x1_0
from .squeezenet import squeezenet1_0
from .unet import unet
from .vgg import vgg11, vgg16

_MODELS: dict[str, Callable[..., Model]] = {
    "digits_cnn": digits_cnn, "lenet5": lenet5, "fmnist_cnn": fmnist_cnn, "mlp": mlp, "alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "cifar_resnet18": cifar_resnet18,
    "googlenet": googlenet, "mobilenet_v2": mobilenet_v2, "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "densenet121": densenet121, "squeezenet1_0": squeezenet1_0, "unet": unet,
}


def available() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_MODELS)


def register(name: str, builder: Callable[..., Model]) -> None:
    """Add a builder ``builder(num_classes=..., **hparams) -> Model`` under ``name``."""
    _MODELS[name] = builder


def create(name: str, *, num_classes: int | None = None, **hparams) -> Model:
    """Build model ``name``; ``num_classes`` defaults to the family's own (10 or 1000)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    if num_classes is not None:
        hparams["num_classes"] = num_classes
    return _MODELS[name](**hparams)
