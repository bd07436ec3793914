"""The real int8 path (int8 x int8 -> int32 convolutions and matmuls, then rescale)
against its float fake-quant simulation, and quantisation-aware training."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.ao.quantization.observer import PerChannelMinMaxObserver

from jaxcnn import compress
from jaxcnn.combinators import serial
from jaxcnn.layers import BatchNorm, Conv, Dense, Flatten, MaxPool, Relu
from jaxcnn.ops import cross_entropy
from jaxcnn.ops.random import normal


def _net():
    return serial(("conv1", Conv(8, 3, padding="same")), ("act1", Relu()), ("bn1", BatchNorm()),
                  ("pool", MaxPool(2)), ("conv2", Conv(6, 3, stride=2, padding=1)), ("act2", Relu()),
                  ("flat", Flatten()), ("fc", Dense(5)))


def _setup():
    net = _net()
    _, params, state = net.init(jax.random.PRNGKey(0), (1, 10, 10, 3))
    calib = [np.asarray(normal(jax.random.PRNGKey(i), (8, 10, 10, 3))) for i in range(3)]
    return net, params, state, calib


@pytest.mark.slow
def test_calibration_matches_per_tensor_symmetric_minmax_over_batches():
    net, params, state, calib = _setup()
    q = compress.calibrate(net, params, state, calib)
    assert sorted(q["weights"]) == ["conv1/weight", "conv2/weight", "fc/weight"]
    # conv1 sees the raw images: scale = max |x| over all calibration batches / 127.5
    expected = max(np.abs(b).max() for b in calib) / np.float32(127.5)
    assert float(q["inputs"]["conv1/weight"]) == np.float32(expected)
    w_int, w_scale = q["weights"]["conv2/weight"]
    assert w_int.dtype == jnp.int8 and w_scale.shape == (6,)


def test_int8_path_really_multiplies_int8_and_matches_fake_quant():
    net, params, state, calib = _setup()
    q = compress.calibrate(net, params, state, calib)
    run = jax.jit(lambda q_, p, s, x: compress.int8_apply(net, q_, p, s, x))
    unfused = jax.jit(lambda q_, p, s, x: compress.int8_apply(net, q_, p, s, x, fused=False))
    hlo = unfused.lower(q, params, state, calib[0]).as_text()
    # two int8 convolutions (oneDNN's custom call on CPU, else lax's), int32 results
    convs = hlo.count("stablehlo.convolution") + hlo.count("@jaxcnn_onednn_conv_forward_s8")
    assert convs == 2 and "xi8>" in hlo
    assert all(f"-> tensor<{s}xi32>" in hlo for s in ("8x10x10x8", "8x3x3x6", "8x5"))
    # fused (the default): the epilogues run inside oneDNN's int8 calls on CPU, int8 between layers
    fused_hlo = run.lower(q, params, state, calib[0]).as_text()
    if "@jaxcnn_onednn_conv_s8_fused" in fused_hlo:
        assert fused_hlo.count("@jaxcnn_onednn_conv_s8_fused") == 2 and "xi32>" not in fused_hlo
        assert all(f"-> tensor<{s}xi8>" in fused_hlo for s in ("8x10x10x8", "8x3x3x6"))
    x = calib[1]
    ours = np.asarray(run(q, params, state, x))
    fake = np.asarray(jax.jit(lambda *a: compress.fake_int8_apply(net, *a))(q, params, state, x))
    floats = np.asarray(net.apply(params, state, x)[0])
    scale = np.abs(fake).max()
    assert np.abs(ours - np.asarray(unfused(q, params, state, x))).max() <= 1e-3 * scale
    # same integers -> only float summation order differs (a rare input flips one level)
    assert np.abs(ours - fake).max() <= 1e-3 * scale
    # and quantisation itself changes the float result visibly but slightly
    assert 1e-6 * scale < np.abs(fake - floats).max() < 5e-2 * scale
    np.testing.assert_array_equal(ours.argmax(-1), fake.argmax(-1))


def test_single_layer_int8_equals_fake_quant_to_float_rounding():
    net = serial(("fc", Dense(7)))
    _, params, state = net.init(jax.random.PRNGKey(2), (1, 33))
    x = np.asarray(normal(jax.random.PRNGKey(3), (4, 33)))
    q = compress.calibrate(net, params, state, [x])
    a = np.asarray(jax.jit(lambda *a: compress.int8_apply(net, *a))(q, params, state, x))
    b = np.asarray(jax.jit(lambda *a: compress.fake_int8_apply(net, *a))(q, params, state, x))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_quantisation_aware_training_lowers_the_loss_of_the_quantised_network():
    net = serial(("conv", Conv(4, 3)), ("act", Relu()), ("flat", Flatten()), ("fc", Dense(3)))
    model = compress.qat_model(net, bits=4)
    params, state = model.init(jax.random.PRNGKey(0), (12, 5, 5, 1))
    x = normal(jax.random.PRNGKey(1), (12, 5, 5, 1))
    y = np.arange(12) % 3
    # the forward pass is the float network on torch's 4-bit per-channel symmetric fake
    # quantisation of the kernels (observer and fake_quantize_per_channel_affine), run in torch
    def torch_fake_quant(w):                     # (..., C_out) kernel -> torch layout, output channels first
        t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(w), -1, 0)))
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       quant_min=-8, quant_max=7)
        obs(t)
        scale, zero = obs.calculate_qparams()
        return torch.fake_quantize_per_channel_affine(t, scale.float(), zero.int(), 0, -8, 7)
    conv_w = torch_fake_quant(params["conv"]["weight"])                   # (4, 3, 3, 1): O, kh, kw, I
    assert all(len(np.unique(conv_w[c].numpy())) <= 16 for c in range(4))
    h = torch.relu(torch.nn.functional.conv2d(torch.tensor(np.array(x)).permute(0, 3, 1, 2),
                                              conv_w.permute(0, 3, 1, 2), torch.tensor(np.array(params["conv"]["bias"]))))
    ref = torch.nn.functional.linear(h.permute(0, 2, 3, 1).flatten(1), torch_fake_quant(params["fc"]["weight"]),
                                     torch.tensor(np.array(params["fc"]["bias"])))
    np.testing.assert_allclose(model.apply(params, state, x)[0], ref.numpy(), rtol=1e-5, atol=1e-5)
    loss = lambda p: cross_entropy(model.apply(p, state, x)[0], y)  # noqa: E731
    tx = optax.adam(0.03)

    @jax.jit
    def step(p, opt):
        u, opt = tx.update(jax.grad(loss)(p), opt, p)
        return optax.apply_updates(p, u), opt
    opt, first = tx.init(params), float(loss(params))
    for _ in range(30):
        params, opt = step(params, opt)
    assert float(loss(params)) < 0.8 * first


def test_a_compressed_file_rebuilds_the_calibrated_int8_path_exactly(tmp_path):
    """The integers and scales `jaxcnn compress` stores, plus the input scales it records,
    are calibrate's own (so `jaxcnn eval` runs the very int8 path the pipeline measured);
    an affine scheme or a file without the scales cannot run it."""
    net, params, state, calib = _setup()
    q = compress.calibrate(net, params, state, calib)
    meta = {compress.INPUT_SCALES: compress.input_scales_meta(q)}
    path = tmp_path / "c.npz"
    compress.save_compressed(path, params, state, quantize="per_channel_symmetric", meta=meta)
    found = compress.read_compressed(path)
    rebuilt = compress.stored_qparams(net, found.params, found.state, calib[0][:1], found.int8, found.meta)
    assert sorted(rebuilt["weights"]) == sorted(q["weights"])
    for name, (ints, scale) in q["weights"].items():
        np.testing.assert_array_equal(np.asarray(rebuilt["weights"][name][0]), np.asarray(ints))
        np.testing.assert_array_equal(np.asarray(rebuilt["weights"][name][1]), np.asarray(scale))
        assert rebuilt["inputs"][name] == q["inputs"][name]
    x = calib[1]
    run = jax.jit(lambda q_, p, s, v: compress.int8_apply(net, q_, p, s, v))
    np.testing.assert_array_equal(np.asarray(run(rebuilt, found.params, found.state, x)),
                                  np.asarray(run(q, params, state, x)))
    compress.save_compressed(path, params, state, quantize="per_channel_affine", meta=meta)
    affine = compress.read_compressed(path)
    assert compress.stored_qparams(net, affine.params, affine.state, x[:1], affine.int8, affine.meta) is None
    assert compress.stored_qparams(net, found.params, found.state, x[:1], found.int8, {}) is None
