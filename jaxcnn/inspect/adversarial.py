"""Adversarial images: FGSM and projected gradient descent (L-inf and L2).

The loss is the cross-entropy of the logits (inference mode) with the given classes,
summed over the batch, so each example moves along its own gradient.

* :func:`fgsm` (Goodfellow et al.): ``x + eps * sign(grad)`` away from ``labels``, or,
  ``targeted``, ``x - eps * sign(grad)`` towards them.
* :func:`pgd` (Madry et al.): ``iters`` steps of size ``step`` -- the gradient's sign
  (``norm="linf"``) or the gradient over its per-example L2 norm (``norm="l2"``) -- each
  followed by projection onto the ``eps`` ball around ``x`` and, when ``clip=(lo, hi)``,
  onto the valid pixel range. Targeted by default (descends the target class's loss);
  ``key`` adds a uniform random start inside the L-inf ball.

``eps`` and ``step`` must be finite numbers >= 0 and ``iters`` an int >= 0 (else a
one-line ValueError naming the argument): NaN made a NaN image, a negative eps an empty
ball to project onto.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..ops import random
from .activations import check_input


def _loss_grad(model, params, state, fn):
    def loss(x, labels):
        logits, _ = model.apply(params, state, x, train=False)
        k = logits.shape[-1]
        labels = jnp.broadcast_to(jnp.asarray(labels), logits.shape[:1])
        return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None] % k, axis=1))
    return jax.grad(loss)


def _check_labels(fn, model, params, state, x, labels):
    k = jax.eval_shape(lambda p, s, x: model.apply(p, s, x, train=False)[0], params, state, x).shape[-1]
    if isinstance(labels, int) and not 0 <= labels < k:
        raise ValueError(f"{fn}: class must be in [0, {k}), got {labels}")
    if not isinstance(labels, (int, jax.core.Tracer)):
        lab = np.asarray(labels)
        if lab.size and (lab.min() < 0 or lab.max() >= k):
            raise ValueError(f"{fn}: classes must be in [0, {k}), got values in [{lab.min()}, {lab.max()}]")


def _check_size(fn, name, value):
    """``value`` (eps or step) must be a finite number >= 0: NaN would return a NaN
    image, a negative eps a projection onto an empty ball."""
    if isinstance(value, jax.core.Tracer):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = None
    if v is None or not math.isfinite(v) or v < 0:
        raise ValueError(f"{fn}: {name} must be a finite number >= 0, got {value!r}")


def _clip(x, clip):
    return x if clip is None else jnp.clip(x, clip[0], clip[1])


def fgsm(model, params, state, x, labels, eps: float, targeted: bool = False, clip=None):
    """One signed-gradient step of size ``eps``; ``labels``: int or ``(B,)`` classes."""
    model = check_input("fgsm", model, x)
    _check_size("fgsm", "eps", eps)
    _check_labels("fgsm", model, params, state, x, labels)
    g = _loss_grad(model, params, state, "fgsm")(x, labels)
    step = -eps if targeted else eps
    return _clip(x + step * jnp.sign(g), clip)


def _per_example_norm(v):
    return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def pgd(model, params, state, x, labels, eps: float, step: float, iters: int, norm: str = "linf",
        targeted: bool = True, clip=None, key=None):
    """Projected gradient descent; returns the adversarial batch, like ``x``."""
    fn = "pgd"
    model = check_input(fn, model, x)
    _check_size(fn, "eps", eps)
    _check_size(fn, "step", step)
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"{fn}: iters must be an int >= 0, got {iters!r}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"{fn}: norm must be 'linf' or 'l2', got {norm!r}")
    _check_labels(fn, model, params, state, x, labels)
    grad = _loss_grad(model, params, state, fn)
    sign = -1.0 if targeted else 1.0

    def project(adv):
        d = adv - x
        if norm == "linf":
            d = jnp.clip(d, -eps, eps)
        else:
            d = d * jnp.minimum(1.0, eps / (_per_example_norm(d) + 1e-12))
        return _clip(x + d, clip)

    adv = x
    if key is not None:
        adv = project(x + random.uniform(key, x.shape, dtype=x.dtype, minval=-eps, maxval=eps))

    def body(_, adv):
        g = grad(adv, labels)
        if norm == "linf":
            move = jnp.sign(g)
        else:
            move = g / (_per_example_norm(g) + 1e-12)
        return project(adv + sign * step * move)

    return jax.lax.fori_loop(0, int(iters), body, adv)
