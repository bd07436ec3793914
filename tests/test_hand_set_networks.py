"""The seeds' hand-set networks built from layers with fixed weights (003, 000)."""
import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxcnn.combinators import serial
from jaxcnn.layers import Conv, Dense, Relu, Sigmoid, initializers as I

KEY = jax.random.PRNGKey(0)


def _run(net, x):
    _, params, state = net.init(KEY, x.shape)
    return net.apply(params, state, x)[0]


def _images_8x8(rng, n):
    return rng.integers(0, 255, size=(n, 8, 8, 1)).astype(np.float32)   # values 0..254


def test_ex_12_2_8_bright_pixel_detector():
    net = serial(("threshold", Conv(1, 1, kernel_init=I.constant(1.0), bias_init=I.constant(-254.0))),
                 ("relu", Relu()),
                 ("any", Conv(1, 8, kernel_init=I.constant(10.0), bias_init=I.constant(-5.0))),
                 ("sigmoid", Sigmoid()))
    rng = np.random.default_rng(0)
    x = _images_8x8(rng, 4)
    x[1, 3, 5, 0] = 255
    x[2, 0, 0, 0] = 255
    x[2, 7, 7, 0] = 255
    y = np.asarray(_run(net, jnp.asarray(x))).reshape(-1)
    assert y[1] >= 0.99 and y[2] >= 0.99
    np.testing.assert_allclose(y[[0, 3]], 1 / (1 + np.exp(5.0)), rtol=1e-6)


def test_ex_12_2_9_plus_detector():
    plus = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32).reshape(3, 3, 1, 1)
    net = serial(("plus", Conv(1, 3, kernel_init=I.array(plus), bias_init=I.constant(-1274.0))), ("relu", Relu()),
                 ("any", Conv(1, 6, kernel_init=I.constant(10.0), bias_init=I.constant(-5.0))), ("sigmoid", Sigmoid()))
    rng = np.random.default_rng(1)
    x = _images_8x8(rng, 3)
    r, c = 4, 2   # a plus of 255s centred at (4, 2) in image 0
    for dr, dc in [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]:
        x[0, r + dr, c + dc, 0] = 255
    x[1, 2, 2, 0] = x[1, 1, 2, 0] = x[1, 3, 2, 0] = x[1, 2, 1, 0] = 255   # a plus missing one arm
    y = np.asarray(_run(net, jnp.asarray(x))).reshape(-1)
    assert y[0] >= 0.99
    np.testing.assert_allclose(y[1:], 1 / (1 + np.exp(5.0)), rtol=1e-6)


def test_multi_angle_edge_detector():
    """000: four 2x2 directional edge filters, ReLU, a 1x1 conv summing them."""
    filters = np.array([[[-1, 1], [-1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[-1, -1], [1, 1]]], np.float32)
    w = filters.transpose(1, 2, 0)[:, :, None, :]            # (2, 2, 1, 4) HWIO
    net = serial(("edges", Conv(4, 2, use_bias=False, kernel_init=I.array(w))), ("relu", Relu()),
                 ("combine", Conv(1, 1, use_bias=False, kernel_init=I.constant(1.0))))
    yy, xx = np.mgrid[:32, :32]
    disk = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 10 ** 2).astype(np.float32) * 100
    d = np.asarray(_run(net, jnp.asarray(disk[None, :, :, None])))[0, :, :, 0]
    # torch reference, exactly the seed's code
    b = torch.nn.functional.conv2d(torch.tensor(disk)[None, None], torch.tensor(filters)[:, None])
    ref = torch.nn.functional.conv2d(torch.relu(b), torch.ones(1, 4, 1, 1))[0, 0].numpy()
    np.testing.assert_allclose(d, ref, atol=1e-4)
    # edges at every angle respond; flat regions (inside and outside) do not
    # the output at (i, j) looks at pixels (i..i+1, j..j+1): centre (i+1, j+1) in pixel-corner units
    radius = np.hypot(yy[:31, :31] + 1 - 16, xx[:31, :31] + 1 - 16)
    on = d > 0
    assert np.all(np.abs(radius[on] - 10) < 1.5)                 # fires only on the circle's edge
    angles = np.degrees(np.arctan2(yy[:31, :31] + 1 - 16, xx[:31, :31] + 1 - 16))[on]
    for a in range(-180, 180, 15):                                # ... and at every angle
        assert np.any(np.abs((angles - a + 180) % 360 - 180) < 10), a
    # without the ReLU, opposite filters cancel: the network is one linear map, here zero
    linear = serial(("edges", Conv(4, 2, use_bias=False, kernel_init=I.array(w))),
                    ("combine", Conv(1, 1, use_bias=False, kernel_init=I.constant(1.0))))
    assert np.abs(np.asarray(_run(linear, jnp.asarray(disk[None, :, :, None])))).max() == 0


def _seed_mats():
    torch.manual_seed(0)
    a1, a2, a3 = torch.randn((10, 5)), torch.randn((10, 10)), torch.randn((1, 10))
    x = torch.randn(5)
    return a1.numpy(), a2.numpy(), a3.numpy(), x.numpy()


def _dense(a):
    return Dense(a.shape[0], use_bias=False, kernel_init=I.array(a.T))


def test_without_activations_network_collapses_to_one_linear_map():
    a1, a2, a3, x = _seed_mats()
    np.testing.assert_allclose(x, [1.4875, -0.2230, -1.0057, -0.4139, 1.1600], atol=1e-4)
    net = serial(_dense(a1), _dense(a2), _dense(a3))
    y = float(_run(net, jnp.asarray(x[None]))[0, 0])
    y2 = float((a3 @ a2 @ a1 @ x)[0])
    assert abs(y - 4.1752) < 1e-3 and abs(y - y2) < 1e-4


def test_with_relu_it_does_not_collapse():
    a1, a2, a3, x = _seed_mats()
    net = serial(_dense(a1), Relu(), _dense(a2), Relu(), _dense(a3))
    y = float(_run(net, jnp.asarray(x[None]))[0, 0])
    assert abs(y - 18.9449) < 1e-3 and abs(y - 4.1752) > 1
