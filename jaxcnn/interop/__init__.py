"""Interoperability: torch state_dicts (torchvision key names) and flax.linen."""
from .torch import from_torch, to_torch  # noqa: F401
