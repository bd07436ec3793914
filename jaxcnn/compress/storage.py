"""A compressed checkpoint: one ``.npz`` file that is really smaller than the float one.

Each leaf of ``params`` / ``state`` is stored with one encoding (recorded in a JSON header
inside the file, with a format version):

* ``float``: the array as it is (biases, batch-norm parameters and statistics);
* ``sparse``: a bit mask (``np.packbits``, one bit per weight) and the non-zero values,
  chosen for a kernel whenever it is smaller (above ~3% zeros for float32);
* ``int8``: the quantised integers plus per-channel (or per-tensor) scales and zero points;
  with zeros also a bit mask and only the kept integers (``sparse_int8``);
* ``binary``: one bit per weight (its sign) plus XNOR's per-channel ``alpha``.

Loading returns exactly (bitwise) what the compressed network computes with: the params for
``float``/``sparse``, ``fake_quantize(params)`` for ``int8``, ``binarize(params)`` for
``binary``. A file written by a newer format, or with an encoding this build does not know,
is refused with a one-line ValueError naming the file and the encoding; so is a damaged
file or one that is not a compressed checkpoint (:class:`CompressedFileError`, see
:func:`load_compressed`), never with a silently different result.
"""
from __future__ import annotations

import io
import json
import math
import os
import stat
import struct
import zipfile
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._select import is_weight
from .binarize import METHODS, sign, xnor_alpha
from .quantize import QParams, check_scheme, dequantize, observe, quantize

FORMAT = "jaxcnn-compressed"
VERSION = 1
ENCODINGS = ("float", "sparse", "int8", "sparse_int8", "binary")
HEADER = "__header__"


def _nonzero_bits(a: np.ndarray) -> np.ndarray:
    """Entries whose bit pattern is not all zero (-0.0 counts as a value, so it round-trips)."""
    return a.view(np.dtype(f"u{a.dtype.itemsize}")) != 0 if a.dtype.kind == "f" else a != 0


def _encode_kernel(w: np.ndarray, quantize_scheme, bits, binarize_method, sparse):
    n = w.size
    if binarize_method is not None:
        fields = {"bits": np.packbits(w.reshape(-1) >= 0)}
        if binarize_method == "xnor":
            fields["alpha"] = np.asarray(xnor_alpha(jnp.asarray(w)))
        return "binary", {"method": binarize_method}, fields
    keep = _nonzero_bits(w).reshape(-1)
    use_mask = sparse and (n + 7) // 8 + int(keep.sum()) * (1 if quantize_scheme else w.itemsize) < \
        n * (1 if quantize_scheme else w.itemsize)
    if quantize_scheme is not None:
        q = observe(jnp.asarray(w), bits, quantize_scheme)
        ints = np.asarray(quantize(jnp.asarray(w), q)).reshape(-1)
        fields = {"scale": np.asarray(q.scale), "zero_point": np.asarray(q.zero_point, np.int32)}
        attrs = {"bits": bits, "axis": q.axis}
        if use_mask:
            return "sparse_int8", attrs, dict(fields, mask=np.packbits(keep), values=ints[keep])
        return "int8", attrs, dict(fields, values=ints)
    if use_mask:
        return "sparse", {}, {"mask": np.packbits(keep), "values": w.reshape(-1)[keep]}
    return "float", {}, {"values": w}


def _decode(entry: dict, fields: dict, where: str) -> np.ndarray:
    """The leaf's array; ``entry`` and ``fields`` were checked by :func:`_check_leaf`
    (every size below is bounded by bytes the file holds)."""
    encoding, shape = entry["encoding"], tuple(entry["shape"])
    n = math.prod(shape)
    if encoding == "float":
        return fields["values"].reshape(shape)
    if encoding == "binary":
        signs = np.unpackbits(fields["bits"], count=n).reshape(shape)
        s = np.asarray(sign(jnp.asarray(np.where(signs, 1.0, -1.0).astype(entry["dtype"]))))
        if entry["method"] == "xnor":
            return np.asarray(jnp.asarray(fields["alpha"]) * jnp.asarray(s))
        return s
    if encoding == "sparse":
        keep = np.unpackbits(fields["mask"], count=n).astype(bool)
        out = np.zeros(n, entry["dtype"])
        out[keep] = fields["values"]
        return out.reshape(shape)
    ints, q = _int8_values(entry, fields)
    return np.asarray(dequantize(jnp.asarray(ints), q, entry["dtype"]))


