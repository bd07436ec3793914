"""Parameter-free layers: activations, Flatten, Dropout, SpatialDropout, Upsample,
ChannelShuffle, Identity."""
from __future__ import annotations

from .. import dispatch  # the ops as traced under the current backprop mode
from ..ops.activations import get_activation
from . import fusion
from .base import elementwise, leaf


def _activation(layer_name: str, fn_name: str, kwargs: dict):
    """``dispatch.<fn_name>(x, **kwargs)`` as a layer; a plain ReLU or sigmoid is
    registered with :mod:`.fusion` (a Conv before it may then run fused with it)."""
    layer = elementwise(layer_name, lambda x: getattr(dispatch, fn_name)(x, **kwargs),
                        {"activation": fn_name, **kwargs})
    return fusion.register_activation(layer, fn_name) if fn_name in fusion.PAIRS and not kwargs else layer


def Activation(name: str, **kwargs):
    """Any activation of ``ops.get_activation(name)`` ("relu", "gelu", ...) as a layer.
    An unknown name raises ``ValueError`` listing the known ones when the layer is built."""
    get_activation(name)  # validate now, not at the first apply
    return _activation(_TITLE.get(name, name.title()), name, kwargs)


def _act(fn_name: str, title: str):
    def make(name: str = title, **kwargs):
        return _activation(name, fn_name, kwargs)
    make.__name__ = title
    make.__doc__ = f"``ops.{fn_name}`` as a layer (keyword arguments are passed to the op)."
    return make


_TITLE = {"relu": "ReLU", "relu6": "ReLU6", "leaky_relu": "LeakyReLU", "sigmoid": "Sigmoid", "tanh": "Tanh",
          "elu": "ELU", "selu": "SELU", "gelu": "GELU", "silu": "SiLU", "softplus": "Softplus",
          "hardswish": "Hardswish", "hardsigmoid": "Hardsigmoid", "softmax": "Softmax",
          "log_softmax": "LogSoftmax", "identity": "Identity"}

Relu = _act("relu", "ReLU")
Relu6 = _act("relu6", "ReLU6")
LeakyRelu = _act("leaky_relu", "LeakyReLU")
Sigmoid = _act("sigmoid", "Sigmoid")
Tanh = _act("tanh", "Tanh")
Elu = _act("elu", "ELU")
Selu = _act("selu", "SELU")
Gelu = _act("gelu", "GELU")
Silu = _act("silu", "SiLU")
Softplus = _act("softplus", "Softplus")
Hardswish = _act("hardswish", "Hardswish")
Hardsigmoid = _act("hardsigmoid", "Hardsigmoid")
Softmax = _act("softmax", "Softmax")
LogSoftmax = _act("log_softmax", "LogSoftmax")


def Identity(name: str = "Identity"):
    """Returns its input."""
    return elementwise(name, lambda x: x)


def Flatten(start_dim: int = 1, name: str = "Flatten"):
    """Flatten axes ``start_dim..`` into one (row-major: NHWC flattens as H, W, C)."""
    meta = dict(type=name, kind="flatten", start_dim=start_dim, rf="global")
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.flatten(x, start_dim))


def _needs_key(name, rate, train, key):
    if train and rate > 0 and key is None:
        raise ValueError(f"{name}: train=True with rate={rate} needs a PRNG key (apply(..., key=...))")


def Dropout(rate: float, name: str = "Dropout"):
    """Inverted dropout: active only when ``apply(..., train=True, key=k)``."""
    meta = dict(type=name, kind="dropout", rate=rate, rf="pointwise")

    def forward(p, s, x, train, key):
        _needs_key(name, rate, train, key)
        return dispatch.dropout(key, x, rate, train=train)
    return leaf(name, meta, forward)


def SpatialDropout(rate: float, layout: str = "NHWC", name: str = "SpatialDropout"):
    """Drops whole channels (torch.nn.Dropout2d) when training."""
    meta = dict(type=name, kind="dropout", rate=rate, layout=layout, rf="pointwise")

    def forward(p, s, x, train, key):
        _needs_key(name, rate, train, key)
        return dispatch.spatial_dropout(key, x, rate, train=train, layout=layout)
    return leaf(name, meta, forward)


def Upsample(size=None, scale_factor=None, mode: str = "nearest", align_corners=None, layout: str = "NHWC",
             name: str = "Upsample"):
    """torch.nn.Upsample (nearest, linear/bilinear/trilinear, bicubic)."""
    meta = dict(type=name, kind="upsample", size=size, scale_factor=scale_factor, mode=mode, layout=layout,
                rf="global")
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.upsample(
        x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners, layout=layout))


def ChannelShuffle(groups: int, layout: str = "NHWC", name: str = "ChannelShuffle"):
    """ShuffleNet's channel shuffle: (g, C/g) -> (C/g, g) over the channel axis."""
    meta = dict(type=name, kind="channel_shuffle", groups=groups, layout=layout, rf="pointwise")
    return leaf(name, meta, lambda p, s, x, train, key: dispatch.channel_shuffle(x, groups, layout=layout))
