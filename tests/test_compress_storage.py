"""The compressed checkpoint: bitwise round trips for every encoding, real size savings,
and one-line refusals of files this build cannot read."""
import json

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
    with pytest.raises(ValueError, match=r"load_compressed: .*new.npz leaf .* uses encoding 'int4_lut', which this "
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