def _int8_values(entry: dict, fields: dict) -> tuple[np.ndarray, QParams]:
    """The stored integers (in the leaf's shape) and quantisation parameters of an
    ``int8`` / ``sparse_int8`` leaf."""
    shape = tuple(entry["shape"])
    n = math.prod(shape)
    zp = fields["zero_point"]
    q = QParams(jnp.asarray(fields["scale"]), jnp.asarray(zp), entry["bits"], entry["axis"])
    if entry["encoding"] == "int8":
        return fields["values"].reshape(shape), q
    # pruned weights hold the zero point, which dequantises to exactly 0.0
    keep = np.unpackbits(fields["mask"], count=n).astype(bool)
    zp_shape = [1] * len(shape)
    if entry["axis"] is not None:
        zp_shape[entry["axis"]] = -1
    ints = np.broadcast_to(zp.reshape(zp_shape), shape).astype(np.int8).reshape(-1)
    ints[keep] = fields["values"]
    return ints.reshape(shape), q


def save_compressed(path: str | os.PathLike, params, state=None, *, quantize: str | None = None, bits: int = 8,
                    binarize: str | None = None, sparse: bool = True, meta: dict | None = None) -> int:
    """Write ``params`` (and ``state``) to ``path`` (``.npz``); returns its size in bytes.

    ``quantize``: a scheme of :data:`jaxcnn.compress.SCHEMES` (kernels stored as ``bits``-bit
    integers); ``binarize``: ``"binary_connect"`` or ``"xnor"`` (kernels stored as sign bits);
    ``sparse``: store kernels with zeros as bit mask + values when smaller. ``meta``: any
    JSON-serialisable dict kept in the header (e.g. the compression settings).
    """
    if quantize is not None and binarize is not None:
        raise ValueError(f"save_compressed: choose quantize or binarize, got quantize={quantize!r} and "
                         f"binarize={binarize!r}")
    if quantize is not None:
        check_scheme(quantize, "save_compressed")
    if binarize is not None and binarize not in METHODS:
        raise ValueError(f"save_compressed: binarize must be one of {', '.join(METHODS)}, got {binarize!r}")
    entries, arrays = [], {}
    for tree_name, tree in (("params", params), ("state", state if state is not None else {})):
        for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
            a = np.asarray(leaf)
            keys = [getattr(k, "key", getattr(k, "idx", str(k))) for k in leaf_path]
            if tree_name == "params" and is_weight(leaf_path, a):
                encoding, attrs, fields = _encode_kernel(a, quantize, bits, binarize, sparse)
            else:
                encoding, attrs, fields = "float", {}, {"values": a}
            i = len(entries)
            entries.append(dict(attrs, tree=tree_name, path=keys, encoding=encoding, shape=list(a.shape),
                                dtype=a.dtype.name, fields=sorted(fields)))
            arrays.update({f"{i}.{k}": v for k, v in fields.items()})
    header = {"format": FORMAT, "version": VERSION, "leaves": entries, "meta": meta or {}}
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return os.path.getsize(path)


def _insert(tree: dict, keys: list, value):
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


class CompressedFileError(ValueError):
    """A file :func:`load_compressed` cannot read: not a jaxcnn compressed file, damaged
    (truncated, altered bytes, an edited header), or written by a newer jaxcnn. ``path``
    is the file, ``problem`` what is wrong with it; the message is one line naming both."""

    def __init__(self, path, problem: str):
        self.path, self.problem = os.fspath(path), problem
        super().__init__(f"load_compressed: {self.path}: {problem}")


# the fields each encoding stores, beside the header's attributes it needs
_FIELDS = {"float": {"values"}, "sparse": {"mask", "values"}, "int8": {"scale", "zero_point", "values"},
           "sparse_int8": {"scale", "zero_point", "mask", "values"}, "binary": {"bits"}}


# what reading a damaged zip member or .npy header raises (zipfile: BadZipFile for a bad
# CRC or header, NotImplementedError / RuntimeError for flag bits that a flipped byte set
# -- "compressed patched data", "encrypted" --; numpy: ValueError for a corrupt header)
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError, TypeError,
           IndexError, UnicodeDecodeError, zlib.error, NotImplementedError, RuntimeError, struct.error,
           OverflowError, SyntaxError)


