"""DenseNet-121 (torchvision's module names: features/conv0, features/denseblock1/
denselayer1/norm1, ..., features/transition1/conv, features/norm5, classifier).
7,978,856 params at 1000 classes (growth 32, bn_size 4, 64 initial features)."""
from __future__ import annotations

from ..combinators import graph, serial
from ..layers import AvgPool, BatchNorm, Conv, Dense, GlobalAvgPool, MaxPool, Relu
from .base import Model


def dense_layer(growth: int, bn_size: int):
    """BN-ReLU-1x1 conv (bn_size*growth) - BN-ReLU-3x3 conv (growth)."""
    return serial(("norm1", BatchNorm()), ("relu1", Relu()), ("conv1", Conv(bn_size * growth, 1, use_bias=False)),
                  ("norm2", BatchNorm()), ("relu2", Relu()), ("conv2", Conv(growth, 3, padding=1, use_bias=False)))


def dense_block(num_layers: int, growth: int, bn_size: int):
    """Each layer sees the concatenation of the block input and all earlier layers' outputs."""
    layers = {f"denselayer{i + 1}": dense_layer(growth, bn_size) for i in range(num_layers)}

    def forward(call, x):
        feats = [x]
        for n in layers:
            feats.append(call(n, call.concat(*feats) if len(feats) > 1 else feats[0]))
        return call.concat(*feats)
    return graph(layers, forward, name="DenseBlock", type_name="DenseBlock")


def transition(features: int):
    """BN-ReLU-1x1 conv to ``features`` channels, then 2x2 average pooling (between dense blocks)."""
    return serial(("norm", BatchNorm()), ("relu", Relu()), ("conv", Conv(features, 1, use_bias=False)),
                  ("pool", AvgPool(2, 2)))


def densenet(block_config=(6, 12, 24, 16), growth: int = 32, init_features: int = 64, bn_size: int = 4,
             num_classes: int = 1000, name: str = "densenet121") -> Model:
    """A DenseNet with ``block_config`` dense layers per block (see :func:`densenet121`)."""
    items = [("conv0", Conv(init_features, 7, 2, 3, use_bias=False)), ("norm0", BatchNorm()), ("relu0", Relu()),
             ("pool0", MaxPool(3, 2, 1))]
    ch = init_features
    for i, n in enumerate(block_config):
        items.append((f"denseblock{i + 1}", dense_block(n, growth, bn_size)))
        ch += n * growth
        if i != len(block_config) - 1:
            items.append((f"transition{i + 1}", transition(ch // 2)))
            ch //= 2
    items.append(("norm5", BatchNorm()))
    layer = serial(("features", serial(*items)), ("relu", Relu()), ("avgpool", GlobalAvgPool()),
                   ("classifier", Dense(num_classes)), name=name)
    return Model(layer, name, (224, 224, 3), num_classes,
                 dict(block_config=tuple(block_config), growth=growth, init_features=init_features, bn_size=bn_size))


def densenet121(num_classes: int = 1000, *, growth: int = 32, init_features: int = 64, bn_size: int = 4) -> Model:
    """DenseNet-121 (Huang, Liu, van der Maaten & Weinberger, "Densely Connected
    Convolutional Networks", CVPR 2017), torchvision's module names.

    Input: 224x224x3 (NHWC; >= 32x32 works). Options: ``num_classes``, ``growth`` (the
    growth rate k: channels each dense layer adds), ``init_features`` (stem width),
    ``bn_size`` (bottleneck width factor: each 1x1 conv outputs ``bn_size * growth``).
    Returns a :class:`Model`; 7,978,856 parameters at the defaults.
    """
    return densenet((6, 12, 24, 16), growth, init_features, bn_size, num_classes=num_classes, name="densenet121")
