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
    """A VGG of configuration ``config`` (a key of :data:`CONFIGS`; see :func:`vgg16`)."""
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


_VGG_DOC = """{title} (Simonyan & Zisserman, "Very Deep Convolutional Networks for
    Large-Scale Image Recognition", ICLR 2015), torchvision's configuration "{letter}".

    Input: 224x224x3 (NHWC; >= 32x32 works). Options: ``num_classes``, ``batch_norm``
    (BN after every conv, torchvision's ``{name}_bn``), ``hidden`` (the two hidden dense
    widths), ``pool_size`` (the adaptive average pool's output before the classifier),
    ``dropout``, ``width_divisor`` (divides every conv width, for small variants).
    Returns a :class:`Model`; {params} parameters at the defaults.
    """


def vgg11(num_classes: int = 1000, *, batch_norm: bool = False, hidden: int = 4096, pool_size: int = 7,
          dropout: float = 0.5, width_divisor: int = 1) -> Model:
    return vgg("vgg11", num_classes, batch_norm, hidden, pool_size, dropout, width_divisor)


def vgg16(num_classes: int = 1000, *, batch_norm: bool = False, hidden: int = 4096, pool_size: int = 7,
          dropout: float = 0.5, width_divisor: int = 1) -> Model:
    return vgg("vgg16", num_classes, batch_norm, hidden, pool_size, dropout, width_divisor)


vgg11.__doc__ = _VGG_DOC.format(title="VGG-11", letter="A", name="vgg11", params="132,863,336")
vgg16.__doc__ = _VGG_DOC.format(title="VGG-16", letter="D", name="vgg16", params="138,357,544")
