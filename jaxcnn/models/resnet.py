"""ResNet-18/34/50 (torchvision's v1.5: stride in the 3x3 conv of bottlenecks, module
names conv1, bn1, layer1/0/conv1, ..., layer1/0/downsample/{0,1}, fc) and a CIFAR
ResNet-18 (3x3 stem, stride 1, no max-pool, for 32x32 inputs).

Parameter counts (1000 classes): resnet18 11,689,512; resnet34 21,797,672;
resnet50 25,557,032 (running statistics are state, not counted).
"""
from __future__ import annotations

from ..combinators import graph, serial
from ..layers import BatchNorm, Conv, Dense, GlobalAvgPool, MaxPool, Relu
from .base import Model


def _downsample(features, stride):
    return serial(Conv(features, 1, stride, use_bias=False), BatchNorm())


def basic_block(planes: int, stride: int = 1, downsample: bool = False):
    """conv3x3(stride)-bn-relu-conv3x3-bn, plus identity or 1x1 projection, then relu."""
    layers = {"conv1": Conv(planes, 3, stride, 1, use_bias=False), "bn1": BatchNorm(), "relu": Relu(),
              "conv2": Conv(planes, 3, 1, 1, use_bias=False), "bn2": BatchNorm()}
    if downsample:
        layers["downsample"] = _downsample(planes, stride)

    def forward(call, x):
        out = call("relu", call("bn1", call("conv1", x)))
        out = call("bn2", call("conv2", out))
        skip = call("downsample", x) if downsample else x
        return call("relu", call.add(out, skip))
    return graph(layers, forward, name="BasicBlock", type_name="BasicBlock")


def bottleneck(planes: int, stride: int = 1, downsample: bool = False, expansion: int = 4):
    """1x1 reduce - 3x3 (stride) - 1x1 expand (x4), each with BN, identity/projection, relu."""
    layers = {"conv1": Conv(planes, 1, use_bias=False), "bn1": BatchNorm(),
              "conv2": Conv(planes, 3, stride, 1, use_bias=False), "bn2": BatchNorm(),
              "conv3": Conv(planes * expansion, 1, use_bias=False), "bn3": BatchNorm(), "relu": Relu()}
    if downsample:
        layers["downsample"] = _downsample(planes * expansion, stride)

    def forward(call, x):
        out = call("relu", call("bn1", call("conv1", x)))
        out = call("relu", call("bn2", call("conv2", out)))
        out = call("bn3", call("conv3", out))
        skip = call("downsample", x) if downsample else x
        return call("relu", call.add(out, skip))
    return graph(layers, forward, name="Bottleneck", type_name="Bottleneck")


def resnet(depths=(2, 2, 2, 2), bottleneck_blocks: bool = False, num_classes: int = 1000, width: int = 64,
           stem: str = "imagenet", name: str = "resnet") -> Model:
    """Generic ResNet. ``stem="imagenet"``: 7x7/2 conv + 3x3/2 max-pool; ``"cifar"``: 3x3/1 conv."""
    expansion = 4 if bottleneck_blocks else 1
    block = bottleneck if bottleneck_blocks else basic_block
    if stem == "imagenet":
        items = [("conv1", Conv(width, 7, 2, 3, use_bias=False)), ("bn1", BatchNorm()), ("relu", Relu()),
                 ("maxpool", MaxPool(3, 2, 1))]
        natural = (224, 224, 3)
    elif stem == "cifar":
        items = [("conv1", Conv(width, 3, 1, 1, use_bias=False)), ("bn1", BatchNorm()), ("relu", Relu())]
        natural = (32, 32, 3)
    else:
        raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
    in_planes = width
    for i, depth in enumerate(depths):
        planes, stride = width * 2 ** i, 1 if i == 0 else 2
        blocks = []
        for j in range(depth):
            s = stride if j == 0 else 1
            down = j == 0 and (s != 1 or in_planes != planes * expansion)
            blocks.append(block(planes, s, down))
            in_planes = planes * expansion
        items.append((f"layer{i + 1}", serial(*blocks)))
    items += [("avgpool", GlobalAvgPool()), ("fc", Dense(num_classes))]
    return Model(serial(*items, name=name), name, natural, num_classes,
                 dict(depths=tuple(depths), bottleneck=bottleneck_blocks, width=width, stem=stem))


_RESNET_DOC = """{title} (He, Zhang, Ren & Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016), torchvision's v1.5{extra}.

    Input: {size} (NHWC; {smallest}). Options: ``num_classes``, ``width`` (the first
    stage's width, doubled per stage; 64 in the paper). Returns a :class:`Model`;
    {params} parameters at the defaults.
    """


def resnet18(num_classes: int = 1000, *, width: int = 64) -> Model:
    return resnet((2, 2, 2, 2), False, num_classes, width, name="resnet18")


def resnet34(num_classes: int = 1000, *, width: int = 64) -> Model:
    return resnet((3, 4, 6, 3), False, num_classes, width, name="resnet34")


def resnet50(num_classes: int = 1000, *, width: int = 64) -> Model:
    return resnet((3, 4, 6, 3), True, num_classes, width, name="resnet50")


def cifar_resnet18(num_classes: int = 10, *, width: int = 64) -> Model:
    return resnet((2, 2, 2, 2), False, num_classes, width, stem="cifar", name="cifar_resnet18")


resnet18.__doc__ = _RESNET_DOC.format(title="ResNet-18", extra="", size="224x224x3",
                                      smallest="any size >= 32x32 works", params="11,689,512")
resnet34.__doc__ = _RESNET_DOC.format(title="ResNet-34", extra="", size="224x224x3",
                                      smallest="any size >= 32x32 works", params="21,797,672")
resnet50.__doc__ = _RESNET_DOC.format(title="ResNet-50", extra=" (bottleneck blocks, stride in the 3x3 conv)",
                                      size="224x224x3", smallest="any size >= 32x32 works", params="25,557,032")
cifar_resnet18.__doc__ = _RESNET_DOC.format(
    title="CIFAR ResNet-18", extra=" with the CIFAR stem (3x3 stride-1 conv, no max-pool)", size="32x32x3",
    smallest="any size >= 8x8 works", params="11,173,962")


