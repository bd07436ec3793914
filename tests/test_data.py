"""Data layer: IDX reader/writer and its errors, the local TFDS builders (prepared
from tiny IDX directories written in tmp_path), digits, synthetic, normalisation,
batching/sharding/prefetch and augmentation."""
import gzip
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import data as D

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- helpers
def write_idx_dir(directory, *, n_train=12, n_test=5, hw=(6, 5), num_classes=3, gz=True):
    """Four standard IDX files; pixel [0, 0] encodes the example index so examples are
    identifiable after TFDS reorders them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    rng = np.random.default_rng(0)
    for split, n, (img_name, lbl_name) in [("train", n_train, D.IDX_SPLIT_FILES["train"]),
                                          ("test", n_test, D.IDX_SPLIT_FILES["test"])]:
        images = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        labels = (np.arange(n) % num_classes).astype(np.uint8)
        D.write_idx(directory / (img_name + suffix), images)
        D.write_idx(directory / (lbl_name + suffix), labels)
        out[split] = (images, labels)
    return out


def indexed_dataset(n, hw=(2, 2)):
    """Images whose every pixel equals the example index (float32), labels = index % 10."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, *hw, 1)).copy()
    return D.Dataset(images=images, labels=(np.arange(n) % 10).astype(np.int32), num_classes=10, name="idxd")


def ids(batch):
    return np.asarray(batch["image"])[:, 0, 0, 0].astype(int)


# ---------------------------------------------------------------- IDX format
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    x = (np.random.default_rng(1).normal(size=(4, 3, 5)) * 50).astype(dtype)
    path = D.write_idx(tmp_path / f"x{suffix}", x)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    y = D.read_idx(path)
    assert y.dtype == np.dtype(dtype) and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    assert D.read_idx_header(path) == (np.dtype(dtype), (4, 3, 5))


def test_idx_header_bytes_are_standard(tmp_path):
    path = D.write_idx(tmp_path / "labels", np.array([1, 2, 3], np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])


def test_idx_wrong_magic(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: bad IDX magic number 0x12340803; "
                                         r"expected 0x0000TTNN"):
        D.read_idx(bad)


def test_idx_wrong_rank(tmp_path):
    path = D.write_idx(tmp_path / "l", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="expected an IDX file of rank 1, header says rank 2"):
        D.read_idx(path, expected_ndim=1)


def test_idx_truncated_plain(tmp_path):
    path = D.write_idx(tmp_path / "imgs", np.zeros((10, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError) as e:
        D.read_idx(path)
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg
    assert "needs 160 bytes (10 items), file holds 153 bytes" in msg


def test_idx_trailing_bytes(tmp_path):
    path = D.write_idx(tmp_path / "imgs", np.zeros((2, 2), np.uint8))
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(ValueError, match="trailing bytes.*needs 4 bytes.*holds 6 bytes"):
        D.read_idx(path)


def test_idx_truncated_gzip_stream(tmp_path):
    path = D.write_idx(tmp_path / "imgs.gz", np.arange(4000, dtype=np.int32))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"imgs\.gz: corrupt or truncated gzip stream"):
        D.read_idx(path)


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"IDX file not found: .*nope"):
        D.read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- IDX directories
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_split(tmp_path, gz):
    written = write_idx_dir(tmp_path, gz=gz)
    for split in ("train", "test"):
        images, labels = D.read_idx_split(tmp_path, split, num_classes=3)
        assert images.shape == written[split][0].shape + (1,) and images.dtype == np.uint8
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(images[..., 0], written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])


def test_missing_dataset_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        D.read_idx_split(tmp_path / "absent", "train")
    assert "absent" in str(e.value) and "train-images-idx3-ubyte" in str(e.value)


def test_missing_file_lists_expected(tmp_path):
    write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    D.read_idx_split(tmp_path, "train")  # the other split is intact
    with pytest.raises(FileNotFoundError) as e:
        D.read_idx_split(tmp_path, "test")
    msg = str(e.value)
    assert "missing IDX file 't10k-labels-idx1-ubyte'" in msg
    assert "t10k-images-idx3-ubyte.gz" in msg  # what the directory does hold
    assert "train-labels-idx1-ubyte" in msg  # the full expected set


def test_truncated_file_in_split(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: IDX payload truncated: header shape "
                                         r"\(12, 6, 5\) needs 360 bytes \(12 items\), file holds 330 bytes"):
        D.read_idx_split(tmp_path, "train")


def test_wrong_magic_in_split(tmp_path):
    write_idx_dir(tmp_path, gz=False)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x99\x01" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: bad IDX magic number 0x00009901"):
        D.read_idx_split(tmp_path, "test")


