"""U-Net (Ronneberger et al.) with 'same' 3x3 convs + BN, max-pool downsampling and
2x2 stride-2 transposed-conv upsampling; skip connections concatenate encoder maps.
Output: per-pixel logits (N, H, W, num_classes); H and W must be divisible by
2**depth. ``base`` (64 in the paper) sets the first width, doubled per level."""
from __future__ import annotations

from ..combinators import graph, serial
from ..layers import BatchNorm, Conv, ConvTranspose, MaxPool, Relu
from .base import Model


def double_conv(features: int):
    """Two 3x3 'same' conv (no bias) -> BN -> ReLU blocks of ``features`` channels."""
    return serial(Conv(features, 3, padding=1, use_bias=False), BatchNorm(), Relu(),
                  Conv(features, 3, padding=1, use_bias=False), BatchNorm(), Relu())


def unet(num_classes: int = 2, base: int = 64, depth: int = 4, input_shape: tuple = (128, 128, 1)) -> Model:
    """U-Net (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical
    Image Segmentation", MICCAI 2015) with 'same' convs and batch norm.

    Input: ``input_shape`` (128x128x1 by default; H and W divisible by ``2**depth``).
    Output: per-pixel logits ``(N, H, W, num_classes)``. Options: ``num_classes``,
    ``base`` (the first level's width, doubled per level; 64 in the paper), ``depth``
    (number of down/up levels), ``input_shape``. Returns a :class:`Model`.
    """
    widths = [base * 2 ** i for i in range(depth + 1)]
    layers = {"inc": double_conv(widths[0])}
    for i in range(1, depth + 1):
        layers[f"down{i}"] = serial(("pool", MaxPool(2)), ("conv", double_conv(widths[i])))
    for i in range(1, depth + 1):
        w = widths[depth - i]
        layers[f"up{i}"] = serial(("up", ConvTranspose(w, 2, 2)))
        layers[f"upconv{i}"] = double_conv(w)
    layers["outc"] = Conv(num_classes, 1)

    def forward(call, x):
        skips = [call("inc", x)]
        for i in range(1, depth + 1):
            skips.append(call(f"down{i}", skips[-1]))
        y = skips.pop()
        for i in range(1, depth + 1):
            y = call(f"upconv{i}", call.concat(skips.pop(), call(f"up{i}", y)))
        return call("outc", y)

    return Model(graph(layers, forward, name="unet", type_name="UNet"), "unet", tuple(input_shape), num_classes,
                 dict(base=base, depth=depth))
