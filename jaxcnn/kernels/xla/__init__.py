"""Faster lax formulations of ops on XLA:CPU (autodiff allowed here): arg-max max-pool
backward (:mod:`.max_pool`), average pooling over non-overlapping windows as a reshaped
sum (:mod:`.avg_pool`), fused BatchNorm backward (:mod:`.batch_norm`), a
narrow-input conv's shifted forward and depthwise convs as shifted multiply-adds
(:mod:`.conv`, :mod:`.depthwise`), a strided transposed conv as matmul + overlap-add
(:mod:`.conv_transpose`). Each function has its op's signature, values and errors;
:mod:`jaxcnn.dispatch.auto` decides which one "auto" uses.
"""
from __future__ import annotations

from .avg_pool import avg_pool  # noqa: F401
from .batch_norm import batch_norm  # noqa: F401
from .conv import conv, lax_conv, narrow  # noqa: F401
from .conv_transpose import conv_transpose, overlap_add  # noqa: F401
from .depthwise import depthwise_shifted, use_shifted_depthwise  # noqa: F401
from .max_pool import max_pool, max_pool_with, non_overlapping  # noqa: F401
