"""Data layer: datasets (TFDS, local IDX via our TFDS builders, embedded digits,
synthetic), normalisation, augmentation, batching and device sharding.

TFDS is imported lazily (only for TFDS-backed names), so `load_dataset("digits")`
stays fast; the builders live in `jaxcnn.data.tfds_local`.
"""
from jaxcnn.data.augment import augment, random_crop, random_flip
from jaxcnn.data.dataset import Dataset
from jaxcnn.data.digits import load_digits
from jaxcnn.data.idx import IDX_SPLIT_FILES, read_idx, read_idx_header, read_idx_split, write_idx
from jaxcnn.data.normalize import Normalization, channel_stats, normalize, normalize_images, to_unit_range
from jaxcnn.data.pipeline import (batches, epoch_permutation, prefetch_to_device, shard_for_devices,
                                  steps_per_epoch)
from jaxcnn.data.registry import available, load_dataset
from jaxcnn.data.splits import load_splits
from jaxcnn.data.synthetic import make_synthetic


def prepare_local_idx(source_dir, *, data_dir=None, fashion_mnist=False) -> str:
    """See `jaxcnn.data.tfds_local.prepare_local_idx` (wrapped to keep TFDS's import lazy)."""
    from jaxcnn.data.tfds_local import prepare_local_idx as _prepare

    return _prepare(source_dir, data_dir=data_dir, fashion_mnist=fashion_mnist)


__all__ = [
    "Dataset", "Normalization", "IDX_SPLIT_FILES",
    "load_dataset", "load_splits", "available", "load_digits", "make_synthetic", "prepare_local_idx",
    "read_idx", "read_idx_header", "write_idx", "read_idx_split",
    "channel_stats", "normalize", "normalize_images", "to_unit_range",
    "augment", "random_crop", "random_flip",
    "batches", "epoch_permutation", "steps_per_epoch", "shard_for_devices", "prefetch_to_device",
]