def test_empty_split(tmp_path):
    write_idx_dir(tmp_path, n_test=0)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: empty split 'test': the header says 0 images"):
        D.read_idx_split(tmp_path, "test")


def test_labels_out_of_range(tmp_path):
    write_idx_dir(tmp_path, num_classes=5)
    with pytest.raises(ValueError) as e:
        D.read_idx_split(tmp_path, "train", num_classes=3)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in msg
    assert "expected 0 <= label < 3, got min 0, max 4 (first bad index 3: 3)" in msg


def test_image_label_count_mismatch(tmp_path):
    write_idx_dir(tmp_path)
    D.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match=r"split 'train' has 12 images \(train-images-idx3-ubyte.gz\) "
                                         r"but 11 labels \(train-labels-idx1-ubyte.gz\)"):
        D.read_idx_split(tmp_path, "train")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_files():
    for split, n in [("train", 60000), ("test", 10000)]:
        images, labels = D.read_idx_split(FASHION_DIR, split, num_classes=10)
        assert images.shape == (n, 28, 28, 1) and labels.shape == (n,)
        assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10


# ---------------------------------------------------------------- local TFDS builders
def _sort_by_id(ds):
    order = np.argsort(ds.images[:, 0, 0, 0])
    return ds.images[order], ds.labels[order]


def test_local_idx_builder_prepares_and_reads_back(tmp_path):
    import tensorflow_datasets as tfds

    written = write_idx_dir(tmp_path / "src")
    data_dir = tmp_path / "tfds"
    for split in ("train", "test"):
        ds = D.load_dataset(f"idx:{tmp_path / 'src'}", split, data_dir=data_dir)
        assert ds.images.dtype == np.uint8 and ds.images.shape == (len(written[split][0]), 6, 5, 1)
        assert ds.num_classes == 3 and ds.labels.dtype == np.int32
        images, labels = _sort_by_id(ds)
        np.testing.assert_array_equal(images[..., 0], written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
    shards = sorted(p.name for p in data_dir.rglob("*.array_record*"))
    assert shards and all(name.startswith("local_idx-") for name in shards)
    # The prepared copy is an ordinary TFDS dataset: tfds.data_source reads it directly.
    name = D.prepare_local_idx(tmp_path / "src", data_dir=data_dir)
    assert name.startswith("local_idx/src_")
    source = tfds.data_source(name, split="test", data_dir=data_dir, download=False)
    assert len(source) == 5 and source[0]["image"].shape == (6, 5, 1)
    # Slicing syntax goes through to TFDS.
    assert len(D.load_dataset(f"idx:{tmp_path / 'src'}", "train[:50%]", data_dir=data_dir)) == 6


def test_local_fashion_mnist_builder_from_source_dir(tmp_path):
    written = write_idx_dir(tmp_path / "fm", n_train=7, n_test=3, hw=(28, 28), num_classes=10)
    data_dir = tmp_path / "tfds"
    ds = D.load_dataset("fashion_mnist", "train", data_dir=data_dir, source_dir=tmp_path / "fm")
    assert ds.name == "fashion_mnist" and ds.num_classes == 10 and ds.images.shape == (7, 28, 28, 1)
    np.testing.assert_array_equal(_sort_by_id(ds)[0][..., 0], written["train"][0])
    assert (data_dir / "local_fashion_mnist" / "idx" / "1.0.0").is_dir()
    # Once prepared, the cache alone serves it: the source directory is no longer needed.
    for f in (tmp_path / "fm").iterdir():
        f.unlink()
    again = D.load_dataset("fashion_mnist", "test", data_dir=data_dir, source_dir=tmp_path / "fm")
    assert len(again) == 3


def test_local_builder_reports_bad_source(tmp_path):
    write_idx_dir(tmp_path / "src", num_classes=3)
    path = tmp_path / "src" / "train-images-idx3-ubyte.gz"
    D.write_idx(path, np.zeros((12, 6, 5), np.uint8))
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: IDX payload truncated"):
        D.load_dataset(f"idx:{tmp_path / 'src'}", "train", data_dir=tmp_path / "tfds")


def test_missing_fashion_dir_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"IDX dataset directory not found: .*nowhere.*"
                                                r"apt-get install dataset-fashion-mnist"):
        D.load_dataset("fashion_mnist", data_dir=tmp_path / "tfds", source_dir=tmp_path / "nowhere")


