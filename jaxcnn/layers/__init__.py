"""Layers: ``Layer(init, apply)`` pairs of pure functions (see ``jaxcnn.types``).

``init(key, input_shape) -> (output_shape, params, state)`` (input_shape includes the
batch axis); ``apply(params, state, x, *, train=False, key=None) -> (y, new_state)``.
Default layout is NHWC; every spatial layer takes ``layout=``.
"""
from . import initializers
from .base import LayerError, Record, call_child, current_path, elementwise, leaf, recording
from .conv import Conv, ConvTranspose, Dense
from .norm import BatchNorm
from .pool import (AdaptiveAvgPool, AdaptiveMaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool, LpPool,
                   MaxPool)
from .simple import (Activation, ChannelShuffle, Dropout, Elu, Flatten, Gelu, Hardsigmoid, Hardswish,
                     Identity, LeakyRelu, LogSoftmax, Relu, Relu6, Selu, Sigmoid, Silu, Softmax, Softplus,
                     SpatialDropout, Tanh, Upsample)
