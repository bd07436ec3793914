"""The ops as the layers call them: ``dispatch.conv(...)`` is ``jaxcnn.ops.conv`` under
the "autodiff" mode, its custom_vjp twin (explicit backward) under "explicit", and under
"auto" the formulation :func:`register_auto` chose for it (``jaxcnn.backprop.fast``'s
measured table), the op itself (autodiff) for ops without an entry.

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
_AUTO: dict[str, Callable] = {}
# reshapes/permutations (their autodiff backward is the inverse permutation) and
# metrics that are never differentiated
AUTODIFF_OK = {"flatten", "channel_shuffle", "pad", "identity", "accuracy"}


def register(name: str):
    """Decorator: register ``fn`` as the explicit-backward twin of ``jaxcnn.ops.<name>``."""
    def deco(fn):
        _EXPLICIT[name] = fn
        return fn
    return deco


def register_auto(name: str, fn: Callable) -> Callable:
    """Use ``fn`` (same signature and values as ``jaxcnn.ops.<name>``) for ``name`` under "auto"."""
    _AUTO[name] = fn
    return fn


def auto_table() -> dict[str, str]:
    """Which formulation "auto" uses per op: ``{op name: "module.function"}``."""
    return {name: f"{fn.__module__}.{getattr(fn, '__qualname__', fn.__name__)}" for name, fn in sorted(_AUTO.items())}


def explicit_ops() -> tuple[str, ...]:
    return tuple(sorted(_EXPLICIT))


def _make(name: str):
    autodiff_fn = getattr(ops, name)

    def call(*args, **kwargs):
        for callback in observers():
            callback(name, args, kwargs)
        mode = current_mode()
        if mode == "auto":
            return _AUTO.get(name, autodiff_fn)(*args, **kwargs)
        if mode == "explicit":
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
