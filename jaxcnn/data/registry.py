"""`load_dataset(name, split, ...)`: one entry point for every dataset source.

Names:
  "digits"         scikit-learn's embedded 8x8 digits (default; no download).
  "synthetic"      seeded random data with a learnable signal (options: see make_synthetic).
  "fashion_mnist"  Fashion-MNIST from local IDX files (default Debian's
                   /usr/share/datasets/fashion-mnist, or `source_dir`) through our
                   TFDS builder `local_fashion_mnist`, prepared once into `data_dir`.
  "idx:PATH"       any directory of the four standard IDX files, through `local_idx`.
  anything else    a TFDS dataset already prepared in `data_dir`, read with
                   `tfds.data_source` (split strings like "train[:10%]" work).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxcnn.data.dataset import Dataset
from jaxcnn.data.digits import load_digits
from jaxcnn.data.idx import check_labels
from jaxcnn.data.synthetic import make_synthetic

BUILTIN = ("digits", "synthetic", "fashion_mnist", "idx:PATH")


def available() -> tuple[str, ...]:
    """Built-in names; any prepared TFDS name is accepted too."""
    return BUILTIN


def load_dataset(name: str = "digits", split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 source_dir: str | os.PathLike | None = None, **options) -> Dataset:
    """Load one split of `name` into memory as a `Dataset`.

    data_dir: TFDS data dir (prepared datasets and our builders' cache; default
      TFDS's, ~/tensorflow_datasets or $TFDS_DATA_DIR).
    source_dir: where the IDX files of "fashion_mnist" live (default
      /usr/share/datasets/fashion-mnist).
    options: passed to the synthetic generator (num_examples, image_shape, ...).
    """
    if options and name != "synthetic":
        raise TypeError(f"load_dataset({name!r}) takes no options {sorted(options)}; only 'synthetic' does")
    if name == "digits":
        return load_digits(split)
    if name == "synthetic":
        return make_synthetic(split, **options)
    # Imported here: tensorflow_datasets takes seconds to import and digits/synthetic do not need it.
    from jaxcnn.data import tfds_local

    if name == "fashion_mnist":
        src = Path(source_dir) if source_dir is not None else tfds_local.FASHION_MNIST_DIR
        tfds_name = tfds_local.prepare_local_idx(src, data_dir=data_dir, fashion_mnist=True)
        return _from_tfds(tfds_name, split, data_dir, display_name="fashion_mnist")
    if name.startswith("idx:"):
        path = name[len("idx:"):]
        if not path:
            raise ValueError("idx: dataset needs a directory, e.g. 'idx:/data/mnist'")
        tfds_name = tfds_local.prepare_local_idx(Path(path), data_dir=data_dir)
        return _from_tfds(tfds_name, split, data_dir, display_name=name)
    return _from_tfds(name, split, data_dir, display_name=name)


def _from_tfds(name: str, split: str, data_dir, *, display_name: str) -> Dataset:
    """Read a prepared TFDS split into numpy arrays.

    `tfds.builder(...).as_data_source(split)` is what `tfds.data_source` does; split
    in two so that "not prepared" gets its own message instead of a download attempt.
    """
    import tensorflow_datasets as tfds

    where = os.fspath(data_dir) if data_dir is not None else "the default TFDS data dir"
    not_prepared = (f"TFDS dataset {name!r} is not prepared in {where}. Nothing can be downloaded here: "
                    f"prepare it elsewhere (file_format='array_record') and copy it into the data dir, "
                    f"or use one of {list(BUILTIN)}.")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise FileNotFoundError(f"{not_prepared} ({str(e).splitlines()[0]})") from e
    if not builder.is_prepared():
        raise FileNotFoundError(f"{not_prepared} (looked for {builder.data_path})")
    try:
        source = builder.as_data_source(split=split)
    except ValueError as e:  # unknown split name / bad slice
        raise ValueError(f"{display_name}: bad split {split!r} ({str(e).splitlines()[0]})") from e
    except NotImplementedError as e:  # prepared as tfrecord: no random access without TensorFlow
        raise ValueError(f"{display_name}: prepared in {builder.data_path} in a format without random "
                         f"access; re-prepare it with file_format='array_record' "
                         f"({str(e).splitlines()[0]})") from e
    n = len(source)
    if n == 0:
        raise ValueError(f"{display_name}: empty split {split!r} in {where}")
    info = source.dataset_info
    image_key, label_key = info.supervised_keys or ("image", "label")
    records = source.__getitems__(list(range(n)))  # one batched read of the array_record shards
    try:
        images = np.stack([np.asarray(r[image_key]) for r in records])
        labels = np.asarray([r[label_key] for r in records], dtype=np.int32)
    except KeyError as e:
        raise ValueError(f"{display_name}: expected features {image_key!r} and {label_key!r}, "
                         f"got {sorted(records[0])}") from e
    if images.ndim == 3:
        images = images[..., None]
    label_feature = info.features[label_key]
    num_classes = int(getattr(label_feature, "num_classes", 0) or int(labels.max()) + 1)
    check_labels(labels, num_classes, source=f"{display_name}/{split}")
    return Dataset(images=images, labels=labels, num_classes=num_classes, name=display_name, split=split)
