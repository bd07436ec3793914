"""Binary weights: BinaryConnect (Courbariaux et al. 2015) and XNOR-Net (Rastegari et al. 2016).

* BinaryConnect: every kernel weight becomes ``sign(w)`` in {-1, +1} (0 maps to +1).
* XNOR-Net: ``alpha_c * sign(w)`` with one ``alpha_c = mean |W_c|`` per output channel,
  the scale minimising ``||W_c - alpha sign(W_c)||``.

With ``ste=True`` the forward value is the same and the gradient is straight-through:
``d sign(w) / dw = 1`` for ``|w| <= 1`` and 0 outside (the "hard tanh" estimator of both
papers); XNOR's ``alpha`` stays a differentiable function of ``w``, which gives the
XNOR-Net gradient ``sign(w) / n + alpha * 1{|w| <= 1}``. Only conv and dense kernels are
binarised; the float weights remain the trained variables.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._select import FILTER_AXIS, map_weights, require_weights

METHODS = ("binary_connect", "xnor")


def sign(w) -> jax.Array:
    """{-1, +1} with ``sign(0) = +1`` (every weight keeps one bit)."""
    return jnp.where(w >= 0, 1.0, -1.0).astype(w.dtype)


def sign_ste(w) -> jax.Array:
    """:func:`sign` forward, gradient 1 where ``|w| <= 1`` (straight-through, clipped)."""
    inside = (jnp.abs(w) <= 1.0).astype(w.dtype)
    # (w - stop_gradient(w)) is 0 forward and has derivative 1: the gradient is exactly `inside`
    return sign(jax.lax.stop_gradient(w)) + (w - jax.lax.stop_gradient(w)) * inside


def xnor_alpha(w) -> jax.Array:
    """Per-output-channel scale ``mean |W_c|`` (shape ``(C_out,)``), XNOR-Net's optimum."""
    return jnp.mean(jnp.abs(w).reshape(-1, w.shape[FILTER_AXIS]), axis=0)


def binarize(params, method: str = "xnor", *, ste: bool = False) -> Any:
    """Every conv and dense kernel of ``params`` binarised by ``method`` (``"binary_connect"``
    or ``"xnor"``), other leaves unchanged; ``ste=True`` for training through it."""
    if method not in METHODS:
        raise ValueError(f"binarize: method must be one of {', '.join(METHODS)}, got {method!r}")
    require_weights(params, "binarize")
    sgn = sign_ste if ste else sign

    def one(_, w):
        if method == "binary_connect":
            return sgn(w)
        return xnor_alpha(w) * sgn(w)
    return map_weights(one, params)
