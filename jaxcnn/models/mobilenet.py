"""MobileNetV2 (torchvision's module names: features/0, features/1/conv/0/0, ...,
classifier/1). 3,504,872 params at 1000 classes, width 1.0."""
from __future__ import annotations

from ..combinators import graph, serial
from ..layers import BatchNorm, Conv, Dense, Dropout, GlobalAvgPool
from .base import Model
from .common import conv_bn_act

# expansion t, output channels c, repeats n, first stride s
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]


def _make_divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def inverted_residual(in_ch: int, out_ch: int, stride: int, expand_ratio: int):
    """[1x1 expand-BN-ReLU6] -> 3x3 depthwise-BN-ReLU6 -> 1x1 project-BN, + x when shapes allow."""
    hidden = int(round(in_ch * expand_ratio))
    items = []
    if expand_ratio != 1:
        items.append(conv_bn_act(hidden, 1, act="relu6"))
    items += [conv_bn_act(hidden, 3, stride, groups=hidden, act="relu6"),
              Conv(out_ch, 1, use_bias=False), BatchNorm()]
    use_res = stride == 1 and in_ch == out_ch
    layers = {"conv": serial(*items)}

    def forward(call, x):
        y = call("conv", x)
        return call.add(x, y) if use_res else y
    return graph(layers, forward, name="InvertedResidual", type_name="InvertedResidual")


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> Model:
    """MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
    Bottlenecks", CVPR 2018), torchvision's module names.

    Input: 224x224x3 (NHWC; >= 32x32 works). Options: ``num_classes``, ``width_mult``
    (channel multiplier, rounded to multiples of 8), ``dropout`` (before the
    classifier). Returns a :class:`Model`; 3,504,872 parameters at the defaults.
    """
    in_ch = _make_divisible(32 * width_mult)
    last = _make_divisible(1280 * max(1.0, width_mult))
    features = [conv_bn_act(in_ch, 3, 2, act="relu6")]
    for t, c, n, s in SETTINGS:
        out_ch = _make_divisible(c * width_mult)
        for i in range(n):
            features.append(inverted_residual(in_ch, out_ch, s if i == 0 else 1, t))
            in_ch = out_ch
    features.append(conv_bn_act(last, 1, act="relu6"))
    layer = serial(("features", serial(*features)), ("avgpool", GlobalAvgPool()),
                   ("classifier", serial(Dropout(dropout), Dense(num_classes))), name="mobilenet_v2")
    return Model(layer, "mobilenet_v2", (224, 224, 3), num_classes, dict(width_mult=width_mult, dropout=dropout))
