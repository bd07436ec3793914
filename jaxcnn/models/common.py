"""Building blocks shared by the model families (torchvision module names)."""
from __future__ import annotations

from ..combinators import serial
from ..layers import BatchNorm, Conv, Relu, Relu6


def conv_bn_act(features, kernel_size, stride=1, padding=None, groups=1, act="relu", eps=1e-5,
                names=("0", "1", "2")):
    """Conv (no bias) -> BatchNorm -> activation, torchvision's Conv2dNormActivation
    (children "0", "1", "2"). ``padding`` defaults to (k-1)//2 ("same" for odd k)."""
    pad = (kernel_size - 1) // 2 if padding is None else padding
    items = [(names[0], Conv(features, kernel_size, stride, pad, groups=groups, use_bias=False)),
             (names[1], BatchNorm(eps=eps))]
    if act is not None:
        items.append((names[2], {"relu": Relu, "relu6": Relu6}[act]()))
    return serial(*items)
