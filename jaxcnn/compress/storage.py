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
is refused with a one-line ValueError naming the file and the encoding.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any

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
    encoding, shape = entry["encoding"], tuple(entry["shape"])
    n = int(np.prod(shape, dtype=np.int64))
    if encoding not in ENCODINGS:
        raise ValueError(f"load_compressed: {where} uses encoding {encoding!r}, which this build of jaxcnn does "
                         f"not support (supported: {', '.join(ENCODINGS)}); upgrade jaxcnn to read it")
    if encoding == "float":
        return fields["values"].reshape(shape)
    if encoding == "binary":
        signs = np.unpackbits(fields["bits"], count=n).reshape(shape)
        s = np.asarray(sign(jnp.asarray(np.where(signs, 1.0, -1.0).astype(entry["dtype"]))))
        if entry["method"] == "xnor":
            return np.asarray(jnp.asarray(fields["alpha"]) * jnp.asarray(s))
        return s
    keep = np.unpackbits(fields["mask"], count=n).astype(bool) if encoding.startswith("sparse") else None
    if encoding == "sparse":
        out = np.zeros(n, entry["dtype"])
        out[keep] = fields["values"]
        return out.reshape(shape)
    zp = fields["zero_point"]
    q = QParams(jnp.asarray(fields["scale"]), jnp.asarray(zp), entry["bits"], entry["axis"])
    if keep is None:
        ints = fields["values"]
    else:  # pruned weights hold the zero point, which dequantises to exactly 0.0
        zp_shape = [1] * len(shape)
        if entry["axis"] is not None:
            zp_shape[entry["axis"]] = -1
        ints = np.broadcast_to(zp.reshape(zp_shape), shape).astype(np.int8).reshape(-1)
        ints[keep] = fields["values"]
    return np.asarray(dequantize(jnp.asarray(ints.reshape(shape)), q, entry["dtype"]))


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


def load_compressed(path: str | os.PathLike) -> tuple[Any, Any, dict]:
    """``(params, state, meta)`` from a file written by :func:`save_compressed` (numpy arrays,
    nested dicts). Raises ValueError for a file that is not one or that needs a newer jaxcnn."""
    with open(path, "rb") as f:
        data = np.load(io.BytesIO(f.read()), allow_pickle=False)
    if HEADER not in data.files:
        raise ValueError(f"load_compressed: {os.fspath(path)} is not a jaxcnn compressed checkpoint (no header)")
    header = json.loads(bytes(data[HEADER]).decode())
    if header.get("format") != FORMAT or header.get("version", 0) > VERSION:
        raise ValueError(f"load_compressed: {os.fspath(path)} has format {header.get('format')!r} version "
                         f"{header.get('version')!r}; this build reads {FORMAT!r} up to version {VERSION}")
    trees: dict[str, dict] = {"params": {}, "state": {}}
    for i, entry in enumerate(header["leaves"]):
        fields = {k: data[f"{i}.{k}"] for k in entry["fields"]}
        where = f"{os.fspath(path)} leaf {'/'.join(map(str, entry['path']))}"
        _insert(trees[entry["tree"]], entry["path"], _decode(entry, fields, where))
    return trees["params"], trees["state"], header["meta"]


def float_bytes(params, state=None) -> int:
    """Bytes of the raw arrays of ``params`` and ``state`` (the uncompressed payload)."""
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves((params, state)))
