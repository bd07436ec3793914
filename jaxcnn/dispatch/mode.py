"""Which backward pass the layers trace with: ``"autodiff"`` (jax's), ``"explicit"``
(the hand-written transposed-kernel VJPs of :mod:`jaxcnn.backprop`) or ``"auto"`` (per
op the formulation measured fastest: :mod:`jaxcnn.dispatch.auto`'s table, autodiff for
ops it does not list).

The mode is read at trace time (when a step is jitted), the way
``jax.default_matmul_precision`` is; the train step sets it around the loss, library
functions never set it themselves. :data:`DEFAULT_MODE` is the one default backprop mode:
of ``make_train_step``, ``fit``, ``make_runner`` and ``jaxcnn train --backprop``.

Outside any ``backprop_mode`` block no mode is set (:func:`current_mode` is None): code
that is not a train step -- evaluation, inspection, export, int8 calibration -- calls the
ops themselves, the portable reference formulations (what "autodiff" also calls), so a
forward pass traced there holds no CPU-only kernel and exports anywhere.
"""
from __future__ import annotations

import contextlib
import contextvars

MODES = ("auto", "autodiff", "explicit")
DEFAULT_MODE = "auto"
_MODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxcnn_backprop_mode", default=None)


def check_mode(mode: str, argument: str = "backprop") -> str:
    """``mode`` if it is one of :data:`MODES`, else a ``ValueError`` naming ``argument``."""
    if mode not in MODES:
        raise ValueError(f"{argument} must be one of {MODES}, got {mode!r}")
    return mode


def current_mode() -> str | None:
    """The mode in effect where this is called (at trace time: the mode being traced);
    None outside any :func:`backprop_mode` block (the ops themselves are called)."""
    return _MODE.get()


@contextlib.contextmanager
def backprop_mode(mode: str):
    """Trace the enclosed code with ``mode`` ("auto", "autodiff" or "explicit") backward passes.

        with jaxcnn.backprop_mode("explicit"):
            grads = jax.grad(loss)(params)      # hand-written transposed-kernel VJPs
    """
    token = _MODE.set(check_mode(mode, "backprop mode"))
    try:
        yield
    finally:
        _MODE.reset(token)
