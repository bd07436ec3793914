"""Which backward pass the layers trace with: ``"autodiff"`` (jax's), ``"explicit"``
(the hand-written transposed-kernel VJPs of this package) or ``"auto"`` (per op the
formulation measured fastest on CPU: :mod:`jaxcnn.backprop.fast`'s table, autodiff for
ops it does not list).

The mode is read at trace time (when a step is jitted), the way
``jax.default_matmul_precision`` is; the train step sets it around the loss, library
functions never set it themselves.
"""
from __future__ import annotations

import contextlib
import contextvars

MODES = ("auto", "autodiff", "explicit")
_MODE: contextvars.ContextVar[str] = contextvars.ContextVar("jaxcnn_backprop_mode", default="autodiff")


def current_mode() -> str:
    return _MODE.get()


@contextlib.contextmanager
def backprop_mode(mode: str):
    """Trace the enclosed code with ``mode`` ("auto", "autodiff" or "explicit") backward passes."""
    if mode not in MODES:
        raise ValueError(f"backprop mode must be one of {MODES}, got {mode!r}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)
