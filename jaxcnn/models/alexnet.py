"""AlexNet, torchvision's variant and module names (61,100,840 params at 1000 classes)."""
from __future__ import annotations

from ..combinators import serial
from ..layers import AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, MaxPool, Relu
from .base import Model


def alexnet(num_classes: int = 1000, dropout: float = 0.5, hidden: int = 4096) -> Model:
    features = serial(Conv(64, 11, 4, 2), Relu(), MaxPool(3, 2), Conv(192, 5, padding=2), Relu(), MaxPool(3, 2),
                      Conv(384, 3, padding=1), Relu(), Conv(256, 3, padding=1), Relu(),
                      Conv(256, 3, padding=1), Relu(), MaxPool(3, 2))
    classifier = serial(Dropout(dropout), Dense(hidden), Relu(), Dropout(dropout), Dense(hidden), Relu(),
                        Dense(num_classes))
    layer = serial(("features", features), ("avgpool", AdaptiveAvgPool(6)), ("flatten", Flatten()),
                   ("classifier", classifier), name="alexnet")
    return Model(layer, "alexnet", (224, 224, 3), num_classes, dict(dropout=dropout, hidden=hidden))
