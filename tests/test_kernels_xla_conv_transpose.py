"""kernels.xla.conv_transpose: a strided transposed convolution as matmul + overlap-add
(block-shift and per-tap placements) equals jaxcnn.ops.conv_transpose and torch
(values and gradients, float64), keeps the op's errors, falls back to the op off its
path, and is what backprop="auto" uses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn import ops
from jaxcnn import dispatch
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import xla as fast
from jaxcnn.kernels.xla import conv_transpose as fast_conv_transpose, overlap_add

from _parity import to_first, value_and_grads, value_and_vjp

TOL = 1e-10


@pytest.mark.parametrize("x_shape,kernel,c_out,kw", [
    ((2, 5, 6, 3), (2, 2), 4, dict(stride=2)),                                       # U-Net's 2x2/2: blocks
    ((2, 5, 6, 3), (4, 4), 4, dict(stride=2, padding=1)),                            # DCGAN's 4x4/2: blocks
    ((2, 5, 6, 3), (3, 3), 4, dict(stride=2, padding=1, output_padding=1)),          # 3x3/2: taps
    ((2, 5, 6, 3), (3, 2), 4, dict(stride=(2, 3), padding=((1, 2), (0, 1)), output_padding=(1, 2),
                                   dilation=(2, 1))),                                 # dilated: taps
    ((3, 7, 2), (5,), 2, dict(stride=3, padding=4, output_padding=2)),               # 1-D
    ((2, 9, 3), (8,), 2, dict(stride=4, padding=[(5, 1)], output_padding=3)),        # 1-D, kernel 2x stride
    ((2, 4, 5, 2), (5, 1), 3, dict(stride=(2, 3), output_padding=(1, 2))),           # kernel < stride
    ((2, 3, 4, 3, 2), (2, 3, 2), 3, dict(stride=(1, 2, 3), padding=(0, 1, 0), output_padding=(0, 1, 2))),  # 3-D
    ((5, 6, 3), (3, 3), 2, dict(stride=2)),                                          # unbatched
])
def test_overlap_add_matches_the_op_values_and_gradients(x64, x_shape, kernel, c_out, kw):
    w_shape = (*kernel, x_shape[-1], c_out)
    assert overlap_add(x_shape, w_shape, kw["stride"])
    rng = np.random.default_rng(0)
    x, w, b = (jnp.asarray(rng.standard_normal(s)) for s in (x_shape, w_shape, (c_out,)))

    (y, grads), (y_op, grads_op) = (value_and_grads(lambda x, w, b: f(x, w, b, **kw))(x, w, b)
                                    for f in (fast_conv_transpose, ops.conv_transpose))
    np.testing.assert_allclose(y, y_op, rtol=TOL, atol=TOL)
    for got, want in zip(grads, grads_op):
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kernel,stride,padding,output_padding", [((2, 2), 2, 0, 0), ((3, 3), 2, 1, 1)])
def test_overlap_add_matches_torch(x64, kernel, stride, padding, output_padding):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 5, 4, 3)), rng.standard_normal((*kernel, 3, 6))
    tw = torch.tensor(np.transpose(w, (2, 3, 0, 1)), requires_grad=True)      # (C_in, C_out, kh, kw)
    tx = torch.tensor(to_first(x), requires_grad=True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, stride=stride, padding=padding, output_padding=output_padding)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    kw = dict(stride=stride, padding=padding, output_padding=output_padding)
    y, (dx, dw) = value_and_vjp(lambda x, w: fast_conv_transpose(x, w, **kw))(x, w, np.moveaxis(dy, 1, -1))
    np.testing.assert_allclose(to_first(np.asarray(y)), ty.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(to_first(np.asarray(dx)), tx.grad.numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.transpose(np.asarray(dw), (2, 3, 0, 1)), tw.grad.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("x_shape,w_shape,kw,expected", [
    ((2, 8, 8, 4), (2, 2, 4, 3), dict(stride=2), True),
    ((2, 8, 4), (16, 4, 1), dict(stride=(8,)), True),
    ((2, 8, 8, 4), (3, 3, 4, 3), dict(stride=1), False),                  # stride 1: an ordinary conv
    ((2, 8, 8, 4), (3, 3, 2, 3), dict(stride=2, groups=2), False),        # grouped: the op
    ((2, 4, 8, 8), (4, 3, 3, 3), dict(stride=2, layout="NCHW"), False),   # channels-first: the op
    ((2, 8, 8, 4), (3, 3, 4, 3), dict(stride=0), False),                  # bad stride: the op's error
])
def test_overlap_add_decides_the_path(x_shape, w_shape, kw, expected):
    assert overlap_add(x_shape, w_shape, **kw) is expected


def test_off_its_path_and_bad_input_is_the_op():
    rng = np.random.default_rng(2)
    x, w = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((2, 6, 6, 4), (3, 3, 4, 5)))
    np.testing.assert_array_equal(fast_conv_transpose(x, w, padding=1), ops.conv_transpose(x, w, padding=1))
    for args, kwargs in [((jnp.ones((2, 5, 5, 2)), jnp.ones((2, 2, 3, 4))), dict(stride=2)),     # channels
                         ((jnp.ones((2, 5, 5, 3)), jnp.ones((2, 2, 3, 4))), dict(stride=2, output_padding=2)),
                         ((jnp.ones((2, 1, 1, 3)), jnp.ones((2, 2, 3, 4))), dict(stride=2, padding=3))]:
        with pytest.raises(ValueError) as fast_error:
            fast_conv_transpose(*args, **kwargs)
        with pytest.raises(ValueError) as op_error:
            ops.conv_transpose(*args, **kwargs)
        assert str(fast_error.value) == str(op_error.value)


def test_auto_mode_routes_strided_conv_transpose_through_overlap_add():
    assert dispatch.DEFAULT_TABLE["conv_transpose"] == "fast"
    with backprop_mode("auto"):
        jaxpr = str(jax.make_jaxpr(lambda x, w: dispatch.conv_transpose(x, w, stride=2))(
            jnp.ones((2, 4, 4, 3)), jnp.ones((2, 2, 3, 5))))
    assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr
