"""kernels.xla.conv: a narrow input's shifted-forward convolution equals jaxcnn.ops.conv
and torch (values and gradients, float64), keeps the op's errors, and falls back to the
op off its fast path; under jit the arg-max max-pool backward stays right downstream of it
(jaxlib 0.10.2 miscompiled the former equality-test backward there)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn import ops
from jaxcnn import dispatch
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import xla as fast
from jaxcnn.kernels.xla import conv as fast_conv, narrow
from jaxcnn.kernels.xla.conv import gemm_input_grad

from _parity import to_first, value_and_grads, value_and_vjp

TOL = 1e-10


@pytest.mark.parametrize("x_shape,w_shape,kw", [
    ((4, 9, 9, 1), (3, 3, 1, 5), dict(padding="same")),
    ((4, 9, 9, 3), (5, 5, 3, 8), dict(padding=2, stride=2)),              # RGB, strided
    ((3, 11, 2), (3, 2, 4), dict(padding=[(1, 0)], dilation=2)),          # 1-D, dilated, asymmetric pad
    ((2, 5, 6, 7, 1), (2, 3, 4, 1, 7), dict(stride=(1, 2, 1))),           # 3-D
    ((9, 9, 1), (3, 3, 1, 5), dict(padding=1)),                           # unbatched
])
def test_narrow_conv_matches_the_op_values_and_gradients(x64, x_shape, w_shape, kw):
    assert narrow(x_shape, w_shape)
    rng = np.random.default_rng(0)
    x, w, b = (jnp.asarray(rng.standard_normal(s)) for s in (x_shape, w_shape, w_shape[-1:]))

    (y, grads), (y_op, grads_op) = (value_and_grads(lambda x, w, b: f(x, w, b, **kw))(x, w, b)
                                    for f in (fast_conv, ops.conv))
    np.testing.assert_allclose(y, y_op, rtol=TOL, atol=TOL)
    for got, want in zip(grads, grads_op):
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("x_shape,w_shape,kw", [
    ((4, 14, 14, 6), (5, 5, 6, 16), {}),                                   # lenet5's conv2
    ((3, 9, 9, 4), (3, 3, 4, 8), dict(padding="same")),
    ((3, 11, 5), (3, 5, 4), dict(padding=[(2, 0)])),                         # 1-D, asymmetric padding
    ((2, 5, 6, 7, 4), (2, 3, 2, 4, 3), dict(padding=1)),                    # 3-D
    ((9, 9, 6), (3, 3, 6, 5), dict(padding=(2, 1))),                        # unbatched
])
def test_gemm_input_grad_conv_matches_the_op(x64, x_shape, w_shape, kw):
    """4-6 input channels, stride 1: XLA's forward, dx as one matmul + col2im."""
    assert gemm_input_grad(x_shape, w_shape, 1, 1) and not narrow(x_shape, w_shape)
    rng = np.random.default_rng(3)
    x, w, b = (jnp.asarray(rng.standard_normal(s)) for s in (x_shape, w_shape, w_shape[-1:]))

    (y, grads), (y_op, grads_op) = (value_and_grads(lambda x, w, b: f(x, w, b, **kw))(x, w, b)
                                    for f in (fast_conv, ops.conv))
    np.testing.assert_allclose(y, y_op, rtol=TOL, atol=TOL)
    for got, want in zip(grads, grads_op):
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


