"""scikit-learn's embedded 8x8 handwritten digits: the default dataset, no download.

1797 images with values 0..16, scaled here to float32 in [0, 1] as (8, 8, 1).
The split is a fixed seeded permutation (seed 0): the first 20% is "test", the
rest "train", so every class appears in both and the split never changes.
"""
from __future__ import annotations

import functools

import numpy as np

from jaxcnn.data.dataset import Dataset

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Imported lazily: sklearn.datasets costs ~1 s to import.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[..., None]
    labels = bunch.target.astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits(split: str = "train") -> Dataset:
    """Digits split "train" (1438 examples), "test" (359) or "all" (1797)."""
    images, labels = _digits_arrays()
    n = images.shape[0]
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(n)
    n_test = int(round(DIGITS_TEST_FRACTION * n))
    splits = {"train": perm[n_test:], "test": perm[:n_test], "all": np.arange(n)}
    if split not in splits:
        raise ValueError(f"digits: unknown split {split!r}; expected one of {sorted(splits)}")
    idx = np.sort(splits[split])  # keep the original order inside a split
    return Dataset(images=images[idx], labels=labels[idx], num_classes=10, name="digits", split=split)
