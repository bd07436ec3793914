"""Batch normalisation whose training backward is the fused closed form

    dx = gamma / sigma * (dy - mean(dy) - xh * mean(dy * xh)),   xh = (x - mu) / sigma,
    dgamma = sum(dy * xh),   dbeta = sum(dy)

from the forward's saved ``mu`` and ``1/sigma`` (the two per-channel sums as one
reduction, one elementwise pass) instead of autodiff through the two-pass mean/variance graph.
Values are exactly ``jaxcnn.ops.batch_norm``'s: the forward is the same expressions in
the same order. Means over the batch and spatial axes, and over ``axis_name`` when
given (the forward normalised with the global batch); ``dgamma``/``dbeta`` are local
sums (the train step averages parameter grads itself). Evaluation mode (running
statistics) is the op itself: its autodiff backward is one multiply.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ... import ops
from ...ops.layout import channel_axis


def _reduce_axes(ndim, ch):
    return tuple(a for a in range(ndim) if a != ch)


def _mean(v, axes, axis_name):
    m = jnp.mean(v, axis=axes)
    return m if axis_name is None else lax.pmean(m, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _normalise(x, gamma, beta, eps, ch, axis_name):
    """Returns ``(y, batch mean, biased batch variance)``; mean/var are for the running
    statistics only and must not be differentiated (the caller stops their gradient)."""
    return _forward(x, gamma, beta, eps, ch, axis_name)[0]


def _forward(x, gamma, beta, eps, ch, axis_name):
    axes = _reduce_axes(x.ndim, ch)
    bshape = [1] * x.ndim
    bshape[ch] = x.shape[ch]
    mean = _mean(x, axes, axis_name)
    var = _mean(jnp.square(x - mean.reshape(bshape)), axes, axis_name)   # two passes, as the op
    inv = lax.rsqrt(var.reshape(bshape) + eps)
    y = (x - mean.reshape(bshape)) * inv * gamma.reshape(bshape) + beta.reshape(bshape)
    return (y, mean, var), (x, mean, inv, gamma)


def _normalise_fwd(x, gamma, beta, eps, ch, axis_name):
    return _forward(x, gamma, beta, eps, ch, axis_name)


def _normalise_bwd(eps, ch, axis_name, res, cts):
    x, mean, inv, gamma = res
    dy = cts[0]
    axes = _reduce_axes(x.ndim, ch)
    bshape = [1] * x.ndim
    bshape[ch] = x.shape[ch]
    xh = (x - mean.reshape(bshape)) * inv
    # both sums in one reduction over a stacked operand: one pass over dy and x. As two
    # sibling reductions XLA:CPU reads both tensors twice (it does not fuse them): the
    # fmnist_cnn step was 1.15x slower (docs/performance.md)
    sums = jnp.sum(jnp.stack([dy, dy * xh]), axis=tuple(a + 1 for a in axes))
    dbeta, dgamma = sums[0], sums[1]
    count = np.prod([x.shape[a] for a in axes])
    g_mean, gx_mean = dbeta / count, dgamma / count
    if axis_name is not None:
        g_mean, gx_mean = lax.pmean(g_mean, axis_name), lax.pmean(gx_mean, axis_name)
    dx = (gamma.reshape(bshape) * inv) * (dy - g_mean.reshape(bshape) - xh * gx_mean.reshape(bshape))
    return dx.astype(x.dtype), dgamma.astype(gamma.dtype), dbeta.astype(gamma.dtype)


_normalise.defvjp(_normalise_fwd, _normalise_bwd)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, *, train: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, axis_name=None, layout: str = "NHWC"):
    """``jaxcnn.ops.batch_norm`` (same signature, same values, same running-statistics
    update) with the fused closed-form training backward."""
    return training_batch_norm(
        lambda x, gamma, beta, ch: _normalise(x, gamma, beta, float(eps), ch, axis_name),
        x, running_mean, running_var, weight, bias, train=train, momentum=momentum, eps=eps,
        axis_name=axis_name, layout=layout)


def training_batch_norm(normalise, x, running_mean, running_var, weight=None, bias=None, *, train: bool = False,
                        momentum: float = 0.1, eps: float = 1e-5, axis_name=None, layout: str = "NHWC",
                        affine_dtype=None):
    """``jaxcnn.ops.batch_norm`` whose training-mode normalisation is
    ``normalise(x, gamma, beta, channel_axis) -> (y, batch mean, biased batch variance)``
    (gamma and beta of ``affine_dtype``, default ``x``'s; ones / zeros when not given):
    the op's checks and errors, its evaluation mode, and its running-statistics update
    around it (shared by this module's and oneDNN's formulations)."""
    if not train or not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating) or x.ndim < 2:
        return ops.batch_norm(x, running_mean, running_var, weight, bias, train=train, momentum=momentum,
                              eps=eps, axis_name=axis_name, layout=layout)
    ch = channel_axis(x.ndim, layout, "batch_norm")
    c = x.shape[ch]
    # the op validates shapes and the one-value-per-channel case; run its checks on a
    # zero-cost abstract evaluation so bad input fails with its messages
    jax.eval_shape(functools.partial(ops.batch_norm, train=True, momentum=momentum, eps=eps, layout=layout),
                   jax.ShapeDtypeStruct(x.shape, x.dtype),
                   *[None if a is None else jax.ShapeDtypeStruct(a.shape, a.dtype)
                     for a in (running_mean, running_var, weight, bias)])
    dtype = x.dtype if affine_dtype is None else affine_dtype
    gamma = jnp.ones((c,), dtype) if weight is None else weight.astype(dtype)
    beta = jnp.zeros((c,), dtype) if bias is None else bias.astype(dtype)
    y, mean, var = normalise(x, gamma, beta, ch)
    mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
    if running_mean is None:
        return y, running_mean, running_var
    count = np.prod([x.shape[a] for a in _reduce_axes(x.ndim, ch)])
    if axis_name is not None:
        count = count * lax.psum(1, axis_name)
    unbiased = var * count / (count - 1)
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * unbiased
    return y, new_mean, new_var