def _read_member(zf: zipfile.ZipFile, name: str, fail) -> np.ndarray:
    """The array stored as ``name.npy``, its declared shape checked against the bytes the
    member holds before anything is allocated; object (pickled) arrays are refused."""
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        raise fail(f"the array {name!r} its header lists is missing") from None
    if info.compress_type != zipfile.ZIP_STORED:
        # save_compressed stores members uncompressed, so every size is bounded by the file's
        raise fail(f"the array {name!r} is compressed inside the zip, which save_compressed never does")
    try:
        raw = zf.read(info)                              # checks the member's CRC-32
        fp = io.BytesIO(raw)
        version = np.lib.format.read_magic(fp)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise fail(f"the array {name!r} has .npy format version {version}")
        shape, fortran_order, dtype = read_header(fp)
    except CompressedFileError:
        raise
    except _DAMAGE as e:   # a bad CRC-32, a cut or altered local header, a corrupt .npy header
        raise fail(f"the array {name!r} is damaged ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if dtype.hasobject:
        raise fail(f"the array {name!r} holds Python objects (pickled data), which save_compressed never writes")
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw) - fp.tell():
        raise fail(f"the array {name!r} declares shape {shape} ({dtype}, {count * dtype.itemsize} bytes) but "
                   f"holds {len(raw) - fp.tell()} bytes")
    a = np.frombuffer(raw, dtype, count, offset=fp.tell())
    return a.reshape(shape[::-1]).T.copy() if fortran_order else a.reshape(shape).copy()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_leaf(entry, fields: dict, fail) -> None:
    """Every size, dtype and attribute of one leaf consistent with the arrays it stores,
    so that decoding neither allocates more than the file holds nor returns other values."""
    encoding, shape = entry["encoding"], tuple(entry["shape"])
    n = math.prod(shape)
    dtype = entry["dtype"]

    def need(ok, what):
        if not ok:
            raise fail(what)

    def packed(name):
        a = fields[name]
        need(a.dtype == np.uint8 and a.ndim == 1 and a.size == (n + 7) // 8,
             f"{name} must be {(n + 7) // 8} packed bytes for shape {list(shape)}, got {a.dtype} {list(a.shape)}")
        return int(np.unpackbits(a, count=n).sum())

    if encoding == "float":
        v = fields["values"]
        need(v.shape == shape and v.dtype.name == dtype,
             f"holds a {v.dtype.name} array of shape {list(v.shape)}, its header says {dtype} {list(shape)}")
    elif encoding == "sparse":
        kept, v = packed("mask"), fields["values"]
        need(v.dtype.name == dtype and v.shape == (kept,),
             f"its mask keeps {kept} values of {dtype}, the file holds {v.dtype.name} {list(v.shape)}")
    elif encoding == "binary":
        packed("bits")
        need(entry.get("method") in METHODS, f"binary method must be one of {', '.join(METHODS)}, "
                                             f"got {entry.get('method')!r}")
        need(np.dtype(dtype).kind == "f", f"a binary leaf must have a float dtype, got {dtype}")
        if entry["method"] == "xnor":
            need("alpha" in fields, "an xnor leaf needs its alpha array")
            a = fields["alpha"]
            need(a.ndim == 1 and len(shape) >= 1 and a.shape == (shape[-1],) and a.dtype.kind == "f",
                 f"alpha must be ({shape[-1] if shape else '?'},) floats for shape {list(shape)}, got "
                 f"{a.dtype.name} {list(a.shape)}")
    else:                                               # int8, sparse_int8
        bits, axis = entry.get("bits"), entry.get("axis")
        need(_is_int(bits) and 2 <= bits <= 8, f"bits must be an integer in [2, 8], got {bits!r}")
        need(axis is None or (_is_int(axis) and 0 <= axis < len(shape)),
             f"axis must be null or in [0, {len(shape)}), got {axis!r}")
        need(np.dtype(dtype).kind == "f", f"an int8 leaf must have a float dtype, got {dtype}")
        groups = () if axis is None else (shape[axis],)
        scale, zp = fields["scale"], fields["zero_point"]
        need(scale.shape == groups and scale.dtype.kind == "f" and zp.shape == groups and zp.dtype == np.int32,
             f"scale and zero_point must be float / int32 of shape {list(groups)}, got {scale.dtype.name} "
             f"{list(scale.shape)} and {zp.dtype.name} {list(zp.shape)}")
        count = packed("mask") if encoding == "sparse_int8" else n
        v = fields["values"]
        need(v.dtype == np.int8 and v.shape == (count,) if encoding == "sparse_int8" else v.size == n and
             v.dtype == np.int8, f"needs {count} int8 values, the file holds {v.dtype.name} {list(v.shape)}")


def _check_entry(entry, fail) -> None:
    """The header's description of one leaf has the form save_compressed writes."""
    if not isinstance(entry, dict):
        raise fail(f"a leaf entry is {type(entry).__name__}, not an object")
    path, shape = entry.get("path"), entry.get("shape")
    if entry.get("tree") not in ("params", "state"):
        raise fail(f"a leaf's tree must be 'params' or 'state', got {entry.get('tree')!r}")
    if not (isinstance(path, list) and path and all(isinstance(k, str) or _is_int(k) for k in path)):
        raise fail(f"a leaf's path must be a non-empty list of keys, got {path!r}")
    if entry.get("encoding") not in ENCODINGS:
        return                                           # refused by the caller: a newer encoding
    if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise fail(f"leaf {'/'.join(map(str, path))}: shape must be a list of sizes >= 0, got {shape!r}")
    try:
        dtype = np.dtype(entry.get("dtype"))
    except TypeError:
        raise fail(f"leaf {'/'.join(map(str, path))}: unknown dtype {entry.get('dtype')!r}") from None
    if dtype.kind not in "biuf" or dtype.name != entry["dtype"]:
        raise fail(f"leaf {'/'.join(map(str, path))}: dtype must name a numeric dtype, got {entry.get('dtype')!r}")
    fields = entry.get("fields")
    expected = _FIELDS[entry["encoding"]]
    if not (isinstance(fields, list) and all(isinstance(f, str) for f in fields) and expected <= set(fields)
            <= expected | {"alpha"}):
        raise fail(f"leaf {'/'.join(map(str, path))}: a {entry['encoding']} leaf stores "
                   f"{sorted(expected)}, its header lists {fields!r}")


