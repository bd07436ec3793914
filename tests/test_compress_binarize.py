"""BinaryConnect and XNOR-Net weights: values, the optimality of XNOR's alpha, the
straight-through gradient, and a binary-weight model that trains."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxcnn import compress
from jaxcnn.combinators import serial
from jaxcnn.layers import Conv, Dense, Flatten, Relu
from jaxcnn.ops import cross_entropy
from jaxcnn.ops.random import normal


def _w(seed=0, shape=(3, 3, 4, 6)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_binary_connect_is_plus_minus_one_with_zero_to_plus_one():
    w = _w()
    w[0, 0, 0, 0] = 0.0
    out = np.asarray(compress.binarize({"c": {"weight": jnp.asarray(w), "bias": jnp.ones(6)}},
                                       "binary_connect")["c"]["weight"])
    assert set(np.unique(out)) == {-1.0, 1.0}
    np.testing.assert_array_equal(out, np.where(w >= 0, 1.0, -1.0))


def test_xnor_alpha_is_the_least_squares_scale_per_output_channel():
    w = _w(1)
    out = np.asarray(compress.binarize({"c": {"weight": jnp.asarray(w)}}, "xnor")["c"]["weight"])
    alpha = np.asarray(compress.xnor_alpha(jnp.asarray(w)))
    for c in range(w.shape[-1]):
        wc, bc = w[..., c].ravel(), np.where(w[..., c].ravel() >= 0, 1.0, -1.0)
        # the least-squares alpha for a fixed sign pattern, computed independently
        (best,), *_ = np.linalg.lstsq(bc[:, None], wc, rcond=None)
        assert alpha[c] == pytest.approx(best, rel=1e-5) == pytest.approx(np.abs(wc).mean(), rel=1e-5)
        err = lambda a: np.linalg.norm(wc - a * bc)  # noqa: E731
        assert err(alpha[c]) <= min(err(alpha[c] * f) for f in (0.9, 0.99, 1.01, 1.1))
        np.testing.assert_allclose(out[..., c].ravel(), alpha[c] * bc, rtol=1e-6)
        # no other binary pattern does better with its own best alpha (a random search)
        for _ in range(20):
            other = np.random.default_rng(c).choice([-1.0, 1.0], wc.size)
            assert err(alpha[c]) <= np.linalg.norm(wc - (wc @ other / wc.size) * other) + 1e-6


def test_straight_through_sign_gradient():
    x = jnp.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    g = jax.grad(lambda v: (compress.sign_ste(v) * jnp.arange(1.0, 8.0)).sum())(x)
    np.testing.assert_array_equal(np.asarray(g), [0, 2, 3, 4, 5, 6, 0])
    np.testing.assert_array_equal(compress.sign_ste(x), [-1, -1, -1, 1, 1, 1, 1])


@pytest.mark.parametrize("method", compress.binarize.__globals__["METHODS"])
def test_binary_weight_model_trains_and_forwards_binary_weights(method):
    net = serial(("conv", Conv(4, 3)), ("act", Relu()), ("flat", Flatten()), ("fc", Dense(3)))
    model = compress.binary_model(net, method)
    params, state = model.init(jax.random.PRNGKey(0), (12, 5, 5, 1))
    x = normal(jax.random.PRNGKey(1), (12, 5, 5, 1))
    y = np.arange(12) % 3
    # the forward pass is the float network on weights binarised from the definition
    # (sign with 0 -> +1; XNOR scales each output channel by its mean |w|), run in torch
    def binary(w):
        w = np.asarray(w, np.float64)
        b = np.where(w >= 0, 1.0, -1.0)
        return b if method == "binary_connect" else b * np.abs(w).reshape(-1, w.shape[-1]).mean(0)
    conv_w, fc_w = binary(params["conv"]["weight"]), binary(params["fc"]["weight"])
    assert len(np.unique(np.abs(conv_w))) == (1 if method == "binary_connect" else 4)
    t = lambda a: torch.tensor(np.array(a, np.float64))  # noqa: E731
    h = torch.relu(torch.nn.functional.conv2d(t(x).permute(0, 3, 1, 2), t(conv_w).permute(3, 2, 0, 1),
                                              t(params["conv"]["bias"])))
    ref = torch.nn.functional.linear(h.permute(0, 2, 3, 1).flatten(1), t(fc_w).T, t(params["fc"]["bias"]))
    np.testing.assert_allclose(model.apply(params, state, x)[0], ref.numpy(), rtol=1e-5, atol=1e-5)
    loss = lambda p: cross_entropy(model.apply(p, state, x)[0], y)  # noqa: E731
    tx = optax.adam(0.05)

    @jax.jit
    def step(p, opt):
        u, opt = tx.update(jax.grad(loss)(p), opt, p)
        return optax.apply_updates(p, u), opt
    opt, first = tx.init(params), float(loss(params))
    for _ in range(30):
        params, opt = step(params, opt)
    assert float(loss(params)) < first


def test_bad_method_and_weightless_params():
    with pytest.raises(ValueError, match="binarize: method must be one of binary_connect, xnor, got 'ternary'"):
        compress.binarize({"c": {"weight": jnp.ones((2, 2))}}, "ternary")
    with pytest.raises(ValueError, match="binarize: params have no conv or dense weight"):
        compress.binarize({"bn": {"weight": jnp.ones(2)}})
