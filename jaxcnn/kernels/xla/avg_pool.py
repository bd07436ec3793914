"""Average pooling over non-overlapping windows as a reshape and a sum.

XLA:CPU runs ``lax.reduce_window`` (``jaxcnn.ops.avg_pool``'s sum) as its own pass,
and autodiff's backward of it is another window reduction over a padded, dilated
cotangent. When the windows tile the input -- ``stride == kernel_size``, no padding
(``ceil_mode`` only when it adds no window) -- the same sums are a plain reduction of
the input reshaped to ``(N, Ho, kh, Wo, kw, C)`` (NHWC; NCHW likewise), which XLA fuses
into the pass that produced the input (LeNet-5's sigmoid), and whose autodiff backward
is a broadcast. On lenet5's train step (batch 128, 2-core CPU) that was 1.04x
(0.99-1.13 over rounds) the step with ``reduce_window``
(``experiments/bench_conv_relu.py --model lenet5 --without conv_sigmoid,avg_pool``,
docs/performance.md).

Values: the op's sums divided by the op's divisor; every geometry off the fast path,
``divisor_override=0`` included (the op's error), is ``jaxcnn.ops.avg_pool`` itself.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ... import ops
from ...ops.windows import Window, avg_divisor
from .max_pool import crop_to, non_overlapping, windowed_geometry


def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override=None, *, layout: str = "NHWC"):
    """``jaxcnn.ops.avg_pool`` (same signature, values and errors), a reshaped sum on
    non-overlapping windows."""
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating) or divisor_override == 0 or \
            not non_overlapping(x, kernel_size, stride, padding, 1, ceil_mode, layout=layout, op="avg_pool"):
        return ops.avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                            layout=layout)
    win = Window(x, kernel_size, stride, padding, 1, ceil_mode, layout, "avg_pool")
    crop, windowed, tap_axes = windowed_geometry(win.x.shape, tuple(win.kernel), tuple(win.axes))
    sums = jnp.sum(crop_to(win.x, crop).reshape(windowed), axis=tap_axes)
    if divisor_override is not None:
        return win.finish(sums / divisor_override)
    # without padding every window holds the whole kernel: the op's divisor array is this
    # one number (a scalar, so XLA fuses no divisor-shaped broadcast into the pass)
    divisor = float(np.prod(win.kernel))
    assert np.all(avg_divisor(win, count_include_pad) == divisor)
    return win.finish(sums / jnp.asarray(divisor, win.x.dtype))
