"""Explicit pooling backward passes: vs jax.vjp (float64), vs torch autograd (NCHW), and
the seeds' rule as exact tests (average pooling sends 1/Q to each of the Q inputs, max
pooling sends everything to the arg-max, ties to the first maximum in scan order)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ops
from jaxcnn.backprop import (adaptive_avg_pool_backward, avg_pool_backward, global_avg_pool_backward,
                             global_max_pool_backward, max_pool_backward, max_pool_ties)
from tests._backprop_cases import pool_case


def _compare(op, backward, case):
    kw = case["kw"]
    try:
        shape = jax.eval_shape(lambda x: op(x, **kw), case["x"]).shape
    except ValueError:
        return False
    dy = case["rng"].normal(size=shape)

    @jax.jit
    def both(x, dy):
        return jax.vjp(lambda x: op(x, **kw), x)[1](dy)[0], backward(x, dy, **kw)

    ref, got = both(case["x"], dy)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    return True


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_backward_matches_vjp(x64, kind):
    op, backward = (ops.max_pool, max_pool_backward) if kind == "max" else (ops.avg_pool, avg_pool_backward)
    checked = sum(_compare(op, backward, pool_case(seed, kind)) for seed in range(40))   # 40 configurations each
    assert checked >= 20


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_backward_matches_torch(x64, kind):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    checked = 0
    for seed in range(1, 40, 2):      # odd seeds: NCHW; 20 configurations each
        case = pool_case(seed, kind)
        kw = {k: v for k, v in case["kw"].items() if k != "layout"}
        rank = case["x"].ndim - 2
        x = torch.tensor(case["x"], requires_grad=True)
        fn = (getattr(F, f"{kind}_pool1d"), getattr(F, f"{kind}_pool2d"), getattr(F, f"{kind}_pool3d"))[rank - 1]
        if kind == "avg" and rank == 1:
            kw.pop("divisor_override", None)      # avg_pool1d has no divisor_override
        try:
            y = fn(x, **kw)
        except RuntimeError:
            continue
        dy = case["rng"].normal(size=tuple(y.shape))
        y.backward(torch.tensor(dy))
        backward = max_pool_backward if kind == "max" else avg_pool_backward
        got = backward(case["x"], dy, layout="NCHW", **kw)
        np.testing.assert_allclose(got, x.grad.numpy(), atol=1e-12)
        checked += 1
    assert checked >= 4


def test_seed_avg_pool_sends_one_over_q():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    dx = avg_pool_backward(x, jnp.ones((1, 2, 2, 1)), 2)
    assert np.array_equal(np.asarray(dx), np.full((1, 4, 4, 1), 0.25))
    # 1-D, k3 s1 p1 counting the padding (Q = 3 everywhere): 1/3 from each window holding
    # the input -- three windows inside, two at the ends
    x1 = jnp.array([4, 9, 3, 0, 3, 9, 7, 3, 7, 3.0]).reshape(1, 10, 1)
    dx1 = avg_pool_backward(x1, jnp.ones((1, 10, 1)), 3, 1, 1)
    np.testing.assert_allclose(np.asarray(dx1).ravel(), [2 / 3] + [1.0] * 8 + [2 / 3], rtol=1e-6)


def test_seed_max_pool_sends_all_to_argmax():
    x = jnp.array([4, 9, 3, 0, 3, 9, 7, 3, 7, 3.0]).reshape(1, 10, 1)
    dy = jnp.array([1.0, 10.0, 100.0]).reshape(1, 3, 1)
    dx = np.asarray(max_pool_backward(x, dy, 3)).ravel()
    # windows [4,9,3] [0,3,9] [7,3,7]: the 9s get 1 and 10; the tie 7,7 goes to the first 7
    assert np.array_equal(dx, [0, 1, 0, 0, 0, 10, 100, 0, 0, 0])
    assert int(max_pool_ties(x, 3)) == 1
    # 2-D seed: max-pool 2 on arange(100): the bottom-right of each block gets everything
    x2 = jnp.arange(100.0).reshape(1, 10, 10, 1)
    dx2 = np.asarray(max_pool_backward(x2, jnp.ones((1, 5, 5, 1)), 2))[0, :, :, 0]
    expect = np.zeros((10, 10))
    expect[1::2, 1::2] = 1
    assert np.array_equal(dx2, expect)


def test_max_pool_ties_first_in_scan_order_like_torch():
    torch = pytest.importorskip("torch")
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 5.0     # two maxima in the first window
    t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(t, 2).sum().backward()
    got = max_pool_backward(x, np.ones((1, 1, 2, 2)), 2, layout="NCHW")
    assert np.array_equal(np.asarray(got), t.grad.numpy())


def test_adaptive_and_global_pool_backward(x64):
    rng = np.random.default_rng(0)
    for layout, shape, out in [("NHWC", (2, 7, 5, 3), (3, 2)), ("NCHW", (2, 3, 5, 7), (2, 3)),
                               ("NHWC", (1, 9, 2), (4,))]:
        x = rng.normal(size=shape)
        y, vjp = jax.vjp(lambda x: ops.adaptive_avg_pool(x, out, layout=layout), x)
        dy = rng.normal(size=y.shape)
        np.testing.assert_allclose(adaptive_avg_pool_backward(x, dy, out, layout=layout), vjp(dy)[0], atol=1e-12)
        for op, bw in [(ops.global_avg_pool, global_avg_pool_backward), (ops.global_max_pool, global_max_pool_backward)]:
            for keep in (False, True):
                y, vjp = jax.vjp(lambda x: op(x, keepdims=keep, layout=layout), x)
                dy = rng.normal(size=y.shape)
                np.testing.assert_allclose(bw(x, dy, keepdims=keep, layout=layout), vjp(dy)[0], atol=1e-12)
