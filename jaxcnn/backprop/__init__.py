"""Explicit (hand-written) backward passes and the machinery to train with them."""
from .mode import backprop_mode, current_mode  # noqa: F401
from . import dispatch  # noqa: F401
