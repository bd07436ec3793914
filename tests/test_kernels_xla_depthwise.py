"""The depthwise fast path (shifted multiply-adds) equals XLA's grouped convolution,
values and gradients, over random 1-3-D configurations in both layouts; and
``kernels.xla.conv`` ("auto"'s fallback conv) takes it exactly for depthwise convs on
CPU, while ``ops.conv`` (the reference) stays XLA's grouped convolution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import ops
from jaxcnn.kernels import xla
from jaxcnn.kernels.xla.depthwise import depthwise_shifted, use_shifted_depthwise
from jaxcnn.ops.layout import dimension_numbers

from _parity import value_and_vjp


def _case(seed):
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    layout = ("NHWC", "NCHW")[seed % 2]
    c = int(rng.integers(1, 6))
    k = tuple(int(v) for v in rng.integers(1, 4, rank))
    s = tuple(int(v) for v in rng.integers(1, 4, rank))
    d = tuple(int(v) for v in rng.integers(1, 3, rank))
    pads = [(int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(rank)]
    n = tuple(int(v) + (kk - 1) * dd for v, kk, dd in zip(rng.integers(1, 7, rank), k, d))
    xshape = (2,) + n + (c,) if layout == "NHWC" else (2, c) + n
    wshape = k + (1, c) if layout == "NHWC" else (c, 1) + k
    return (rng.normal(size=xshape), rng.normal(size=wshape), dict(stride=s, pads=pads, dilation=d,
                                                                    layout=layout))


# 8 configurations in the fast suite (both layouts, 1-3-D), 16 more under -m slow
@pytest.mark.parametrize("seed", [*range(8), *(pytest.param(s, marks=pytest.mark.slow) for s in range(8, 24))])
def test_shifted_equals_grouped_conv_values_and_grads(x64, seed):
    x, w, kw = _case(seed)
    rank, c = w.ndim - 2, (x.shape[-1] if kw["layout"] == "NHWC" else x.shape[1])

    def grouped(x, w):
        return lax.conv_general_dilated(x, w, kw["stride"], kw["pads"], rhs_dilation=kw["dilation"],
                                        dimension_numbers=dimension_numbers(rank, kw["layout"], "test"),
                                        feature_group_count=c)

    def shifted(x, w):
        return depthwise_shifted(x, w, **kw)

    y_shape = jax.eval_shape(grouped, jnp.asarray(x), jnp.asarray(w)).shape
    dy = np.random.default_rng(seed + 100).normal(size=y_shape)
    ref, grads_ref = value_and_vjp(grouped)(x, w, dy)
    got, grads_got = value_and_vjp(shifted)(x, w, dy)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads_got, grads_ref):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


def test_conv_takes_the_fast_path_only_for_depthwise():
    x = jnp.ones((1, 5, 5, 4))
    assert use_shifted_depthwise(1, 4, 4)                # (C_in/groups, C_out, groups): depthwise
    assert not use_shifted_depthwise(2, 4, 2)            # grouped, not depthwise
    assert not use_shifted_depthwise(1, 8, 4)            # channel multiplier 2
    assert not use_shifted_depthwise(4, 4, 1)
    assert not use_shifted_depthwise(1, 1, 1)            # one channel: an ordinary conv
    w = jnp.ones((3, 3, 1, 4))
    # the jaxpr of a depthwise kernels.xla.conv has no convolution in it; ops.conv's has
    jaxpr = jax.make_jaxpr(lambda x, w: xla.conv(x, w, padding=1, groups=4))(x, w)
    assert "conv_general_dilated" not in str(jaxpr)
    assert "conv_general_dilated" in str(jax.make_jaxpr(lambda x, w: ops.conv(x, w, padding=1, groups=4))(x, w))
    np.testing.assert_allclose(xla.conv(x, w, padding=1, groups=4, stride=2),
                               ops.conv(x, w, padding=1, groups=4, stride=2), rtol=1e-6)


def test_environment_switch_turns_the_fast_path_off(monkeypatch):
    monkeypatch.setenv("JAXCNN_SHIFTED_DEPTHWISE", "0")
    x, w = jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 1, 4))
    assert not use_shifted_depthwise(1, 4, 4)
    jaxpr = jax.make_jaxpr(lambda x, w: xla.conv(x, w, padding=1, groups=4))(x, w)
    assert "conv_general_dilated" in str(jaxpr)
    monkeypatch.setenv("JAXCNN_SHIFTED_DEPTHWISE", "maybe")
    with pytest.raises(ValueError, match="JAXCNN_SHIFTED_DEPTHWISE: expected one of"):
        use_shifted_depthwise(1, 4, 4)
