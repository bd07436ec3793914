"""Convolution as a matrix: the seeds' bidiagonal demonstration exactly, conv == A vec(x),
conv_transpose == A^T, and the explicit input gradient == A^T vec(dy)."""
import numpy as np

from jaxcnn import ops
from jaxcnn.backprop import conv_backward, conv_matrix, conv_transpose_matrix
from tests._backprop_cases import conv_case


def test_seed_bidiagonal_matrix():
    a = conv_matrix(np.array([-1.0, 1.0]).reshape(2, 1, 1), (10, 1))
    expect = np.zeros((9, 10))
    for i in range(9):
        expect[i, i], expect[i, i + 1] = -1, 1
    assert np.array_equal(a, expect)
    x = np.arange(10.0) ** 2
    assert np.array_equal(a @ x, np.diff(x))
    # transposed convolution with the same filter is A^T: 9 values up to 10 (upsampling)
    z = np.arange(1.0, 10.0)
    up = ops.conv_transpose(z.reshape(1, 9, 1), np.array([-1.0, 1.0]).reshape(2, 1, 1))
    assert np.array_equal(np.asarray(up).ravel(), a.T @ z)
    assert np.array_equal(conv_transpose_matrix(np.array([-1.0, 1.0]).reshape(2, 1, 1), (9, 1)), a.T)


def test_random_conv_matrices(x64):
    checked = 0
    for seed in range(300, 340):
        case = conv_case(seed)
        kw = {k: v for k, v in case["kw"].items() if k != "padding_mode"}
        x = case["x"][0]
        if case["kw"]["padding_mode"] != "zeros" or x.size > 400:
            continue
        try:
            y = ops.conv(x, case["w"], **kw)
        except ValueError:
            continue
        a = conv_matrix(case["w"], x.shape, **kw)
        np.testing.assert_allclose(a @ x.ravel(), np.ravel(y), atol=1e-10)
        dy = case["rng"].normal(size=y.shape)
        dx = conv_backward(x, case["w"], dy, **kw)[0]
        np.testing.assert_allclose(np.ravel(dx), a.T @ dy.ravel(), atol=1e-10)
        checked += 1
        if checked == 6:
            break
    assert checked >= 4


def test_random_conv_transpose_matrices(x64):
    checked = 0
    for seed in range(700, 730):
        case = conv_case(seed, transpose=True)
        x = case["x"][0]
        if x.size > 300:
            continue
        try:
            y = ops.conv_transpose(x, case["w"], **case["kw"])
        except ValueError:
            continue
        b = conv_transpose_matrix(case["w"], x.shape, **case["kw"])
        np.testing.assert_allclose(b @ x.ravel(), np.ravel(y), atol=1e-10)
        checked += 1
        if checked == 5:
            break
    assert checked >= 3
