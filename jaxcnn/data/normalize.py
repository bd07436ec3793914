"""Per-channel normalisation with statistics computed on the training split."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxcnn.data.dataset import Dataset


class Normalization(NamedTuple):
    """Per-channel mean and std (shape (C,), float32) of pixels scaled to [0, 1]."""

    mean: np.ndarray
    std: np.ndarray


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]; float images are returned as float32 unchanged."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


def channel_stats(dataset: Dataset, *, chunk: int = 8192) -> Normalization:
    """Mean and std per channel over every pixel of `dataset` (use the train split).

    Accumulated in float64 chunk by chunk, so a 60000-image uint8 set never needs a
    full float copy. A constant channel gets std 1 so normalising never divides by 0.
    """
    if len(dataset) == 0:
        raise ValueError(f"{dataset.name}/{dataset.split}: cannot compute statistics of an empty split")
    c = dataset.images.shape[-1]
    total, total_sq, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(dataset), chunk):
        x = to_unit_range(dataset.images[start:start + chunk]).astype(np.float64).reshape(-1, c)
        total += x.sum(axis=0)
        total_sq += np.square(x).sum(axis=0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    std = np.where(std > 1e-8, std, 1.0)
    return Normalization(mean.astype(np.float32), std.astype(np.float32))


def normalize_images(images: np.ndarray, stats: Normalization) -> np.ndarray:
    """(to_unit_range(images) - mean) / std, float32, broadcast over the channel axis."""
    if images.shape[-1] != stats.mean.shape[0]:
        raise ValueError(f"normalize: images have {images.shape[-1]} channels, statistics have "
                         f"{stats.mean.shape[0]}")
    return (to_unit_range(images) - stats.mean) / stats.std


def normalize(dataset: Dataset, stats: Normalization) -> Dataset:
    """The dataset with float32 normalised images (compute `stats` on train, apply to every split)."""
    return dataset.replace(images=normalize_images(dataset.images, stats))
