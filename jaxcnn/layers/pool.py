"""Pooling layers (no parameters): torch.nn.MaxPoolNd, AvgPoolNd, LPPoolNd,
AdaptiveAvg/MaxPoolNd and global pooling. The spatial rank follows from the input."""
from __future__ import annotations

from .. import dispatch  # the ops as traced under the current backprop mode
from .base import leaf


def MaxPool(kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False, layout: str = "NHWC",
            name: str = "MaxPool"):
    """Max pooling; ``stride`` defaults to ``kernel_size`` (torch)."""
    meta = dict(type=name, kind="pool", kernel_size=kernel_size, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=ceil_mode, layout=layout)
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.max_pool(
        x, kernel_size, stride, padding, dilation, ceil_mode, layout=layout))


def AvgPool(kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
            divisor_override=None, layout: str = "NHWC", name: str = "AvgPool"):
    """Average pooling with torch's ``count_include_pad``/``divisor_override`` semantics."""
    meta = dict(type=name, kind="pool", kernel_size=kernel_size, stride=stride, padding=padding, dilation=1,
                ceil_mode=ceil_mode, layout=layout)
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.avg_pool(
        x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, layout=layout))


def LpPool(norm_type: float, kernel_size, stride=None, ceil_mode: bool = False, layout: str = "NHWC",
           name: str = "LpPool"):
    """Power-average pooling (torch.nn.LPPoolNd)."""
    meta = dict(type=name, kind="pool", kernel_size=kernel_size, stride=stride, padding=0, dilation=1,
                ceil_mode=ceil_mode, layout=layout)
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.lp_pool(
        x, norm_type, kernel_size, stride, ceil_mode, layout=layout))


def AdaptiveAvgPool(output_size, layout: str = "NHWC", name: str = "AdaptiveAvgPool"):
    """Adaptive average pooling to ``output_size`` (torch's bin boundaries)."""
    meta = dict(type=name, kind="adaptive_pool", output_size=output_size, layout=layout, rf="global")
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.adaptive_avg_pool(x, output_size, layout=layout))


def AdaptiveMaxPool(output_size, layout: str = "NHWC", name: str = "AdaptiveMaxPool"):
    """Adaptive max pooling to ``output_size``."""
    meta = dict(type=name, kind="adaptive_pool", output_size=output_size, layout=layout, rf="global")
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.adaptive_max_pool(x, output_size, layout=layout))


def GlobalAvgPool(keepdims: bool = False, layout: str = "NHWC", name: str = "GlobalAvgPool"):
    """Mean over all spatial axes: (N, *spatial, C) -> (N, C) (or keep size-1 axes)."""
    meta = dict(type=name, kind="global_pool", layout=layout, rf="global")
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.global_avg_pool(x, keepdims=keepdims, layout=layout))


def GlobalMaxPool(keepdims: bool = False, layout: str = "NHWC", name: str = "GlobalMaxPool"):
    """Max over all spatial axes."""
    meta = dict(type=name, kind="global_pool", layout=layout, rf="global")
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.global_max_pool(x, keepdims=keepdims, layout=layout))
