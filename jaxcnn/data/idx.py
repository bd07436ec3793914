"""IDX files (the MNIST / Fashion-MNIST format) read and written with numpy.

Layout of an IDX file: two zero bytes, a type-code byte, a rank byte, then `rank`
big-endian uint32 dimensions, then the row-major payload (big-endian for
multi-byte types). Files may be gzip-compressed (detected from the gzip magic,
not the name). Every error names the file and states expected vs actual.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

# IDX type code -> numpy dtype (big-endian as stored on disk).
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_FOR_KIND = {np.dtype(v).newbyteorder("=").str: k for k, v in IDX_DTYPES.items()}

# The four standard files: split -> (images stem, labels stem). Each may carry a
# ".gz" suffix; the original MNIST site also used "train-images.idx3-ubyte".
IDX_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path, limit: int = -1) -> bytes:
    """The (decompressed) bytes of `path`, at most `limit` of them (-1: all)."""
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return f.read(limit)
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e


def _parse_header(path: Path, raw: bytes, expected_ndim: int | None) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, header length) from the first bytes of an IDX file, checked."""
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header: expected at least 4 bytes, got {len(raw)}")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    magic = struct.unpack(">I", raw[:4])[0]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08X}; expected 0x0000TTNN with type code TT in "
            f"{{{', '.join(f'0x{c:02X}' for c in IDX_DTYPES)}}} and rank NN >= 1 "
            "(e.g. 0x00000803 for images, 0x00000801 for labels)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{path}: expected an IDX file of rank {expected_ndim}, header says rank {ndim} "
                         f"(magic 0x{magic:08X})")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header: expected {header_len} bytes, got {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    return IDX_DTYPES[code], tuple(int(d) for d in shape), header_len


def read_idx_header(path: str | os.PathLike, *, expected_ndim: int | None = None
                    ) -> tuple[np.dtype, tuple[int, ...]]:
    """(native dtype, shape) from an IDX header, without reading the payload."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    dtype, shape, _ = _parse_header(path, _read_bytes(path, 4 + 4 * 255), expected_ndim)
    return dtype.newbyteorder("="), shape


def read_idx(path: str | os.PathLike, *, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a native-endian numpy array.

    Raises FileNotFoundError if `path` does not exist, ValueError if the magic
    number is wrong, the rank differs from `expected_ndim`, or the payload size
    does not match the header (truncated or trailing bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = _read_bytes(path)
    dtype, shape, header_len = _parse_header(path, raw, expected_ndim)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX payload {what}: header shape {shape} needs {expected} bytes "
            f"({shape[0]} items), file holds {actual} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as an IDX file; gzip-compressed when `path` ends in ".gz"."""
    path = Path(path)
    array = np.asarray(array)
    code = _CODE_FOR_KIND.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise ValueError(f"{path}: dtype {array.dtype} has no IDX type code; use one of "
                         f"{sorted(str(d.newbyteorder('=')) for d in IDX_DTYPES.values())}")
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def find_idx_file(directory: str | os.PathLike, stem: str) -> Path:
    """Locate `stem` (e.g. "train-images-idx3-ubyte") in `directory`, gzip or not."""
    directory = Path(directory)
    dotted = stem.replace("-idx", ".idx")  # the original MNIST site's spelling
    candidates = [stem, stem + ".gz", dotted, dotted + ".gz"]
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{directory}: missing IDX file {stem!r}; looked for {candidates}; "
        f"{_listing(directory)}. Expected the four standard files "
        f"{[s for pair in IDX_SPLIT_FILES.values() for s in pair]} (optionally .gz)."
    )


def _listing(directory: Path, shown: int = 4) -> str:
    """What ``directory`` holds, in a few words: the IDX-looking files it has (at most
    ``shown`` names) and how many other entries, never the whole listing."""
    names = sorted(p.name for p in directory.iterdir())
    idx_like = [n for n in names if "idx" in n.lower() or "ubyte" in n.lower()]
    others = len(names) - len(idx_like)
    if not idx_like:
        return f"the directory holds no IDX files ({len(names)} other entr{'y' if len(names) == 1 else 'ies'})"
    listed = ", ".join(idx_like[:shown]) + (f" and {len(idx_like) - shown} more" if len(idx_like) > shown else "")
    rest = f" (and {others} other entr{'y' if others == 1 else 'ies'})" if others else ""
    return f"the IDX files present are {listed}{rest}"


def read_idx_split(directory: str | os.PathLike, split: str, *,
                   num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one split ("train" or "test") of a standard IDX directory.

    Returns images (N, H, W, 1) uint8 and labels (N,) int32. Raises
    FileNotFoundError for a missing directory or file, ValueError for a corrupt
    file, an empty split, an image/label count mismatch, or labels outside
    [0, num_classes) (checked only when `num_classes` is given).
    """
    directory = Path(directory)
    if split not in IDX_SPLIT_FILES:
        raise ValueError(f"unknown IDX split {split!r}; expected one of {sorted(IDX_SPLIT_FILES)}")
    if not directory.is_dir():
        raise FileNotFoundError(
            f"IDX dataset directory not found: {directory}; expected a directory holding "
            f"{[s for pair in IDX_SPLIT_FILES.values() for s in pair]} (optionally .gz)"
        )
    images_path = find_idx_file(directory, IDX_SPLIT_FILES[split][0])
    labels_path = find_idx_file(directory, IDX_SPLIT_FILES[split][1])
    images = read_idx(images_path)
    if images.ndim not in (3, 4):
        raise ValueError(f"{images_path}: expected images of rank 3 (N, H, W) or 4 (N, H, W, C), "
                         f"got shape {images.shape}")
    labels = read_idx(labels_path, expected_ndim=1)
    if images.shape[0] == 0:
        raise ValueError(f"{images_path}: empty split {split!r}: the header says 0 images")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{directory}: split {split!r} has {images.shape[0]} images "
                         f"({images_path.name}) but {labels.shape[0]} labels ({labels_path.name})")
    if images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 pixels (type code 0x08), got {images.dtype}")
    labels = labels.astype(np.int32)
    check_labels(labels, num_classes, source=str(labels_path))
    if images.ndim == 3:
        images = images[..., None]
    return images, labels


def check_labels(labels: np.ndarray, num_classes: int | None, *, source: str) -> None:
    """Raise ValueError if any label is negative or >= num_classes."""
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    bound = num_classes if num_classes is not None else np.iinfo(np.int32).max
    if lo < 0 or hi >= bound:
        bad = int(np.flatnonzero((labels < 0) | (labels >= bound))[0])
        raise ValueError(f"{source}: labels out of range: expected 0 <= label < {num_classes}, "
                         f"got min {lo}, max {hi} (first bad index {bad}: {int(labels[bad])})")
