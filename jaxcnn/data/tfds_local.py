"""TFDS builders over local IDX files: Fashion-MNIST from Debian's package, or any
directory of the four standard IDX files.

Why our own builders: the official `fashion_mnist` / `mnist` builders download
and verify checksums, and Debian's re-compressed .gz files do not match them;
nothing can be downloaded here anyway. We read the IDX files with numpy, let
TFDS write array_record shards into its data dir once (`download_and_prepare`),
and read them back with `tfds.data_source` like any other TFDS dataset.
Features are `tfds.features.Tensor` (not `Image`, whose encoder needs TensorFlow).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxcnn.data.idx import IDX_SPLIT_FILES, find_idx_file, read_idx, read_idx_header, read_idx_split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot")


@dataclasses.dataclass
class IdxConfig(tfds.core.BuilderConfig):
    """What the features need to know: image shape and label classes."""

    image_shape: tuple = (28, 28, 1)
    num_classes: int = 10
    class_names: tuple | None = None


class LocalIdx(tfds.core.GeneratorBasedBuilder):
    """Any directory of IDX files (train/t10k images/labels) as a TFDS dataset.

    `source_dir` is needed only to prepare; reading a prepared copy needs just
    `data_dir`. Splits: "train" and "test".
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Local IDX files as array_record."}

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        self._source_dir = Path(source_dir) if source_dir is not None else None
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        if cfg.class_names:
            label = tfds.features.ClassLabel(names=list(cfg.class_names))
        else:
            label = tfds.features.ClassLabel(num_classes=cfg.num_classes)
        # DatasetInfo built directly: dataset_info_from_configs() looks for
        # metadata files next to the module, which a library builder has none of.
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"IDX images from {self._source_dir or 'a local directory'}.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=tuple(cfg.image_shape), dtype=np.uint8),
                "label": label,
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        if self._source_dir is None:
            raise FileNotFoundError(
                f"{self.name}: not prepared in {self.data_dir} and no source_dir given to prepare it "
                "from; nothing can be downloaded here")
        return {split: self._generate_examples(split) for split in IDX_SPLIT_FILES}

    def _generate_examples(self, split: str):
        cfg = self.builder_config
        images, labels = read_idx_split(self._source_dir, split, num_classes=cfg.num_classes)
        if images.shape[1:] != tuple(cfg.image_shape):
            raise ValueError(f"{self._source_dir}: split {split!r} has images of shape {images.shape[1:]}, "
                             f"expected {tuple(cfg.image_shape)} like the other split")
        for i in range(images.shape[0]):
            yield i, {"image": images[i], "label": int(labels[i])}


class LocalFashionMnist(LocalIdx):
    """Fashion-MNIST (60000 train / 10000 test, 28x28x1, 10 classes) from local IDX files,
    by default Debian's /usr/share/datasets/fashion-mnist."""

    BUILDER_CONFIGS = [IdxConfig(name="idx", image_shape=(28, 28, 1), num_classes=10,
                                 class_names=FASHION_MNIST_CLASSES)]


def _idx_config(source_dir: Path) -> IdxConfig:
    """A config for an arbitrary IDX directory, named after its path and file stats so
    that a changed source gets a fresh cache instead of a stale one."""
    stems = [s for pair in IDX_SPLIT_FILES.values() for s in pair]
    files = [find_idx_file(source_dir, s) for s in stems]
    digest = hashlib.sha1(str(source_dir.resolve()).encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    _, image_dims = read_idx_header(files[0])
    labels = np.concatenate([read_idx(files[1], expected_ndim=1), read_idx(files[3], expected_ndim=1)])
    if labels.size == 0:
        raise ValueError(f"{source_dir}: empty dataset: both label files hold 0 labels")
    if labels.min() < 0:
        raise ValueError(f"{source_dir}: labels out of range: expected >= 0, got min {int(labels.min())}")
    shape = tuple(image_dims[1:]) + ((1,) if len(image_dims) == 3 else ())
    return IdxConfig(name="src_" + digest.hexdigest()[:12], image_shape=tuple(int(d) for d in shape),
                     num_classes=int(labels.max()) + 1)


def prepare_local_idx(source_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                      fashion_mnist: bool = False) -> str:
    """Prepare (once; later calls reuse the cache) an IDX directory as array_record
    shards under `data_dir` (default: TFDS's, ~/tensorflow_datasets). Returns the
    name to pass to `tfds.data_source`."""
    source_dir = Path(source_dir)
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    if fashion_mnist:
        builder = LocalFashionMnist(source_dir=source_dir, data_dir=data_dir)
        if builder.is_prepared():  # the cache alone is enough; the source may be gone
            return f"{builder.name}/{builder.builder_config.name}"
    if not source_dir.is_dir():
        raise FileNotFoundError(
            f"IDX dataset directory not found: {source_dir}; expected a directory holding "
            f"{[s for pair in IDX_SPLIT_FILES.values() for s in pair]} (optionally .gz)"
            + (" (on Debian: apt-get install dataset-fashion-mnist)" if fashion_mnist else ""))
    if not fashion_mnist:
        builder = LocalIdx(source_dir=source_dir, config=_idx_config(source_dir), data_dir=data_dir)
    builder.download_and_prepare(file_format="array_record")
    return f"{builder.name}/{builder.builder_config.name}"
