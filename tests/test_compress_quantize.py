"""int8 observers and fake quantisation vs torch (MinMaxObserver, PerChannelMinMaxObserver,
torch.fake_quantize_per_channel_affine / per_tensor_affine) on the same weights; the
straight-through gradient; bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from jaxcnn import compress

QSCHEMES = {"symmetric": torch.per_channel_symmetric, "affine": torch.per_channel_affine}


def _weights(seed=0, shape=(3, 3, 8, 16)):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype("float32") * rng.uniform(0.01, 2, shape[-1]).astype("float32")
    w[..., 0] = np.abs(w[..., 0])    # a channel with no negative values (min clipped to 0)
    w[..., 1] = -np.abs(w[..., 1])   # and one with no positive values
    return w


def _torch_layout(w):
    return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)) if w.ndim == 4 else w.T.copy())


@pytest.mark.parametrize("kind", ["symmetric", "affine"])
@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (40, 12)])
def test_per_channel_qparams_and_values_match_torch(kind, shape):
    w = _weights(1, shape)
    t = _torch_layout(w)
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=QSCHEMES[kind])
    obs(t)
    t_scale, t_zp = obs.calculate_qparams()
    q = compress.observe(jnp.asarray(w), 8, f"per_channel_{kind}")
    np.testing.assert_array_equal(np.asarray(q.scale), t_scale.numpy().astype("float32"))
    np.testing.assert_array_equal(np.asarray(q.zero_point), t_zp.numpy())
    t_fq = torch.fake_quantize_per_channel_affine(t, t_scale.float(), t_zp.int(), 0, -128, 127).numpy()
    ours = np.asarray(compress.fake_quant(jnp.asarray(w), q))
    ours_t = ours.transpose(3, 2, 0, 1) if w.ndim == 4 else ours.T
    np.testing.assert_array_equal(ours_t, t_fq)
    ints = np.asarray(compress.quantize(jnp.asarray(w), q))
    assert ints.dtype == np.int8 and ints.min() >= -128 and ints.max() <= 127


@pytest.mark.parametrize("qscheme", [torch.per_tensor_affine, torch.per_tensor_symmetric])
def test_per_tensor_observer_over_batches_matches_torch(qscheme):
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((4, 6, 6, 3)).astype("float32") * s + o for s, o in ((1, 0.5), (3, 2), (0.5, -1))]
    obs = MinMaxObserver(dtype=torch.qint8, qscheme=qscheme)
    running = None
    for b in batches:
        obs(torch.from_numpy(b))
        running = compress.minmax(jnp.asarray(b), previous=running)
    t_scale, t_zp = obs.calculate_qparams()
    q = compress.qparams(*running, bits=8, symmetric=qscheme == torch.per_tensor_symmetric)
    np.testing.assert_array_equal(np.asarray(q.scale).reshape(1), t_scale.numpy().astype("float32"))
    np.testing.assert_array_equal(np.asarray(q.zero_point).reshape(1), t_zp.numpy())
    x = batches[1]
    t_fq = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(t_scale), int(t_zp), -128, 127)
    np.testing.assert_array_equal(np.asarray(compress.fake_quant(jnp.asarray(x), q)), t_fq.numpy())


def test_fake_quantize_params_touches_only_kernels_and_matches_torch_per_tensor_affine():
    w = _weights(3)
    params = {"conv": {"weight": jnp.asarray(w), "bias": jnp.linspace(-1, 1, 16)}, "bn": {"weight": jnp.ones(16)}}
    out = compress.fake_quantize(params, 8, "per_tensor_affine")
    np.testing.assert_array_equal(out["conv"]["bias"], params["conv"]["bias"])
    np.testing.assert_array_equal(out["bn"]["weight"], params["bn"]["weight"])
    obs = MinMaxObserver(dtype=torch.qint8)
    t = _torch_layout(w)
    obs(t)
    s, z = obs.calculate_qparams()
    expected = torch.fake_quantize_per_tensor_affine(t, float(s), int(z), -128, 127).numpy()
    np.testing.assert_array_equal(np.asarray(out["conv"]["weight"]).transpose(3, 2, 0, 1), expected)
    # at most 256 distinct values, error at most half a step
    assert len(np.unique(np.asarray(out["conv"]["weight"]))) <= 256
    assert np.abs(np.asarray(out["conv"]["weight"]) - w).max() <= float(s) / 2 + 1e-7


def test_fewer_bits_give_fewer_levels_per_channel():
    w = jnp.asarray(_weights(4))
    out = np.asarray(compress.fake_quantize({"c": {"weight": w}}, bits=4)["c"]["weight"])
    for c in range(16):
        assert len(np.unique(out[..., c])) <= 16


def test_straight_through_gradient_is_one_inside_the_range_and_zero_where_clamped():
    x = jnp.linspace(-3.0, 3.0, 61)
    q = compress.qparams(-1.0, 2.0, bits=8, symmetric=False)
    g = jax.grad(lambda v: compress.fake_quant_ste(v, q).sum())(x)
    t = torch.tensor(np.asarray(x), requires_grad=True)
    t_fq = torch.fake_quantize_per_tensor_affine(t, float(q.scale), int(q.zero_point), -128, 127)
    t_fq.sum().backward()
    np.testing.assert_array_equal(np.asarray(g), t.grad.numpy())
    assert 0 < np.asarray(g).sum() < x.size
    # the straight-through version's forward is torch's fake quantisation too
    np.testing.assert_array_equal(compress.fake_quant_ste(x, q), t_fq.detach().numpy())
    # QAT through fake_quantize(ste=True): gradient reaches the float weights
    w = _weights(5, (6, 4))
    c = np.random.default_rng(0).standard_normal(w.shape).astype("float32")
    grads = jax.grad(lambda p: (compress.fake_quantize(p, ste=True)["fc"]["weight"] * c).sum())(
        {"fc": {"weight": jnp.asarray(w)}})
    # symmetric: +max|w| maps to 127.5 -> 128 and is clamped (as in torch), the rest passes straight
    interior = np.abs(w) < np.abs(w).max(0)
    np.testing.assert_array_equal(np.asarray(grads["fc"]["weight"])[interior], c[interior])


def test_bad_input_is_one_line_error():
    with pytest.raises(ValueError, match="fake_quantize: scheme must be one of .*'int8'"):
        compress.fake_quantize({"c": {"weight": jnp.ones((2, 2))}}, scheme="int8")
    with pytest.raises(ValueError, match="bits must be an integer in \\[2, 8\\], got 16"):
        compress.fake_quantize({"c": {"weight": jnp.ones((2, 2))}}, bits=16)
    with pytest.raises(ValueError, match="fake_quantize: params have no conv or dense weight"):
        compress.fake_quantize({"pool": {}, "bn": {"weight": jnp.ones(3), "bias": jnp.zeros(3)}})
