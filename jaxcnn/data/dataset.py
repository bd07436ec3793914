"""The in-memory dataset every loader returns."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split held as numpy arrays.

    images: (N, H, W, C), uint8 (raw pixels) or float32 (already scaled/normalised).
    labels: (N,) int32 in [0, num_classes).
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    split: str = "train"

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"{self.name}/{self.split}: images must be (N, H, W, C), got shape {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}/{self.split}: labels must be ({self.images.shape[0]},) to match "
                             f"the images, got shape {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one example."""
        return tuple(self.images.shape[1:])

    def replace(self, **changes) -> "Dataset":
        return dataclasses.replace(self, **changes)