def load_compressed(path: str | os.PathLike) -> tuple[Any, Any, dict]:
    """``(params, state, meta)`` from a file written by :func:`save_compressed` (numpy arrays,
    nested dicts); see :func:`read_compressed` for what is checked."""
    found = read_compressed(path)
    return found.params, found.state, found.meta


class Compressed(NamedTuple):
    """What :func:`read_compressed` found: the params and state the compressed network
    computes with, the header's ``meta``, and ``int8``: ``{"conv1/weight": (int8 array,
    QParams)}`` for every kernel stored as integers (what the int8 inference path
    multiplies)."""
    params: Any
    state: Any
    meta: dict
    int8: dict


def read_compressed(path: str | os.PathLike) -> Compressed:
    """The contents of a file written by :func:`save_compressed` (numpy arrays, nested dicts).

    The file is not trusted: anything else -- not a zip of arrays, a truncated or altered
    file (every array's CRC-32 is checked), an edited header, sizes the data does not hold,
    pickled objects -- raises :class:`CompressedFileError` (a ``ValueError``) naming the
    file and the problem, in one line; so does a file that needs a newer jaxcnn. Declared
    shapes are checked against the bytes present before anything is allocated, and
    pickled data is never loaded."""
    path = os.fspath(path)

    def fail(problem):
        return CompressedFileError(path, problem)

    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise fail("not a regular file")
        blob = f.read()
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except _DAMAGE:
        what = "truncated or damaged" if blob.startswith(b"PK") else "not a zip archive"
        raise fail(f"not a jaxcnn compressed file ({what})") from None
    with zf:
        return _load(zf, path, fail)


def _load(zf: zipfile.ZipFile, path: str, fail):
    if HEADER + ".npy" not in zf.namelist():
        raise fail("not a jaxcnn compressed checkpoint (no header)")
    raw = _read_member(zf, HEADER, fail)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise fail(f"its header is a {raw.dtype} array of shape {list(raw.shape)}, not JSON bytes")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"its header is not valid JSON ({' '.join(str(e).split())})") from None
    if not isinstance(header, dict):
        raise fail(f"its header is a JSON {type(header).__name__}, not an object")
    version = header.get("version", 0)
    if header.get("format") != FORMAT or not _is_int(version) or version > VERSION:
        raise fail(f"has format {header.get('format')!r} version {header.get('version')!r}; this build reads "
                   f"{FORMAT!r} up to version {VERSION}")
    leaves, meta = header.get("leaves"), header.get("meta", {})
    if not isinstance(leaves, list) or not isinstance(meta, dict):
        raise fail("its header lacks the list of leaves or has a meta that is not an object")
    trees: dict[str, dict] = {"params": {}, "state": {}}
    int8 = {}
    seen = set()
    for i, entry in enumerate(leaves):
        _check_entry(entry, fail)
        where = f"leaf {'/'.join(map(str, entry['path']))}"
        if entry["encoding"] not in ENCODINGS:
            raise fail(f"{where} uses encoding {entry['encoding']!r}, which this build of jaxcnn does not support "
                       f"(supported: {', '.join(ENCODINGS)}); upgrade jaxcnn to read it")

        def leaf_fail(problem, where=where):
            return fail(f"{where}: {problem}")
        fields = {k: _read_member(zf, f"{i}.{k}", leaf_fail) for k in entry["fields"]}
        _check_leaf(entry, fields, leaf_fail)
        keys = (entry["tree"], *entry["path"])
        if any(keys[:j] in seen for j in range(1, len(keys) + 1)) or \
                any(s[:len(keys)] == keys for s in seen):
            raise fail(f"{where} appears twice or inside another leaf")
        seen.add(keys)
        _insert(trees[entry["tree"]], entry["path"], _decode(entry, fields, where))
        if entry["encoding"] in ("int8", "sparse_int8") and entry["tree"] == "params":
            int8["/".join(map(str, entry["path"]))] = _int8_values(entry, fields)
    return Compressed(trees["params"], trees["state"], meta, int8)


def float_bytes(params, state=None) -> int:
    """Bytes of the raw arrays of ``params`` and ``state`` (the uncompressed payload)."""
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves((params, state)))
