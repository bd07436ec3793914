"""VGG-11/13/16/19 (torchvision's configurations, module names and classifier).

``hidden`` (4096) and ``pool_size`` (7, the adaptive average pool before the
classifier) are exposed so small variants (e.g. 32x32 inputs, narrow classifiers)
can be built for tests; the defaults reproduce torchvision's parameter counts.
"""
from __future__ import annotations

from ..combinators import serial
from ..layers import AdaptiveAvgPool, BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool, Relu
from .base import Model

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg(config: str = "vgg16", num_classes: int = 1000, batch_norm: bool = False, hidden: int = 4096,
        pool_size: int = 7, dropout: float = 0.5, width_divisor: int = 1) -> Model:
    items = []
    for v in CONFIGS[config]:
        if v == "M":
            items.append(MaxPool(2, 2))
        else:
            items.append(Conv(v // width_divisor, 3, padding=1))
            if batch_norm:
                items.append(BatchNorm())
            items.append(Relu())
    classifier = serial(Dense(hidden), Relu(), Dropout(dropout), Dense(hidden), Relu(), Dropout(dropout),
                        Dense(num_classes))
    layer = serial(("features", serial(*items)), ("avgpool", AdaptiveAvgPool(pool_size)), ("flatten", Flatten()),
                   ("classifier", classifier), name=config)
    name = config + ("_bn" if batch_norm else "")
    return Model(layer, name, (224, 224, 3), num_classes,
                 dict(batch_norm=batch_norm, hidden=hidden, pool_size=pool_size, width_divisor=width_divisor))


def vgg11(num_classes: int = 1000, **kw) -> Model:
    return vgg("vgg11", num_classes, **kw)


def vgg16(num_classes: int = 1000, **kw) -> Model:
    return vgg("vgg16", num_classes, **kw)
