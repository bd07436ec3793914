"""The compressed checkpoint: bitwise round trips for every encoding, real size savings,
and one-line refusals of files this build cannot read."""
import io
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import compress
from jaxcnn.compress import storage


def _params():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype("float32")  # noqa: E731
    return ({"conv": {"weight": f(3, 3, 8, 16), "bias": f(16)}, "bn": {"weight": f(16), "bias": f(16)},
             "fc": {"weight": f(2000, 32), "bias": f(32)}},
            {"bn": {"running_mean": f(16), "running_var": np.abs(f(16))}})


def _assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(np.uint32), y.view(np.uint32))


def test_float_round_trip_is_bitwise(tmp_path):
    params, state = _params()
    params["conv"]["weight"][0, 0, 0, :3] = [0.0, -0.0, np.nan]  # odd values survive too
    size = compress.save_compressed(tmp_path / "m.npz", params, state, meta={"step": 3})
    p, s, meta = compress.load_compressed(tmp_path / "m.npz")
    _assert_bitwise(p, params)
    _assert_bitwise(s, state)
    assert meta == {"step": 3}
    assert size < compress.float_bytes(params, state) + 8192  # header and zip directory only


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruned_round_trip_is_bitwise_and_smaller(tmp_path, scope):
    params, state = _params()
    pruned = compress.apply_masks(params, compress.prune_masks(params, 0.9, scope=scope))
    pruned = jax.tree.map(np.asarray, pruned)
    size = compress.save_compressed(tmp_path / "p.npz", pruned, state)
    p, s, _ = compress.load_compressed(tmp_path / "p.npz")
    _assert_bitwise(p, pruned)
    dense = compress.save_compressed(tmp_path / "d.npz", pruned, state, sparse=False)
    # 10% of the kernel values + 1 bit per weight instead of 32
    assert size < 0.25 * dense


@pytest.mark.parametrize("scheme", compress.SCHEMES)
def test_int8_round_trip_equals_fake_quantize_bitwise(tmp_path, scheme):
    params, state = _params()
    size = compress.save_compressed(tmp_path / "q.npz", params, state, quantize=scheme)
    p, _, _ = compress.load_compressed(tmp_path / "q.npz")
    _assert_bitwise(p, jax.tree.map(np.asarray, compress.fake_quantize(params, 8, scheme)))
    assert size < 0.35 * compress.float_bytes(params, state)


def test_pruned_and_int8_round_trip(tmp_path):
    params, state = _params()
    pruned = jax.tree.map(np.asarray, compress.apply_masks(params, compress.prune_masks(params, 0.8)))
    size = compress.save_compressed(tmp_path / "pq.npz", pruned, state, quantize="per_channel_affine")
    p, _, _ = compress.load_compressed(tmp_path / "pq.npz")
    expected = jax.tree.map(np.asarray, compress.fake_quantize(pruned, 8, "per_channel_affine"))
    _assert_bitwise(p, expected)
    assert np.all(p["fc"]["weight"][pruned["fc"]["weight"] == 0] == 0)
    header = json.loads(bytes(np.load(tmp_path / "pq.npz")["__header__"]).decode())
    assert {e["encoding"] for e in header["leaves"]} == {"float", "sparse_int8"}
    assert size < compress.save_compressed(tmp_path / "q.npz", params, state, quantize="per_channel_affine")


@pytest.mark.parametrize("method", ["binary_connect", "xnor"])
def test_binary_round_trip_is_bit_packed(tmp_path, method):
    params, state = _params()
    size = compress.save_compressed(tmp_path / "b.npz", params, state, binarize=method)
    p, _, _ = compress.load_compressed(tmp_path / "b.npz")
    _assert_bitwise(p, jax.tree.map(np.asarray, compress.binarize(params, method)))
    kernel_bytes = (3 * 3 * 8 * 16 + 2000 * 32) * 4
    assert size < compress.float_bytes(params, state) - 0.9 * kernel_bytes


