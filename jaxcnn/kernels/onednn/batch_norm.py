"""Batch normalisation in training mode on oneDNN's batch-normalisation primitives.

XLA:CPU runs a training BatchNorm as separate passes (the mean, the centred input
written out for the variance, the variance, the normalisation; backward: the two sums,
then the input gradient); oneDNN's primitives read the input twice for the statistics
and once to normalise, and the input and its gradient twice backward. A (128, 28, 28,
32) float32 forward + backward: 2.2 ms on oneDNN, 4.0 ms as :func:`jaxcnn.kernels.xla.batch_norm`
(docs/performance.md). Values: the op's formula with the batch's mean and biased
variance, summed in oneDNN's order (float32 rounding apart from the op's); the running
statistics are updated as the op does, from the returned batch statistics.

Taken when (:func:`applies`): training mode, the library loaded, a float32 or bfloat16
input of 2-5 dims with channels last (NHWC / NWC / NDHWC or (N, C)), no ``axis_name``
(oneDNN's statistics are the local batch's; a pmap-synchronised BatchNorm needs the
cross-device mean). float32's forward is the XLA formulation's (oneDNN's forward measured
slower inside a train step than alone; :data:`FORWARD_ON_ONEDNN`), its backward oneDNN's.
bfloat16 keeps gamma, beta, the statistics and their gradients in
float32 (oneDNN's contract). Anything else goes to :func:`jaxcnn.kernels.xla.batch_norm`.
On a platform other than CPU the custom calls are never lowered: ``lax.platform_dependent``
puts that formulation's normalisation in their place.
"""
from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ...ops.layout import channels_last
from . import build, isa

# the module, not the function the package exports under the same name
_xla = importlib.import_module("jaxcnn.kernels.xla.batch_norm")

DTYPES = (jnp.float32, jnp.bfloat16)   # what the handlers accept
# The dtypes whose FORWARD runs on oneDNN too; the others' forward is the XLA formulation's
# (its values exactly) and only the backward is oneDNN's. Measured in the train step
# (docs/performance.md): bfloat16 on oneDNN both ways 1.32x (fmnist_cnn) and 1.11x
# (cifar_resnet18) XLA's BatchNorm; float32 both ways level / 0.96x (oneDNN's forward is
# slow inside the step), float32 backward only 1.06x / 1.00x. Add ``jnp.float32`` to try it.
FORWARD_ON_ONEDNN: tuple = (jnp.bfloat16,)


def applies(x, layout: str = "NHWC", axis_name=None) -> bool:
    """True when a training-mode :func:`batch_norm` of ``x`` runs on oneDNN (at least its
    backward; the forward too for :data:`FORWARD_ON_ONEDNN`): float32 or bfloat16,
    channels last, 2-5 dims, no pmap axis, the library loaded (bfloat16: on a CPU with
    native bfloat16, :func:`.isa.bfloat16`)."""
    if axis_name is not None or not hasattr(x, "dtype") or x.dtype not in DTYPES:
        return False
    if not 2 <= x.ndim <= 5 or 0 in x.shape or not (x.ndim == 2 or channels_last(layout)):
        return False
    if x.dtype == jnp.bfloat16 and not isa.bfloat16():
        return False
    return build.load()


def _target(name, x):
    return f"jaxcnn_onednn_batch_norm_{name}" + ("_bf16" if x.dtype == jnp.bfloat16 else "")


def _channel(x):
    return jax.ShapeDtypeStruct((x.shape[-1],), jnp.float32)


def _onednn_forward(x, gamma, beta, eps):
    return jax.ffi.ffi_call(_target("forward", x), (jax.ShapeDtypeStruct(x.shape, x.dtype), _channel(x), _channel(x)),
                            vmap_method="sequential")(x, gamma, beta, eps=np.float32(eps))


def _other_forward(x, gamma, beta, eps):
    y, mean, var = _xla._forward(x, gamma.astype(x.dtype), beta.astype(x.dtype), eps, x.ndim - 1, None)[0]
    return y, mean.astype(jnp.float32), var.astype(jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _normalise(x, gamma, beta, eps, forward_on_onednn):
    if not forward_on_onednn:
        return _other_forward(x, gamma, beta, eps)
    return lax.platform_dependent(x, gamma, beta, cpu=functools.partial(_onednn_forward, eps=eps),
                                  default=functools.partial(_other_forward, eps=eps))


def _normalise_fwd(x, gamma, beta, eps, forward_on_onednn):
    y, mean, var = _normalise(x, gamma, beta, eps, forward_on_onednn)
    return (y, mean, var), (x, gamma, mean, var)


def _normalise_bwd(eps, forward_on_onednn, residuals, cts):
    x, gamma, mean, var = residuals
    dy = cts[0]

    def cpu(x, dy, gamma, mean, var):
        return jax.ffi.ffi_call(_target("backward", x), (jax.ShapeDtypeStruct(x.shape, x.dtype), _channel(x),
                                                         _channel(x)),
                                vmap_method="sequential")(x, dy, gamma, mean, var, eps=np.float32(eps))

    def other(x, dy, gamma, mean, var):
        inv = lax.rsqrt(var + eps).astype(x.dtype)
        dx, dgamma, dbeta = _xla._normalise_bwd(eps, x.ndim - 1, None, (x, mean.astype(x.dtype), inv,
                                                                        gamma.astype(x.dtype)), (dy,))
        return dx, dgamma.astype(jnp.float32), dbeta.astype(jnp.float32)
    dx, dgamma, dbeta = lax.platform_dependent(x, dy.astype(x.dtype), gamma, mean, var, cpu=cpu, default=other)
    return dx, dgamma, dbeta


_normalise.defvjp(_normalise_fwd, _normalise_bwd)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, *, train: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, axis_name=None, layout: str = "NHWC"):
    """``jaxcnn.ops.batch_norm`` (same signature, values to float32 rounding, same
    running-statistics update and errors) whose training mode runs oneDNN's backward
    primitive (and, for :data:`FORWARD_ON_ONEDNN`, its forward) where :func:`applies`,
    else :func:`jaxcnn.kernels.xla.batch_norm`."""
    if not train or not applies(x, layout, axis_name):
        return _xla.batch_norm(x, running_mean, running_var, weight, bias, train=train, momentum=momentum, eps=eps,
                               axis_name=axis_name, layout=layout)
    forward_on_onednn = x.dtype in FORWARD_ON_ONEDNN

    def normalise(x, gamma, beta, ch):
        return _normalise(x, gamma, beta, float(eps), forward_on_onednn)
    return _xla.training_batch_norm(normalise,
                                    x, running_mean, running_var, weight, bias, train=True, momentum=momentum,
                                    eps=eps, layout=layout, affine_dtype=jnp.float32)
