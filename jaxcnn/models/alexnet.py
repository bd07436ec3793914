"""AlexNet, torchvision's variant and module names (61,100,840 params at 1000 classes)."""
from __future__ import annotations

from ..combinators import serial
from ..layers import AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, MaxPool, Relu
from .base import Model


def alexnet(num_classes: int = 1000, dropout: float = 0.5, hidden: int = 4096) -> Model:
    """AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NeurIPS 2012), torchvision's single-tower variant.

    Input: 224x224x3 (NHWC; any size >= 63 works, the adaptive pool makes it 6x6).
    Options: ``num_classes`` (logit width), ``dropout`` (rate of both classifier
    dropouts), ``hidden`` (width of the two hidden dense layers; 4096 in the paper).
    Returns a :class:`Model`; 61,100,840 parameters at the defaults.

    Example::

        model = alexnet(num_classes=10, hidden=256)
    """
    features = serial(Conv(64, 11, 4, 2), Relu(), MaxPool(3, 2), Conv(192, 5, padding=2), Relu(), MaxPool(3, 2),
                      Conv(384, 3, padding=1), Relu(), Conv(256, 3, padding=1), Relu(),
                      Conv(256, 3, padding=1), Relu(), MaxPool(3, 2))
    classifier = serial(Dropout(dropout), Dense(hidden), Relu(), Dropout(dropout), Dense(hidden), Relu(),
                        Dense(num_classes))
    layer = serial(("features", features), ("avgpool", AdaptiveAvgPool(6)), ("flatten", Flatten()),
                   ("classifier", classifier), name="alexnet")
    return Model(layer, "alexnet", (224, 224, 3), num_classes, dict(dropout=dropout, hidden=hidden))