def test_unprepared_tfds_dataset_error(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        D.load_dataset("mnist", "train", data_dir=tmp_path)
    msg = str(e.value)
    assert "'mnist' is not prepared in" in msg and str(tmp_path) in msg
    assert "Nothing can be downloaded here" in msg


# ---------------------------------------------------------------- digits / synthetic
def test_digits_default_split():
    train, test = D.load_dataset(), D.load_dataset("digits", "test")
    assert train.images.shape == (1438, 8, 8, 1) and test.images.shape == (359, 8, 8, 1)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int32
    assert 0.0 <= train.images.min() and train.images.max() == 1.0
    assert train.num_classes == 10 and set(np.unique(test.labels)) == set(range(10))
    # Disjoint and complete: the two splits hold exactly the 1797 images.
    everything = D.load_digits("all")
    rows = {r.tobytes() for r in everything.images}
    assert len(train) + len(test) == len(everything) == 1797
    assert {r.tobytes() for r in train.images} | {r.tobytes() for r in test.images} <= rows
    again = D.load_dataset("digits", "test")
    np.testing.assert_array_equal(again.images, test.images)
    np.testing.assert_array_equal(again.labels, test.labels)


def test_synthetic_seeded_and_learnable():
    a = D.load_dataset("synthetic", "train", num_examples=200, image_shape=(4, 4, 2), num_classes=4, seed=3)
    b = D.make_synthetic("train", num_examples=200, image_shape=(4, 4, 2), num_classes=4, seed=3)
    c = D.make_synthetic("train", num_examples=200, image_shape=(4, 4, 2), num_classes=4, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)
    assert a.images.shape == (200, 4, 4, 2) and np.bincount(a.labels).tolist() == [50] * 4
    test = D.make_synthetic("test", num_examples=100, image_shape=(4, 4, 2), num_classes=4, seed=3)
    # Nearest class mean (fit on train) classifies the test split: the signal is learnable.
    means = np.stack([a.images[a.labels == k].mean(0) for k in range(4)])
    pred = np.argmin(((test.images[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4)), axis=1)
    assert (pred == test.labels).mean() > 0.9


def test_load_dataset_rejects_options_for_other_names():
    with pytest.raises(TypeError, match="takes no options"):
        D.load_dataset("digits", num_examples=3)


# ---------------------------------------------------------------- normalisation
def test_normalisation_from_train_stats():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 4, 4, 3), dtype=np.uint8)
    ds = D.Dataset(images=images, labels=np.zeros(50, np.int32), num_classes=1, name="u8")
    stats = D.channel_stats(ds, chunk=7)
    unit = images.astype(np.float64) / 255
    np.testing.assert_allclose(stats.mean, unit.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats.std, unit.std(axis=(0, 1, 2)), rtol=1e-5)
    normed = D.normalize(ds, stats).images
    assert normed.dtype == np.float32
    np.testing.assert_allclose(normed.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(normed.std(axis=(0, 1, 2)), 1, atol=1e-4)


# ---------------------------------------------------------------- batching
def test_batches_deterministic_and_cover_each_example_once():
    ds = indexed_dataset(37)
    run1 = [ids(b) for b in D.batches(ds, 8, seed=1, epoch=2)]
    run2 = [ids(b) for b in D.batches(ds, 8, seed=1, epoch=2)]
    other = [ids(b) for b in D.batches(ds, 8, seed=1, epoch=3)]
    assert len(run1) == D.steps_per_epoch(37, 8) == 4
    assert all(np.array_equal(x, y) for x, y in zip(run1, run2))
    assert not all(np.array_equal(x, y) for x, y in zip(run1, other))
    seen = np.concatenate(run1)
    assert len(set(seen.tolist())) == 32  # no repeats; 5 dropped
    # Without dropping, every example appears exactly once and the padding is masked out.
    full = list(D.batches(ds, 8, seed=1, epoch=2, drop_remainder=False))
    assert len(full) == 5 and all(b["image"].shape == (8, 2, 2, 1) for b in full)
    real = np.concatenate([ids(b)[b["mask"]] for b in full])
    assert sorted(real.tolist()) == list(range(37))
    assert full[-1]["mask"].sum() == 5
    # Labels travel with their images.
    b = full[0]
    np.testing.assert_array_equal(b["label"], ids(b) % 10)


def test_batches_no_shuffle_and_resume():
    ds = indexed_dataset(20)
    plain = [ids(b) for b in D.batches(ds, 5, seed=0, epoch=0, shuffle=False)]
    np.testing.assert_array_equal(np.concatenate(plain), np.arange(20))
    shuffled = [ids(b) for b in D.batches(ds, 5, seed=9, epoch=4)]
    resumed = [ids(b) for b in D.batches(ds, 5, seed=9, epoch=4, start_step=2)]
    assert len(resumed) == 2
    assert all(np.array_equal(x, y) for x, y in zip(shuffled[2:], resumed))


def test_process_sharding_partitions_global_batch():
    ds = indexed_dataset(50)
    global_batches = list(D.batches(ds, 12, seed=5, epoch=1))
    per_process = [list(D.batches(ds, 12, seed=5, epoch=1, process_index=p, process_count=3))
                   for p in range(3)]
    for step, g in enumerate(global_batches):
        parts = [per_process[p][step] for p in range(3)]
        assert all(part["image"].shape[0] == 4 for part in parts)
        np.testing.assert_array_equal(np.concatenate([ids(p) for p in parts]), ids(g))
    with pytest.raises(ValueError, match="global batch_size 12 is not divisible by process_count 5"):
        next(D.batches(ds, 12, seed=0, epoch=0, process_count=5))


def test_batches_errors():
    with pytest.raises(ValueError, match="3 examples make no full batch of 4"):
        next(D.batches(indexed_dataset(3), 4, seed=0, epoch=0))
    with pytest.raises(ValueError, match="empty split"):
        empty = D.Dataset(np.zeros((0, 2, 2, 1), np.float32), np.zeros(0, np.int32), 10, "e")
        next(D.batches(empty, 4, seed=0, epoch=0))


def test_shard_for_devices_shapes_and_error():
    batch = next(D.batches(indexed_dataset(16), 16, seed=0, epoch=0))
    sharded = D.shard_for_devices(batch, 4)
    assert sharded["image"].shape == (4, 4, 2, 2, 1)
    assert sharded["label"].shape == (4, 4) and sharded["mask"].shape == (4, 4)
    np.testing.assert_array_equal(sharded["label"].reshape(-1), batch["label"])
    with pytest.raises(ValueError, match=r"\['image'\] has leading axis 16, not divisible by n_devices=3"):
        D.shard_for_devices(batch, 3)


def test_prefetch_to_device_keeps_values_and_sharding():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    ds = indexed_dataset(64)
    host = list(D.batches(ds, 16, seed=0, epoch=0))
    on_device = list(D.prefetch_to_device(D.batches(ds, 16, seed=0, epoch=0), size=2))
    assert len(on_device) == len(host) == 4
    for h, d in zip(host, on_device):
        assert isinstance(d["image"], jax.Array)
        np.testing.assert_array_equal(np.asarray(d["image"]), h["image"])
    n = len(devices)
    if 16 % n == 0:
        sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))
        first = next(iter(D.prefetch_to_device(
            (D.shard_for_devices(b, n) for b in host), size=2, sharding=sharding)))
        assert first["image"].shape == (n, 16 // n, 2, 2, 1)
        assert len(first["image"].sharding.device_set) == n
        out = jax.pmap(lambda x: x * 2)(first["image"])
        np.testing.assert_array_equal(np.asarray(out).reshape(16, 2, 2, 1), host[0]["image"] * 2)


# ---------------------------------------------------------------- augmentation
def test_random_flip_mirrors_or_keeps_each_image():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 5, 6, 2)), jnp.float32)
    y = D.random_flip(jax.random.key(0), x)
    assert y.shape == x.shape
    mirrored = np.all(np.asarray(y) == np.asarray(x)[:, :, ::-1], axis=(1, 2, 3))
    same = np.all(np.asarray(y) == np.asarray(x), axis=(1, 2, 3))
    assert np.all(mirrored | same) and mirrored.any() and same.any()
    np.testing.assert_array_equal(D.random_flip(jax.random.key(0), x), y)


def test_random_crop_is_a_window_of_the_padded_image():
    x = jnp.arange(4 * 5 * 5 * 1, dtype=jnp.float32).reshape(4, 5, 5, 1) + 1
    y = np.asarray(D.random_crop(jax.random.key(3), x, 2))
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(4):
        windows = [padded[i, a:a + 5, b:b + 5] for a in range(5) for b in range(5)]
        assert any(np.array_equal(y[i], w) for w in windows)
    np.testing.assert_array_equal(D.random_crop(jax.random.key(3), x, 0), x)
    crops = [np.asarray(D.random_crop(jax.random.key(k), x, 2)) for k in range(4)]
    assert not all(np.array_equal(crops[0], c) for c in crops[1:])


def test_augment_deterministic_jittable_and_key_dependent():
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(16, 8, 8, 3)), jnp.float32)
    f = jax.jit(lambda k, im: D.augment(k, im, crop_padding=2, flip=True))
    a, b = f(jax.random.key(7), x), D.augment(jax.random.key(7), x, crop_padding=2, flip=True)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, f(jax.random.key(8), x))
    np.testing.assert_array_equal(D.augment(jax.random.key(0), x), x)  # nothing enabled: identity
