"""A seeded random dataset with a learnable signal, for tests and benchmarks.

Each class has a fixed random prototype image (drawn from `seed`); an example is
its class prototype blended with uniform noise, so a small CNN separates the
classes quickly while the data still looks random. Train and test draw from
independent streams of the same seed, sharing the prototypes.
"""
from __future__ import annotations

import numpy as np

from jaxcnn.data.dataset import Dataset

_SPLIT_STREAMS = {"train": 1, "test": 2}
_DEFAULT_SIZES = {"train": 1024, "test": 256}


def make_synthetic(split: str = "train", *, num_examples: int | None = None,
                   image_shape: tuple[int, int, int] = (8, 8, 1), num_classes: int = 10,
                   seed: int = 0, noise: float = 0.5) -> Dataset:
    """float32 images in [0, 1] of `image_shape`, balanced int32 labels.

    `noise` in [0, 1] is the weight of the noise against the prototype
    (0: every example equals its prototype; 1: no signal at all).
    """
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"synthetic: unknown split {split!r}; expected one of {sorted(_SPLIT_STREAMS)}")
    if num_examples is None:
        num_examples = _DEFAULT_SIZES[split]
    if num_examples <= 0:
        raise ValueError(f"synthetic: empty split {split!r}: num_examples must be > 0, got {num_examples}")
    if num_classes < 2:
        raise ValueError(f"synthetic: num_classes must be >= 2, got {num_classes}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"synthetic: noise must be in [0, 1], got {noise}")
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"synthetic: image_shape must be (H, W, C), got {image_shape}")
    prototypes = np.random.default_rng([seed, 0]).uniform(size=(num_classes, *image_shape))
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
    images = (1.0 - noise) * prototypes[labels] + noise * rng.uniform(size=(num_examples, *image_shape))
    return Dataset(images=images.astype(np.float32), labels=labels, num_classes=num_classes,
                   name="synthetic", split=split)
