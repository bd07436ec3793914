"""SqueezeNet 1.0 (torchvision's module names; 1,248,424 params at 1000 classes):
Fire modules (1x1 squeeze, then 1x1 and 3x3 expand concatenated), ceil-mode pools,
and a 1x1-conv classifier followed by global average pooling."""
from __future__ import annotations

from ..combinators import graph, serial
from ..layers import AdaptiveAvgPool, Conv, Dropout, Flatten, MaxPool, Relu
from .base import Model


def fire(squeeze: int, expand1x1: int, expand3x3: int):
    """A Fire module: 1x1 squeeze to ``squeeze`` channels, then 1x1 (``expand1x1``) and 3x3
    (``expand3x3``) expansions concatenated on channels, each followed by ReLU."""
    layers = {"squeeze": Conv(squeeze, 1), "squeeze_activation": Relu(),
              "expand1x1": Conv(expand1x1, 1), "expand1x1_activation": Relu(),
              "expand3x3": Conv(expand3x3, 3, padding=1), "expand3x3_activation": Relu()}

    def forward(call, x):
        s = call("squeeze_activation", call("squeeze", x))
        return call.concat(call("expand1x1_activation", call("expand1x1", s)),
                           call("expand3x3_activation", call("expand3x3", s)))
    return graph(layers, forward, name="Fire", type_name="Fire")


def squeezenet1_0(num_classes: int = 1000, dropout: float = 0.5) -> Model:
    """SqueezeNet 1.0 (Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
    parameters and <0.5MB model size", 2016), torchvision's module names.

    Input: 224x224x3 (NHWC; >= 48x48 works). Options: ``num_classes``, ``dropout``
    (before the 1x1-conv classifier). Returns a :class:`Model`; 1,248,424 parameters at
    the defaults.
    """
    features = serial(Conv(96, 7, 2), Relu(), MaxPool(3, 2, ceil_mode=True), fire(16, 64, 64), fire(16, 64, 64),
                      fire(32, 128, 128), MaxPool(3, 2, ceil_mode=True), fire(32, 128, 128), fire(48, 192, 192),
                      fire(48, 192, 192), fire(64, 256, 256), MaxPool(3, 2, ceil_mode=True), fire(64, 256, 256))
    classifier = serial(Dropout(dropout), Conv(num_classes, 1), Relu(), AdaptiveAvgPool(1))
    layer = serial(("features", features), ("classifier", classifier), ("flatten", Flatten()), name="squeezenet1_0")
    return Model(layer, "squeezenet1_0", (224, 224, 3), num_classes, dict(dropout=dropout))
