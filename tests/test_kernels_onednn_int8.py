"""kernels.onednn.int8: oneDNN's int8 x int8 -> int32 convolution and matrix product
give exactly lax's integers (the sums are exact in int32, so any difference is a bug,
not rounding), and the int8 inference path of compress takes them on CPU with results
identical to the lax integer path it replaces."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import compress
from jaxcnn.combinators import serial
from jaxcnn.compress import int8 as int8_path
from jaxcnn.kernels import onednn
from jaxcnn.kernels.onednn import int8 as onednn_int8
from jaxcnn.layers import BatchNorm, Conv, Dense, Flatten, MaxPool, Relu

CASES = [  # (x shape NHWC, w shape HWIO, stride, pads, dilation, groups)
    ((4, 10, 9, 6), (3, 3, 6, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((3, 11, 9, 6), (3, 2, 3, 8), (2, 1), ((1, 2), (0, 1)), (1, 2), 2),
    ((2, 8, 8, 12), (3, 3, 1, 12), (2, 2), ((1, 1), (1, 1)), (1, 1), 12),     # depthwise
    ((3, 13, 4), (4, 4, 5), (3,), ((1, 2),), (1,), 1),                          # 1-D
    ((2, 5, 6, 4, 3), (2, 3, 2, 3, 4), (1, 2, 1), ((1, 1), (0, 0), (1, 0)), (1, 1, 1), 1),  # 3-D
    ((16, 14, 14, 32), (3, 3, 32, 64), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),  # fmnist-size
]


def _ints(rng, shape):
    return jnp.asarray(rng.integers(-128, 128, size=shape), jnp.int8)


def test_the_library_builds_and_loads():
    assert onednn.load(), onednn.reason()


@pytest.mark.parametrize("x_shape,w_shape,stride,pads,dilation,groups", CASES)
def test_conv_int8_is_lax_exactly(x_shape, w_shape, stride, pads, dilation, groups):
    rng = np.random.default_rng(0)
    x, w = _ints(rng, x_shape), _ints(rng, w_shape)
    assert onednn_int8.conv_applies(x, w, pads=pads)
    ours = jax.jit(lambda x, w: onednn_int8.conv_int8(x, w, stride=stride, pads=pads, dilation=dilation,
                                                      groups=groups))(x, w)
    rank = len(stride)
    spec = "N" + "DHW"[3 - rank:] + "C"
    ref = lax.conv_general_dilated(x, w, stride, pads, rhs_dilation=dilation, feature_group_count=groups,
                                   dimension_numbers=(spec, "DHW"[3 - rank:] + "IO", spec),
                                   preferred_element_type=jnp.int32)
    assert ours.dtype == jnp.int32 and ours.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


@pytest.mark.parametrize("m,k,n", [(8, 33, 7), (128, 3136, 128), (1, 5, 1)])
def test_matmul_int8_is_lax_exactly(m, k, n):
    rng = np.random.default_rng(1)
    a, b = _ints(rng, (m, k)), _ints(rng, (k, n))
    assert onednn_int8.matmul_applies(a, b)
    ours = jax.jit(onednn_int8.matmul_int8)(a, b)
    ref = lax.dot(a, b, preferred_element_type=jnp.int32)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_what_is_not_sent_to_onednn():
    rng = np.random.default_rng(2)
    x, w = _ints(rng, (2, 6, 6, 3)), _ints(rng, (3, 3, 3, 4))
    assert not onednn_int8.conv_applies(x.astype(jnp.float32), w)          # not int8
    assert not onednn_int8.conv_applies(x, w, lhs_dilation=(2, 2))          # a transposed conv's form
    assert not onednn_int8.conv_applies(x, w, pads=((-1, 0), (0, 0)))       # cropping
    assert not onednn_int8.matmul_applies(x, w)                             # not 2-D
    assert not onednn_int8.matmul_applies(_ints(rng, (2, 3)), _ints(rng, (4, 5)))


def _net():
    return serial(("conv1", Conv(8, 3, padding="same")), ("act1", Relu()), ("bn1", BatchNorm()),
                  ("pool", MaxPool(2)), ("dw", Conv(8, 3, padding=1, groups=8)),
                  ("conv2", Conv(6, 3, stride=2, padding=1)), ("act2", Relu()),
                  ("flat", Flatten()), ("fc", Dense(5)))


def test_int8_inference_takes_onednn_and_equals_the_lax_integer_path(monkeypatch):
    net = _net()
    _, params, state = net.init(jax.random.PRNGKey(0), (1, 10, 10, 3))
    calib = [np.asarray(jax.random.normal(jax.random.PRNGKey(i), (8, 10, 10, 3))) for i in range(2)]
    q = compress.calibrate(net, params, state, calib)
    assert "dw/weight" in q["weights"]

    def run():
        return jax.jit(lambda q_, p, s, x: compress.int8_apply(net, q_, p, s, x))
    hlo = run().lower(q, params, state, calib[1]).as_text()
    assert hlo.count("jaxcnn_onednn_conv_forward_s8") == 3 and hlo.count("jaxcnn_onednn_matmul_s8") == 1
    assert "stablehlo.convolution" not in hlo
    ours = np.asarray(run()(q, params, state, calib[1]))
    monkeypatch.setattr(int8_path.onednn_int8, "conv_applies", lambda *a, **k: False)
    monkeypatch.setattr(int8_path.onednn_int8, "matmul_applies", lambda *a, **k: False)
    lax_hlo = run().lower(q, params, state, calib[1]).as_text()
    assert lax_hlo.count("stablehlo.convolution") == 3 and "jaxcnn_onednn" not in lax_hlo
    np.testing.assert_array_equal(ours, np.asarray(run()(q, params, state, calib[1])))
