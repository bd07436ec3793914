"""The fast average pool (jaxcnn.kernels.xla.avg_pool): a reshaped sum on
non-overlapping windows, the op everywhere else; values and gradients against the op's
autodiff and torch in float64, and the "auto" train step of lenet5 against autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxcnn import dispatch, models, ops
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels.xla import avg_pool as fast_avg_pool
from jaxcnn.train.state import create_train_state
from jaxcnn.train.step import make_train_step

from _parity import value_and_vjp

TOL = 1e-12


def _vjp(fn, x, dy):
    y, (dx,) = value_and_vjp(fn)(x, dy)
    return y, dx


def _jaxpr(fn, x):
    return str(jax.make_jaxpr(jax.grad(lambda v: jnp.sum(fn(v) ** 2)))(x))


@pytest.mark.parametrize("shape,args,kw", [
    ((3, 8, 6, 4), (2,), {}),
    ((2, 9, 7, 3), ((3, 2),), {}),                          # sizes not divisible: tail cells get no gradient
    ((2, 3, 8, 10), (2,), {"layout": "NCHW"}),
    ((2, 12, 5), (3,), {}),                                 # 1-D
    ((1, 4, 6, 4, 2), ((2, 3, 2),), {}),                    # 3-D
    ((8, 6, 3), ((2, 2),), {}),                             # unbatched 2-D
    ((2, 8, 8, 3), (2,), {"divisor_override": 3}),
    ((2, 8, 8, 3), (2,), {"count_include_pad": False}),
    ((2, 8, 8, 3), (2,), {"ceil_mode": True}),              # ceil mode that adds no window
])
def test_fast_avg_pool_matches_the_op_and_its_autodiff(x64, shape, args, kw):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape))
    y_ref = ops.avg_pool(x, *args, **kw)
    dy = jnp.asarray(rng.standard_normal(y_ref.shape))
    y, g = _vjp(lambda v: fast_avg_pool(v, *args, **kw), x, dy)
    _, g_ref = _vjp(lambda v: ops.avg_pool(v, *args, **kw), x, dy)
    assert y.dtype == jnp.float64 and y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(g, g_ref, rtol=TOL, atol=TOL)
    assert "reduce_window" not in _jaxpr(lambda v: fast_avg_pool(v, *args, **kw), x)   # the fast path ran


def test_fast_avg_pool_matches_torch(x64):
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((2, 3, 4, 4))
    t = torch.tensor(x, requires_grad=True)
    y_t = torch.nn.functional.avg_pool2d(t, 2)
    y_t.backward(torch.tensor(dy))
    y, g = _vjp(lambda v: fast_avg_pool(v, 2, layout="NCHW"), jnp.asarray(x), jnp.asarray(dy))
    np.testing.assert_allclose(np.asarray(y), y_t.detach().numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kw", [dict(stride=1), dict(kernel_size=3, stride=2, padding=1),
                                dict(ceil_mode=True), dict(padding=1, count_include_pad=False)])
def test_fast_avg_pool_is_the_op_off_the_fast_path(x64, kw):
    kw = {"kernel_size": 2, **kw}
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 7, 7, 3)))
    np.testing.assert_array_equal(fast_avg_pool(x, **kw), ops.avg_pool(x, **kw))
    assert "reduce_window" in _jaxpr(lambda v: fast_avg_pool(v, **kw), x)


def test_fast_avg_pool_rejects_bad_input_like_the_op():
    with pytest.raises(ValueError, match="avg_pool"):
        fast_avg_pool(jnp.ones((1, 4, 4, 1)), 0)
    with pytest.raises(ValueError, match="avg_pool"):
        fast_avg_pool(jnp.ones((1, 2, 2, 1)), 3)
    with pytest.raises(ValueError, match="divisor_override must be non-zero"):
        fast_avg_pool(jnp.ones((1, 4, 4, 1)), 2, divisor_override=0)


def test_auto_mode_reaches_the_fast_avg_pool():
    assert dispatch.DEFAULT_TABLE["avg_pool"] == "fast"
    x = jnp.ones((2, 4, 4, 3))
    with backprop_mode("auto"):
        assert "reduce_window" not in _jaxpr(lambda v: dispatch.avg_pool(v, 2), x)
    with backprop_mode("autodiff"):
        assert "reduce_window" in _jaxpr(lambda v: dispatch.avg_pool(v, 2), x)


def test_lenet5_auto_step_equals_autodiff(x64):
    """LeNet-5 (conv, sigmoid, 2x2 average pools, dense) in float64: the "auto" step's
    new parameters (SGD at rate 1: minus the gradients) and loss are autodiff's."""
    model = models.create("lenet5", num_classes=10)
    rng = np.random.default_rng(7)
    batch = {"image": jnp.asarray(rng.standard_normal((4, 28, 28, 1))),
             "label": jnp.asarray(rng.integers(0, 10, 4))}
    tx = optax.sgd(1.0)
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), (4, 28, 28, 1))
    ts = ts.replace(params=jax.tree.map(lambda a: a.astype(jnp.float64), ts.params))
    out = {mode: jax.jit(make_train_step(model, ops.cross_entropy, tx, backprop=mode))(ts, batch, jax.random.PRNGKey(1))
           for mode in ("autodiff", "auto")}
    (new_a, met_a), (new_b, met_b) = out["autodiff"], out["auto"]
    for a, b in zip(jax.tree.leaves(new_a.params), jax.tree.leaves(new_b.params)):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(met_b["loss"], met_a["loss"], rtol=1e-12)
    assert float(met_a["grad_norm"]) > 0
