"""The ops as the layers call them: ``dispatch.conv(...)`` is ``jaxcnn.ops.conv`` under
the "autodiff" mode and its custom_vjp twin (explicit backward) under "explicit".

Twins register themselves with :func:`register` (``jaxcnn.backprop.twins``, imported by
``jaxcnn.backprop``). Observers (:func:`jaxcnn.backprop.observe.observe`) see every call. In explicit mode an op without a
twin raises instead of silently falling back to autodiff, unless it is listed in
``AUTODIFF_OK`` (ops with no parameters whose autodiff backward is the textbook one,
e.g. reshapes).
"""
from __future__ import annotations

from typing import Callable

from .. import ops
from .mode import current_mode
from .observe import observers

_EXPLICIT: dict[str, Callable] = {}
# reshapes/permutations (their autodiff backward is the inverse permutation) and
# metrics that are never differentiated
AUTODIFF_OK = {"flatten", "channel_shuffle", "pad", "identity", "accuracy"}


def register(name: str):
    """Decorator: register ``fn`` as the explicit-backward twin of ``jaxcnn.ops.<name>``."""
    def deco(fn):
        _EXPLICIT[name] = fn
        return fn
    return deco


def explicit_ops() -> tuple[str, ...]:
    return tuple(sorted(_EXPLICIT))


def _make(name: str):
    autodiff_fn = getattr(ops, name)

    def call(*args, **kwargs):
        for callback in observers():
            callback(name, args, kwargs)
        if current_mode() == "explicit":
            if name in _EXPLICIT:
                return _EXPLICIT[name](*args, **kwargs)
            if name not in AUTODIFF_OK:
                raise NotImplementedError(f"backprop='explicit': op {name!r} has no explicit backward pass; "
                                          f"available: {', '.join(explicit_ops())}")
        return autodiff_fn(*args, **kwargs)

    call.__name__ = name
    call.__doc__ = autodiff_fn.__doc__
    return call


def __getattr__(name: str):
    if not hasattr(ops, name):
        raise AttributeError(f"jaxcnn.ops has no op {name!r}")
    fn = _make(name)
    globals()[name] = fn
    return fn
