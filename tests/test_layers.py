"""Layers and combinators: shapes, params/state, train flag, errors naming the layer,
torch-default init, and parity with torch (NCHW) and flax.linen (NHWC)."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn.combinators import (fan_in_concat, fan_in_sum, fan_out, graph, parallel, residual, serial,
                                shape_dependent)
from jaxcnn.layers import (AdaptiveAvgPool, AvgPool, BatchNorm, ChannelShuffle, Conv, ConvTranspose, Dense, Dropout,
                           Flatten, GlobalAvgPool, Identity, LayerError, MaxPool, Relu, SpatialDropout, Upsample)
from jaxcnn.models import create

K = jax.random.PRNGKey(0)
RNG = np.random.default_rng(0)


def _randn(*shape):
    return jnp.asarray(RNG.normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("shape,kernel,out", [((2, 10, 3), 3, (2, 8, 5)), ((2, 8, 8, 3), (5, 3), (2, 4, 6, 5)),
                                              ((1, 6, 6, 6, 2), 3, (1, 4, 4, 4, 5))])
def test_conv_ranks_and_bias(shape, kernel, out):
    layer = Conv(5, kernel, use_bias=False)
    got, params, state = layer.init(K, shape)
    assert got == out and set(params) == {"weight"} and state == {}
    assert layer.apply(params, state, jnp.ones(shape))[0].shape == out


def test_conv_options_match_torch_nchw():
    """layout='NCHW' layers take torch's weights and give torch's numbers."""
    tconv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect")
    layer = Conv(6, 3, 2, 2, 2, groups=2, padding_mode="reflect", layout="NCHW")
    x = RNG.normal(size=(2, 4, 11, 9)).astype(np.float32)
    params = {"weight": jnp.asarray(tconv.weight.detach().numpy()), "bias": jnp.asarray(tconv.bias.detach().numpy())}
    shape, p0, _ = layer.init(K, x.shape)
    assert jax.tree.map(jnp.shape, p0) == jax.tree.map(jnp.shape, params)
    y = layer.apply(params, {}, jnp.asarray(x))[0]
    assert shape == y.shape
    np.testing.assert_allclose(y, tconv(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_torch_default_init_bounds():
    _, p, _ = Conv(8, 3).init(K, (1, 5, 5, 16))
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(p["weight"]).max() <= bound and np.abs(p["weight"]).max() > 0.9 * bound
    assert np.abs(p["bias"]).max() <= bound
    _, p, _ = Dense(3).init(K, (1, 100))
    assert p["weight"].shape == (100, 3) and np.abs(p["weight"]).max() <= 0.1


@pytest.mark.parametrize("shape", [(3, 3, 16, 32), (2, 3, 4), ()])
def test_random_initialisers_equal_a_draw_of_the_shape_itself(shape):
    """The initialisers draw through jaxcnn.ops.random (flat, reshaped: a faster
    compile); the values must be jax.random's for that shape, bit for bit, or seeded
    models would change."""
    from jaxcnn.layers import initializers as I
    bound = 1 / 7   # fan_in 49
    np.testing.assert_array_equal(I.torch_default(K, shape, 49, 0), jax.random.uniform(K, shape, jnp.float32,
                                                                                        -bound, bound))
    np.testing.assert_array_equal(I.kaiming_normal_fan_out(K, shape, 0, 8),
                                  jax.random.normal(K, shape, jnp.float32) * np.sqrt(2.0 / 8))


def test_batchnorm_train_flag_and_state():
    bn = BatchNorm(momentum=0.1)
    x = _randn(4, 3, 3, 2) * 3 + 1
    _, params, state = bn.init(K, x.shape)
    assert set(params) == {"weight", "bias"} and set(state) == {"running_mean", "running_var"}
    y_eval, s_eval = bn.apply(params, state, x)
    assert s_eval is state and np.allclose(y_eval, x / np.sqrt(1 + 1e-5), atol=1e-5)
    y, s = bn.apply(params, state, x, train=True)
    tbn = torch.nn.BatchNorm2d(2, momentum=0.1).train()
    ref = tbn(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2))
    np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(s["running_mean"], tbn.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(s["running_var"], tbn.running_var.numpy(), atol=1e-5)


def test_dropout_needs_a_key_only_when_training():
    layer = Dropout(0.5)
    x = jnp.ones((4, 10))
    assert (layer.apply({}, {}, x)[0] == x).all()
    with pytest.raises(ValueError, match="PRNG key"):
        layer.apply({}, {}, x, train=True)
    y = layer.apply({}, {}, x, train=True, key=K)[0]
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}
    y = SpatialDropout(0.5).apply({}, {}, jnp.ones((2, 3, 3, 8)), train=True, key=K)[0]
    assert np.all(np.ptp(np.asarray(y), axis=(1, 2)) == 0)     # whole channels kept or dropped


def test_shape_only_layers():
    for layer, shape, out in [(MaxPool(2), (1, 8, 8, 3), (1, 4, 4, 3)), (AvgPool(3, 1, 1), (1, 8, 8, 3), (1, 8, 8, 3)),
                              (AdaptiveAvgPool(3), (1, 8, 8, 3), (1, 3, 3, 3)), (GlobalAvgPool(), (1, 8, 8, 3), (1, 3)),
                              (Flatten(), (2, 4, 4, 3), (2, 48)), (Upsample(scale_factor=2), (1, 4, 4, 3), (1, 8, 8, 3)),
                              (ChannelShuffle(2), (1, 4, 4, 6), (1, 4, 4, 6)), (Identity(), (1, 5), (1, 5)),
                              (ConvTranspose(4, 2, 2), (1, 4, 4, 3), (1, 8, 8, 4))]:
        got, params, state = layer.init(K, shape)
        assert got == out, layer.name
        assert layer.apply(params, state, jnp.ones(shape))[0].shape == out


def test_serial_names_keys_and_state():
    net = serial(Conv(4, 3), ("bn", BatchNorm()), Relu(), ("drop", Dropout(0.5)), Flatten(), Dense(2))
    shape, params, state = net.init(K, (2, 6, 6, 1))
    assert shape == (2, 2) and set(params) == {"0", "bn", "5"} and set(state) == {"bn"}
    x = _randn(2, 6, 6, 1)
    y1, s1 = net.apply(params, state, x, train=True, key=jax.random.PRNGKey(1))
    y2, _ = net.apply(params, state, x, train=True, key=jax.random.PRNGKey(2))
    assert not np.allclose(y1, y2) and not np.allclose(s1["bn"]["running_mean"], 0)
    y3, s3 = net.apply(params, state, x)
    assert s3["bn"] is state["bn"]


def test_parallel_fan_and_residual():
    net = serial(fan_out(2), parallel(Conv(3, 1), Identity()), fan_in_concat())
    shape, p, s = net.init(K, (1, 4, 4, 3))
    assert shape == (1, 4, 4, 6)
    x = _randn(1, 4, 4, 3)
    y = np.asarray(net.apply(p, s, x)[0])
    w, b = np.asarray(p["1"]["0"]["weight"])[0, 0], np.asarray(p["1"]["0"]["bias"])   # the 1x1 conv: a matmul
    np.testing.assert_allclose(y[..., :3], np.asarray(x) @ w + b, atol=1e-5)         # first branch first
    np.testing.assert_array_equal(y[..., 3:], np.asarray(x))                         # then the identity
    net = serial(fan_out(3), parallel(Identity(), Identity(), Identity()), fan_in_sum())
    shape, p, s = net.init(K, (1, 2))
    assert (net.apply(p, s, jnp.ones((1, 2)))[0] == 3).all()
    res = residual(Conv(3, 3, padding=1))
    shape, p, s = res.init(K, (1, 5, 5, 3))
    x = _randn(1, 5, 5, 3)
    # the main branch computed by torch from the same weights (HWIO -> OIHW), plus the input
    main = torch.nn.functional.conv2d(torch.tensor(np.array(x)).permute(0, 3, 1, 2),
                                      torch.tensor(np.array(p["main"]["weight"])).permute(3, 2, 0, 1),
                                      torch.tensor(np.array(p["main"]["bias"])), padding=1)
    np.testing.assert_allclose(res.apply(p, s, x)[0], main.permute(0, 2, 3, 1).numpy() + np.asarray(x), atol=1e-5)


def test_shape_dependent_and_graph():
    net = shape_dependent(lambda shape: Dense(shape[-1] * 2))
    assert net.init(K, (3, 4))[0] == (3, 8)
    g = graph({"a": Conv(2, 1), "b": Conv(2, 1)}, lambda call, x: call.concat(call("a", x), call("b", x)))
    shape, p, _ = g.init(K, (1, 3, 3, 5))
    assert shape == (1, 3, 3, 4) and not np.allclose(p["a"]["weight"], p["b"]["weight"])


@pytest.mark.slow
def test_wrong_input_shape_names_the_layer():
    model = create("lenet5")
    params, state = model.init(K)
    with pytest.raises(LayerError, match=r"layer 'conv1' \(Conv\).*expected 1 input channels"):
        model.apply(params, state, jnp.ones((1, 28, 28, 3)))
    with pytest.raises(ValueError, match=r"layer 'fc1' \(Dense\).*400"):
        model.apply(params, state, jnp.ones((1, 32, 32, 1)))
    net = create("cifar_resnet18", width=4)
    params, state = net.init(K, (1, 8, 8, 3))
    bad = jax.tree.map(lambda a: a, params)
    bad["layer2"]["0"]["conv2"]["weight"] = jnp.ones((3, 3, 5, 8))
    with pytest.raises(LayerError, match=r"layer 'layer2/0/conv2' \(Conv\)"):
        # shape errors surface while tracing: check without running the network
        jax.eval_shape(lambda p, x: net.apply(p, state, x), bad, jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))


# --- parity with flax.linen on the same parameters (NHWC, HWIO) ---

def test_conv_parity_with_flax():
    x = _randn(2, 9, 9, 4)
    layer = Conv(6, 3, stride=2, padding=1, dilation=1, groups=2)
    _, p, _ = layer.init(K, x.shape)
    ref = fnn.Conv(6, (3, 3), strides=2, padding=((1, 1), (1, 1)), feature_group_count=2)
    y_ref = ref.apply({"params": {"kernel": p["weight"], "bias": p["bias"]}}, x)
    np.testing.assert_allclose(layer.apply(p, {}, x)[0], y_ref, atol=1e-5)


def test_conv_transpose_parity_with_flax():
    x = _randn(2, 5, 5, 3)
    layer = ConvTranspose(4, 3, stride=2)
    _, p, _ = layer.init(K, x.shape)
    # torch semantics = flax with transpose_kernel=True, whose kernel is (k, k, C_out, C_in) and unflipped.
    ref = fnn.ConvTranspose(4, (3, 3), strides=(2, 2), padding="VALID", transpose_kernel=True)
    kernel = jnp.swapaxes(p["weight"], -1, -2)
    y_ref = ref.apply({"params": {"kernel": kernel, "bias": p["bias"]}}, x)
    y = layer.apply(p, {}, x)[0]
    assert y.shape == (2, 11, 11, 4)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)


def test_batchnorm_parity_with_flax():
    x = _randn(8, 4, 4, 3) * 2 + 0.5
    bn = BatchNorm(momentum=0.1)
    _, p, s = bn.init(K, x.shape)
    p = {"weight": _randn(3), "bias": _randn(3)}
    ref = fnn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = {"params": {"scale": p["weight"], "bias": p["bias"]},
                 "batch_stats": {"mean": s["running_mean"], "var": s["running_var"]}}
    y_ref, upd = ref.apply(variables, x, mutable=["batch_stats"])
    y, new = bn.apply(p, s, x, train=True)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    np.testing.assert_allclose(new["running_mean"], upd["batch_stats"]["mean"], atol=1e-6)
    # flax averages the biased variance, torch (and jaxcnn) the unbiased one
    n = 8 * 4 * 4
    biased = (new["running_var"] - 0.9) / 0.1 * (n - 1) / n
    np.testing.assert_allclose(0.9 + 0.1 * biased, upd["batch_stats"]["var"], atol=1e-5)
    evl = fnn.BatchNorm(use_running_average=True, epsilon=1e-5)
    variables["batch_stats"] = {"mean": new["running_mean"], "var": new["running_var"]}
    np.testing.assert_allclose(bn.apply(p, new, x)[0], evl.apply(variables, x), atol=1e-5)


def test_pool_parity_with_flax():
    x = _randn(2, 9, 9, 3)
    np.testing.assert_allclose(MaxPool(3, 2, 1).apply({}, {}, x)[0],
                               fnn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))), atol=1e-6)
    np.testing.assert_allclose(AvgPool(3, 2, 1).apply({}, {}, x)[0],
                               fnn.avg_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)), count_include_pad=True), atol=1e-6)
    np.testing.assert_allclose(AvgPool(3, 2, 1, count_include_pad=False).apply({}, {}, x)[0],
                               fnn.avg_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)), count_include_pad=False), atol=1e-6)
