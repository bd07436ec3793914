"""Parameterised linear layers: Conv (1-3-D), ConvTranspose, Dense.

Weights follow the ops' conventions: ``layout="NHWC"`` conv kernels are
``(*kernel, C_in/groups, C_out)``, transposed-conv kernels ``(*kernel, C_in, C_out/groups)``;
``layout="NCHW"`` uses torch's shapes. Dense weights are ``(in, out)``. Parameter names
are torch's (``weight``, ``bias``) so torchvision state_dicts map one-to-one.
"""
from __future__ import annotations

import math

import jax

from .. import dispatch  # the ops as traced under the current backprop mode
from ..ops.layout import channels_last
from ..ops.shapes import describe, ntuple
from . import fusion
from . import initializers as I
from .base import leaf


def _channels(input_shape, layout, what):
    if len(input_shape) < 3:
        raise ValueError(f"{what}: expected an input (N, *spatial, C) or (N, C, *spatial) with 1-3 spatial dims, "
                         f"got shape {describe(input_shape)}")
    return input_shape[-1] if channels_last(layout, what) else input_shape[1]


def Conv(features: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1, use_bias: bool = True,
         padding_mode: str = "zeros", layout: str = "NHWC", kernel_init=I.torch_default,
         bias_init=I.torch_bias, name: str = "Conv"):
    """Convolution layer (torch.nn.ConvNd); the spatial rank follows from the input.

    Params: ``weight`` (NHWC ``(*k, C_in/groups, features)``) and ``bias`` ``(features,)``
    when ``use_bias``. ``padding`` accepts everything ``ops.conv`` does ("same", pairs, ...).
    """
    meta = dict(type=name, kind="conv", features=features, kernel_size=kernel_size, stride=stride,
                padding=padding, dilation=dilation, groups=groups, use_bias=use_bias,
                padding_mode=padding_mode, layout=layout)

    def make_params(key, input_shape):
        rank = len(input_shape) - 2
        c_in = _channels(input_shape, layout, name)
        _check_groups(name, c_in, features, groups)
        k = ntuple(kernel_size, rank, "kernel_size", name)
        fan_in = c_in // groups * math.prod(k)
        fan_out = features // groups * math.prod(k)
        shape = (*k, c_in // groups, features) if channels_last(layout) else (features, c_in // groups, *k)
        return _weight_and_bias(key, shape, features, fan_in, fan_out, use_bias, kernel_init, bias_init)

    def forward(params, state, x, train, key):
        return dispatch.conv(x, params["weight"], params.get("bias"), stride=stride, padding=padding,
                      dilation=dilation, groups=groups, padding_mode=padding_mode, layout=layout)

    def with_activation(params, x, activation):   # this layer then a ReLU / sigmoid, fused (layers.fusion)
        fused = {"relu": dispatch.conv_relu, "sigmoid": dispatch.conv_sigmoid}[activation]
        return fused(x, params["weight"], params.get("bias"), stride=stride, padding=padding, dilation=dilation,
                     groups=groups, padding_mode=padding_mode, layout=layout)

    def with_batch_norm(params, x, bn_params, bn_state, eps, relu):   # this, an eval BatchNorm [, a ReLU]
        return dispatch.conv_bn_eval(x, params["weight"], params.get("bias"), bn_state["running_mean"],
                                     bn_state["running_var"], bn_params.get("weight"), bn_params.get("bias"),
                                     eps=eps, relu=relu, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, padding_mode=padding_mode, layout=layout)

    return fusion.register_conv(leaf(name, meta, forward, make_params), with_activation, with_batch_norm, layout)


def ConvTranspose(features: int, kernel_size, stride=1, padding=0, output_padding=0, dilation=1,
                  groups: int = 1, use_bias: bool = True, layout: str = "NHWC",
                  kernel_init=I.torch_default, bias_init=I.torch_bias, name: str = "ConvTranspose"):
    """Transposed convolution (torch.nn.ConvTransposeNd semantics and output size).

    Params: ``weight`` (NHWC ``(*k, C_in, features/groups)``, NCHW torch's
    ``(C_in, features/groups, *k)``) and ``bias`` ``(features,)``.
    """
    meta = dict(type=name, kind="conv_transpose", features=features, kernel_size=kernel_size, stride=stride,
                padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
                use_bias=use_bias, layout=layout)

    def make_params(key, input_shape):
        rank = len(input_shape) - 2
        c_in = _channels(input_shape, layout, name)
        _check_groups(name, c_in, features, groups)
        k = ntuple(kernel_size, rank, "kernel_size", name)
        # torch computes fan_in from weight.size(1) = C_out/groups for transposed convs.
        fan_in = features // groups * math.prod(k)
        fan_out = c_in // groups * math.prod(k)
        shape = (*k, c_in, features // groups) if channels_last(layout) else (c_in, features // groups, *k)
        return _weight_and_bias(key, shape, features, fan_in, fan_out, use_bias, kernel_init, bias_init)

    def forward(params, state, x, train, key):
        return dispatch.conv_transpose(x, params["weight"], params.get("bias"), stride=stride, padding=padding,
                                output_padding=output_padding, dilation=dilation, groups=groups, layout=layout)

    return leaf(name, meta, forward, make_params)


def Dense(features: int, use_bias: bool = True, kernel_init=I.torch_default, bias_init=I.torch_bias,
          name: str = "Dense"):
    """Fully connected layer on the last axis (torch.nn.Linear): ``y = x @ weight + bias``.

    Params: ``weight`` ``(in_features, features)``, ``bias`` ``(features,)``.
    """
    meta = dict(type=name, kind="dense", features=features, use_bias=use_bias)

    def make_params(key, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{name}: expected an input (N, ..., in_features), got shape {describe(input_shape)}")
        fan_in = input_shape[-1]
        return _weight_and_bias(key, (fan_in, features), features, fan_in, features, use_bias, kernel_init,
                                bias_init)

    def forward(params, state, x, train, key):
        return dispatch.dense(x, params["weight"], params.get("bias"))

    return leaf(name, meta, forward, make_params)


def _check_groups(name, c_in, features, groups):
    if c_in % groups or features % groups:
        raise ValueError(f"{name}: groups={groups} must divide input channels {c_in} and features {features}")


def _weight_and_bias(key, shape, features, fan_in, fan_out, use_bias, kernel_init, bias_init):
    """``{"weight": kernel_init(shape), "bias": bias_init((features,))}`` (no bias unless
    ``use_bias``), both initialisers given the fans, each from its own half of ``key``."""
    if key is None:
        raise ValueError("init needs a PRNG key")
    wkey, bkey = jax.random.split(key)
    params = {"weight": kernel_init(wkey, shape, fan_in, fan_out)}
    if use_bias:
        params["bias"] = bias_init(bkey, (features,), fan_in, fan_out)
    return params
