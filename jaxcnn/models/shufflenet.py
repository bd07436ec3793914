"""ShuffleNetV2 x1.0 (torchvision's module names). 2,278,604 params at 1000 classes.

Stride-1 units split the channels in half, transform one half and concatenate;
stride-2 units transform the input twice (branch1, branch2) and concatenate; each unit
ends with a 2-group channel shuffle.
"""
from __future__ import annotations

from .. import dispatch  # the ops as traced under the current backprop mode
from ..combinators import graph, serial
from ..layers import BatchNorm, Conv, Dense, GlobalAvgPool, MaxPool, Relu
from .base import Model

STAGES = {"x0_5": [24, 48, 96, 192, 1024], "x1_0": [24, 116, 232, 464, 1024],
          "x1_5": [24, 176, 352, 704, 1024], "x2_0": [24, 244, 488, 976, 2048]}


def shuffle_unit(in_ch: int, out_ch: int, stride: int):
    """One ShuffleNetV2 unit from ``in_ch`` to ``out_ch`` channels: stride 1 splits the
    channels, stride 2 transforms the whole input twice; a 2-group channel shuffle ends it."""
    branch = out_ch // 2
    layers = {}
    if stride > 1:
        layers["branch1"] = serial(Conv(in_ch, 3, stride, 1, groups=in_ch, use_bias=False), BatchNorm(),
                                   Conv(branch, 1, use_bias=False), BatchNorm(), Relu())
    layers["branch2"] = serial(Conv(branch, 1, use_bias=False), BatchNorm(), Relu(),
                               Conv(branch, 3, stride, 1, groups=branch, use_bias=False), BatchNorm(),
                               Conv(branch, 1, use_bias=False), BatchNorm(), Relu())

    def forward(call, x):
        if stride == 1:
            half = x.shape[-1] // 2   # torch's x.chunk(2, dim=1) on the channel axis
            out = call.concat(x[..., :half], call("branch2", x[..., half:]))
        else:
            out = call.concat(call("branch1", x), call("branch2", x))
        return dispatch.channel_shuffle(out, 2)
    return graph(layers, forward, name="InvertedResidual", type_name="ShuffleUnit")


def shufflenet_v2(num_classes: int = 1000, size: str = "x1_0", repeats=(4, 8, 4)) -> Model:
    """A ShuffleNetV2 of width ``size`` (a key of :data:`STAGES`; see :func:`shufflenet_v2_x1_0`)."""
    ch = STAGES[size]
    items = [("conv1", serial(Conv(ch[0], 3, 2, 1, use_bias=False), BatchNorm(), Relu())),
             ("maxpool", MaxPool(3, 2, 1))]
    in_ch = ch[0]
    for i, (n, out_ch) in enumerate(zip(repeats, ch[1:4])):
        units = [shuffle_unit(in_ch, out_ch, 2)] + [shuffle_unit(out_ch, out_ch, 1) for _ in range(n - 1)]
        items.append((f"stage{i + 2}", serial(*units)))
        in_ch = out_ch
    items += [("conv5", serial(Conv(ch[4], 1, use_bias=False), BatchNorm(), Relu())),
              ("avgpool", GlobalAvgPool()), ("fc", Dense(num_classes))]
    name = f"shufflenet_v2_{size}"
    return Model(serial(*items, name=name), name, (224, 224, 3), num_classes, dict(size=size))


def shufflenet_v2_x1_0(num_classes: int = 1000) -> Model:
    """ShuffleNetV2 x1.0 (Ma, Zhang, Zheng & Sun, "ShuffleNet V2: Practical Guidelines for
    Efficient CNN Architecture Design", ECCV 2018), torchvision's module names.

    Input: 224x224x3 (NHWC; >= 32x32 works). Options: ``num_classes``. Returns a
    :class:`Model`; 2,278,604 parameters at the defaults.
    """
    return shufflenet_v2(num_classes, "x1_0")
