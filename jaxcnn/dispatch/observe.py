"""Watch the ops a function calls through :mod:`dispatch` (used by gradcheck to find
max-pool ties). Observers see the concrete arguments when the function runs eagerly."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

_OBSERVERS: contextvars.ContextVar[tuple] = contextvars.ContextVar("jaxcnn_dispatch_observers", default=())


def observers() -> tuple:
    """The callbacks active in this context (innermost last), see :func:`observe`."""
    return _OBSERVERS.get()


@contextlib.contextmanager
def observe(callback: Callable):
    """Call ``callback(name, args, kwargs)`` for every ``dispatch.<op>`` call in the block."""
    token = _OBSERVERS.set(_OBSERVERS.get() + (callback,))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)