def test_files_this_build_cannot_read_are_refused_in_one_line(tmp_path):
    params, state = _params()
    path = tmp_path / "m.npz"
    compress.save_compressed(path, params, state)
    data = dict(np.load(path))
    header = json.loads(bytes(data["__header__"]).decode())
    header["leaves"][0]["encoding"] = "int4_lut"
    data["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "new.npz", **data)
    with pytest.raises(ValueError, match=r"load_compressed: .*new.npz: leaf .* uses encoding 'int4_lut', which this "
                                         r"build of jaxcnn does not support"):
        compress.load_compressed(tmp_path / "new.npz")
    header["version"] = storage.VERSION + 1
    data["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "v2.npz", **data)
    with pytest.raises(ValueError, match="version 2; this build reads 'jaxcnn-compressed' up to version 1"):
        compress.load_compressed(tmp_path / "v2.npz")
    np.savez(tmp_path / "plain.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="not a jaxcnn compressed checkpoint"):
        compress.load_compressed(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="choose quantize or binarize"):
        compress.save_compressed(path, params, quantize="per_channel_symmetric", binarize="xnor")


# ---------------------------------------------------------------- damaged files
# Each kind of damage raises CompressedFileError (a ValueError) in one line naming the
# file -- never BadZipFile/EOFError/KeyError/MemoryError, never numpy's advice to enable
# pickle, never a silently different result.

def _saved(tmp_path, **kw):
    params, state = _params()
    pruned = jax.tree.map(np.asarray, compress.apply_masks(params, compress.prune_masks(params, 0.8)))
    path = tmp_path / "m.npz"
    compress.save_compressed(path, pruned, state, **kw)
    return path, compress.load_compressed(path)


def _refused(path, *fragments):
    with pytest.raises(compress.CompressedFileError) as info:
        compress.load_compressed(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and info.value.path == str(path)
    assert message.startswith(f"load_compressed: {path}: ") and "\n" not in message, message
    problem = info.value.problem
    assert "allow_pickle" not in problem and ("pickle" not in problem.lower() or "never writes" in problem), message
    for f in fragments:
        assert f in message, (f, message)
    return message


def _rewrite(path, out, edit):
    """``path`` with its JSON header replaced by ``edit(header)`` (arrays unchanged)."""
    data = dict(np.load(path))
    header = json.loads(bytes(data["__header__"]).decode())
    header = edit(header) or header
    data["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(out, **data)
    return out


@pytest.mark.parametrize("kw", [{}, {"quantize": "per_channel_affine"}, {"binarize": "xnor"}])
def test_a_truncated_file_is_refused_at_every_offset(tmp_path, kw):
    path, _ = _saved(tmp_path, **kw)
    blob = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for end in [0, 1, 4, 30, 100, len(blob) // 3, len(blob) // 2, len(blob) - 100, len(blob) - 22, len(blob) - 1]:
        cut.write_bytes(blob[:end])
        _refused(cut, "not a jaxcnn compressed file")


@pytest.mark.parametrize("kw", [{}, {"quantize": "per_tensor_symmetric"}, {"binarize": "binary_connect"}])
def test_flipped_bytes_are_refused_or_harmless(tmp_path, kw):
    """A flipped byte is caught (each array's CRC-32, the zip structure, the checks of the
    header) or falls where the zip format ignores it (e.g. the local copy of a CRC): then
    the result is bitwise the original. Never a different result."""
    path, (p0, s0, m0) = _saved(tmp_path, **kw)
    blob = path.read_bytes()
    bad = tmp_path / "flip.npz"
    refused = 0
    for offset in np.linspace(0, len(blob) - 1, 61).astype(int):
        damaged = bytearray(blob)
        damaged[offset] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        try:
            p, s, m = compress.load_compressed(bad)
        except compress.CompressedFileError as e:
            assert str(bad) in str(e) and "\n" not in str(e)
            refused += 1
            continue
        _assert_bitwise(p, p0)
        _assert_bitwise(s, s0)
        assert m == m0
    assert refused >= 50        # nearly every byte is data or structure


@pytest.mark.parametrize("edit, fragment", [
    (lambda h: h["leaves"][0].update(shape=[4, 4]), "header says"),                      # bias (16,) -> (4, 4)
    (lambda h: h["leaves"][0].update(dtype="float16"), "header says float16"),
    (lambda h: h["leaves"][0].update(dtype="object"), "dtype must name a numeric dtype"),
    (lambda h: h["leaves"][0].update(fields=[]), "stores ['values']"),
    (lambda h: h["leaves"][0].update(fields=["values", "nope"]), "stores ['values']"),
    (lambda h: h["leaves"][0].pop("shape") and None, "shape must be a list"),
    (lambda h: h["leaves"][0].update(shape=[-16]), "shape must be a list of sizes >= 0"),
    (lambda h: h["leaves"][0].update(tree="weights"), "tree must be 'params' or 'state'"),
    (lambda h: h["leaves"][0].update(path=[]), "path must be a non-empty list"),
    (lambda h: h["leaves"][1].update(path=h["leaves"][0]["path"], tree=h["leaves"][0]["tree"]), "appears twice"),
    (lambda h: h["leaves"][1].update(path=h["leaves"][0]["path"] + ["x"], tree=h["leaves"][0]["tree"]),
     "inside another leaf"),
    (lambda h: h["leaves"].append(dict(h["leaves"][0])), "'8.values' its header lists is missing"),
    (lambda h: h.pop("leaves") and None, "lacks the list of leaves"),
    (lambda h: h.update(version="1"), "version '1'"),
    (lambda h: h.update(format="other"), "format 'other'"),
    (lambda h: [1, 2], "not an object"),
])
def test_an_edited_header_is_refused(tmp_path, edit, fragment):
    path, _ = _saved(tmp_path)
    _refused(_rewrite(path, tmp_path / "edited.npz", edit), fragment)


def test_an_edited_header_of_a_sparse_leaf_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    header = json.loads(bytes(np.load(path)["__header__"]).decode())
    i = next(i for i, e in enumerate(header["leaves"]) if e["encoding"] == "sparse")

    def shape(s):
        return lambda h: h["leaves"][i].update(shape=s)
    n = int(np.prod(header["leaves"][i]["shape"]))
    _refused(_rewrite(path, tmp_path / "a.npz", shape([n + 8])), "packed bytes")
    _refused(_rewrite(path, tmp_path / "b.npz", lambda h: h["leaves"][i].update(encoding="float")),
             "a float leaf stores ['values']")
    # read as a dense leaf, its kept values are fewer than its shape holds
    _refused(_rewrite(path, tmp_path / "c.npz", lambda h: h["leaves"][i].update(encoding="float", fields=["values"])),
             "header says")
    _refused(_rewrite(path, tmp_path / "d.npz", lambda h: h["leaves"][i].update(encoding="int8", bits=8, axis=None)),
             "stores ['scale', 'values', 'zero_point']")


def test_a_non_utf8_or_non_json_header_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    data = dict(np.load(path))
    for raw, fragment in [(b"\xff\xfe{", "not valid JSON"), (b"{not json", "not valid JSON")]:
        data["__header__"] = np.frombuffer(raw, np.uint8)
        np.savez(tmp_path / "h.npz", **data)
        _refused(tmp_path / "h.npz", fragment)
    data["__header__"] = np.zeros((2, 2), np.float32)
    np.savez(tmp_path / "h.npz", **data)
    _refused(tmp_path / "h.npz", "not JSON bytes")


def test_a_huge_declared_shape_is_refused_without_allocating_it(tmp_path):
    import tracemalloc
    path, _ = _saved(tmp_path)
    header = json.loads(bytes(np.load(path)["__header__"]).decode())
    i = next(i for i, e in enumerate(header["leaves"]) if e["encoding"] == "sparse")
    huge = _rewrite(path, tmp_path / "huge.npz", lambda h: h["leaves"][i].update(shape=[10 ** 6, 10 ** 6]))
    # an array inside the zip whose own .npy header claims 8 TB, with a valid CRC
    data = dict(np.load(path))
    lying = tmp_path / "lying.npz"
    np.savez(lying, **{k: v for k, v in data.items() if k != "0.values"})
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12,)})
    with zipfile.ZipFile(lying, "a") as zf:
        zf.writestr("0.values.npy", npy.getvalue() + b"\0" * 64)
    tracemalloc.start()
    try:
        _refused(huge, "packed bytes")
        _refused(lying, "declares shape (1000000000000,)", "holds 64 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2 ** 20, peak


def test_a_file_that_is_not_a_compressed_checkpoint_is_refused_without_pickle_advice(tmp_path):
    import pickle
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"params": 1}))
    msg = _refused(tmp_path / "p.npz", "not a jaxcnn compressed file", "not a zip archive")
    assert "allow_pickle" not in msg
    np.save(tmp_path / "plain.npy", np.ones(3))
    _refused(tmp_path / "plain.npy", "not a jaxcnn compressed file")
    (tmp_path / "empty.npz").write_bytes(b"")
    _refused(tmp_path / "empty.npz", "not a jaxcnn compressed file")
    (tmp_path / "text.npz").write_text("hello")
    _refused(tmp_path / "text.npz", "not a jaxcnn compressed file")
    with pytest.raises(FileNotFoundError):
        compress.load_compressed(tmp_path / "missing.npz")


def test_a_pickled_object_array_is_refused_and_never_unpickled(tmp_path):
    path, _ = _saved(tmp_path)
    data = dict(np.load(path))

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    data["0.values"] = np.array([Boom()], dtype=object)
    np.savez(tmp_path / "obj.npz", **data)
    msg = _refused(tmp_path / "obj.npz", "holds Python objects (pickled data)")
    assert "allow_pickle" not in msg
    assert not (tmp_path / "pwned").exists()


def test_a_deflated_member_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    data = dict(np.load(path))
    np.savez_compressed(tmp_path / "z.npz", **data)
    _refused(tmp_path / "z.npz", "compressed inside the zip")