def test_gemm_input_grad_matches_torch(x64):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 14, 14, 6)), rng.standard_normal((5, 5, 6, 16))
    dy = rng.standard_normal((2, 10, 10, 16))
    tx = torch.tensor(to_first(x), requires_grad=True)
    torch.nn.functional.conv2d(tx, torch.tensor(np.transpose(w, (3, 2, 0, 1)))).backward(torch.tensor(to_first(dy)))
    _, (dx,) = value_and_vjp(lambda x: fast_conv(x, jnp.asarray(w)))(x, dy)
    np.testing.assert_allclose(to_first(np.asarray(dx)), tx.grad.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("x_shape,w_shape,stride,dilation,expected", [
    ((2, 8, 8, 6), (5, 5, 6, 16), 1, 1, True),
    ((2, 8, 8, 4), (3, 3, 4, 64), 1, 1, True),
    ((2, 8, 8, 8), (3, 3, 8, 32), 1, 1, False),        # measured no faster
    ((2, 8, 8, 3), (3, 3, 3, 16), 1, 1, False),        # narrow: the shifted forward instead
    ((2, 8, 8, 6), (3, 3, 6, 16), 2, 1, False),
    ((2, 8, 8, 6), (3, 3, 6, 16), 1, 2, False),
    ((2, 8, 8, 6), (3, 3, 6, 16), 0, 1, False),        # bad stride: left to the op's error
])
def test_gemm_input_grad_decides_the_path(x_shape, w_shape, stride, dilation, expected):
    assert gemm_input_grad(x_shape, w_shape, stride, dilation) is expected


def test_narrow_conv_matches_torch(x64):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 12, 10, 1)), rng.standard_normal((5, 5, 1, 6))   # lenet5's conv1
    dy = rng.standard_normal((2, 12, 10, 6))
    tx = torch.tensor(to_first(x), requires_grad=True)
    tw = torch.tensor(np.transpose(w, (3, 2, 0, 1)), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, padding=2)
    ty.backward(torch.tensor(to_first(dy)))
    y, (dx, dw) = value_and_vjp(lambda x, w: fast_conv(x, w, padding=2))(x, w, dy)
    np.testing.assert_allclose(to_first(np.asarray(y)), ty.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(to_first(np.asarray(dx)), tx.grad.numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.transpose(np.asarray(dw), (3, 2, 0, 1)), tw.grad.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("x_shape,w_shape,kw,expected", [
    ((2, 8, 8, 1), (3, 3, 1, 64), {}, True),             # one input channel: any width
    ((2, 8, 8, 3), (3, 3, 3, 32), {}, True),
    ((2, 8, 8, 3), (3, 3, 3, 64), {}, False),            # RGB into 64: measured slower
    ((2, 8, 8, 6), (5, 5, 6, 16), {}, False),
    ((2, 8, 8, 2), (3, 3, 1, 4), dict(groups=2), False),
    ((2, 1, 8, 8), (4, 1, 3, 3), dict(layout="NCHW"), False),
    ((2, 8, 8, 1), (3, 3, 1, 4), dict(padding_mode="reflect"), False),
])
def test_narrow_decides_the_fast_path(x_shape, w_shape, kw, expected):
    assert narrow(x_shape, w_shape, **kw) is expected


def test_narrow_conv_off_its_path_and_bad_input_is_the_op():
    rng = np.random.default_rng(2)
    x, w = jnp.asarray(rng.standard_normal((2, 8, 8, 6)), jnp.float32), jnp.asarray(rng.standard_normal((5, 5, 6, 16)),
                                                                                      jnp.float32)
    np.testing.assert_array_equal(fast_conv(x, w, padding=1), ops.conv(x, w, padding=1))
    for args, kwargs in [((jnp.ones((2, 5, 5, 2)), jnp.ones((3, 3, 1, 4))), {}),          # channel mismatch
                         ((jnp.ones((2, 5, 5, 1)), jnp.ones((3, 3, 1, 4))), dict(stride=0)),
                         ((jnp.ones((2, 2, 2, 1)), jnp.ones((5, 5, 1, 4))), {})]:         # window too big
        with pytest.raises(ValueError) as fast_error:
            fast_conv(*args, **kwargs)
        with pytest.raises(ValueError) as op_error:
            ops.conv(*args, **kwargs)
        assert str(fast_error.value) == str(op_error.value)


def test_auto_mode_routes_conv_through_the_fast_formulation_where_onednn_does_not_apply(x64):
    """float64 (like bfloat16, NCHW, ...) is not oneDNN's, so "auto" takes this one."""
    assert dispatch.DEFAULT_TABLE["conv"] == "onednn"
    with backprop_mode("auto"):
        jaxpr = str(jax.make_jaxpr(lambda x, w: dispatch.conv(x, w, padding=1))(jnp.ones((2, 6, 6, 1)),
                                                                                jnp.ones((3, 3, 1, 4))))
    assert "custom_vjp" in jaxpr and "conv_general_dilated" not in jaxpr and "ffi_call" not in jaxpr


def test_jit_auto_gradients_through_narrow_convs_bn_and_max_pool(x64):
    """Two narrow convs, BatchNorm and the arg-max max-pool under jit equal autodiff (on
    jaxlib 0.10.2 the former equality-test max-pool backward lost 16 of 288 windows here)."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((6, 8, 8, 1)))
    ws = (jnp.asarray(rng.standard_normal((3, 3, 1, 3))), jnp.asarray(rng.standard_normal((3, 3, 3, 3))))
    stats = (jnp.zeros(3), jnp.ones(3))

    def loss(ws, mode):
        with backprop_mode(mode):
            h = x
            for w in ws:
                h, _, _ = dispatch.batch_norm(dispatch.conv(h, w, padding="same"), *stats, train=True)
            return jnp.sum(jnp.sin(dispatch.max_pool(h, 2)))
    got = jax.jit(jax.grad(lambda ws: loss(ws, "auto")))(ws)
    want = jax.jit(jax.grad(lambda ws: loss(ws, "autodiff")))(ws)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=TOL, atol=TOL)
