"""GoogLeNet (Inception v1), torchvision's variant without auxiliary heads: BN after
every conv (eps 1e-3), ceil-mode max-pools, and -- as torchvision does -- a 3x3 conv in
the "5x5" branch. 6,624,904 params at 1000 classes. ``transform_input`` is not applied."""
from __future__ import annotations

from ..combinators import graph, serial
from ..layers import BatchNorm, Conv, Dense, Dropout, GlobalAvgPool, MaxPool, Relu
from .base import Model


def basic_conv(features, kernel_size, stride=1, padding=0):
    """torchvision's BasicConv2d: conv (no bias) -> BN(eps=1e-3) -> ReLU."""
    return serial(("conv", Conv(features, kernel_size, stride, padding, use_bias=False)),
                  ("bn", BatchNorm(eps=1e-3)), ("relu", Relu()))


def inception(ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
    """Four branches concatenated on channels: 1x1 | 1x1-3x3 | 1x1-3x3 | maxpool-1x1."""
    layers = {"branch1": basic_conv(ch1x1, 1),
              "branch2": serial(basic_conv(ch3x3red, 1), basic_conv(ch3x3, 3, padding=1)),
              "branch3": serial(basic_conv(ch5x5red, 1), basic_conv(ch5x5, 3, padding=1)),
              "branch4": serial(MaxPool(3, 1, 1, ceil_mode=True), basic_conv(pool_proj, 1))}
    return graph(layers, lambda call, x: call.concat(*(call(n, x) for n in layers)), name="Inception",
                 type_name="Inception")


def googlenet(num_classes: int = 1000, dropout: float = 0.2) -> Model:
    """GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", CVPR
    2015) as torchvision builds it: BN after every conv, no auxiliary heads.

    Input: 224x224x3 (NHWC; >= 32x32 works). Options: ``num_classes``, ``dropout``
    (before the classifier). Returns a :class:`Model`; 6,624,904 parameters at the
    defaults.
    """
    items = [("conv1", basic_conv(64, 7, 2, 3)), ("maxpool1", MaxPool(3, 2, ceil_mode=True)),
             ("conv2", basic_conv(64, 1)), ("conv3", basic_conv(192, 3, padding=1)),
             ("maxpool2", MaxPool(3, 2, ceil_mode=True)),
             ("inception3a", inception(64, 96, 128, 16, 32, 32)),
             ("inception3b", inception(128, 128, 192, 32, 96, 64)),
             ("maxpool3", MaxPool(3, 2, ceil_mode=True)),
             ("inception4a", inception(192, 96, 208, 16, 48, 64)),
             ("inception4b", inception(160, 112, 224, 24, 64, 64)),
             ("inception4c", inception(128, 128, 256, 24, 64, 64)),
             ("inception4d", inception(112, 144, 288, 32, 64, 64)),
             ("inception4e", inception(256, 160, 320, 32, 128, 128)),
             ("maxpool4", MaxPool(2, 2, ceil_mode=True)),
             ("inception5a", inception(256, 160, 320, 32, 128, 128)),
             ("inception5b", inception(384, 192, 384, 48, 128, 128)),
             ("avgpool", GlobalAvgPool()), ("dropout", Dropout(dropout)), ("fc", Dense(num_classes))]
    return Model(serial(*items, name="googlenet"), "googlenet", (224, 224, 3), num_classes, dict(dropout=dropout))
