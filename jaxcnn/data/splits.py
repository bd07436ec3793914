"""``load_splits``: a dataset's train and test splits, ready to train on."""
from __future__ import annotations

import numpy as np

from jaxcnn.data.dataset import Dataset
from jaxcnn.data.normalize import Normalization, channel_stats, normalize, to_unit_range
from jaxcnn.data.registry import load_dataset


def load_splits(dataset: str, data_dir=None, normalization=None) -> tuple[Dataset, Dataset, Normalization]:
    """``(train, test, normalization)`` of ``dataset`` (any :func:`load_dataset` name).

    Pixels are scaled to [0, 1], then both splits are normalised per channel with
    ``normalization`` (a ``(mean, std)`` pair, e.g. from a run's config) or, when it is
    ``None``, with the train split's own statistics, which are returned.
    """
    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    train, test = (d.replace(images=to_unit_range(d.images)) for d in (train, test))
    if normalization is None:
        normalization = channel_stats(train)
    else:
        normalization = Normalization(*(np.asarray(v, "float32") for v in normalization))
    return normalize(train, normalization), normalize(test, normalization), normalization
