"""The in-memory dataset every loader returns."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One split held as numpy arrays.

    images: (N, H, W, C), uint8 (raw pixels, scaled by 1/255 later) or floating (values
      taken as already scaled/normalised; float16/float64 are converted to float32). Any
      other dtype (int32, uint16, bool, ...) is refused: its pixel range is ambiguous.
    labels: (N,) integers in [0, num_classes), stored as int32; checked here, on the host,
      because under jit an out-of-range label silently trains on another class (-1) or
      gives a NaN loss (== num_classes).
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
        images, labels = np.asarray(self.images), np.asarray(self.labels)
        if images.dtype != np.uint8:
            if not np.issubdtype(images.dtype, np.floating):
                raise TypeError(f"{self.name}/{self.split}: images must be uint8 (raw pixels) or floating (scaled "
                                f"values), got {images.dtype}; convert them yourself, e.g. x.astype('uint8') for "
                                f"0-255 pixels or x / x.max() for another range")
            if images.dtype != np.float32:
                images = images.astype(np.float32)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{self.name}/{self.split}: labels must be integers (class indices), got {labels.dtype}")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            bad = int(np.flatnonzero((labels < 0) | (labels >= self.num_classes))[0])
            raise ValueError(f"{self.name}/{self.split}: labels out of range: expected 0 <= label < "
                             f"{self.num_classes}, got min {int(labels.min())}, max {int(labels.max())} (first bad "
                             f"index {bad}: {int(labels[bad])})")
        object.__setattr__(self, "images", images)  # frozen: set the converted arrays once, here
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one example."""
        return tuple(self.images.shape[1:])

    def replace(self, **changes) -> "Dataset":
        """A copy with the given fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)
