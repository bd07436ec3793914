"""kernels.xla: the max-pool backward (tap-by-tap scan and arg-max forms) and the fused BatchNorm backward equal
jax autodiff (float64, 1e-10) and torch autograd (ties and NaN included), and the
"auto" mode trains a zoo model with BN + max-pool + dropout to autodiff's gradients."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxcnn import models, ops
from jaxcnn import dispatch
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import xla as fast
from jaxcnn.kernels.xla import batch_norm as fast_batch_norm, max_pool as fast_max_pool
from jaxcnn.train.state import create_train_state
from jaxcnn.train.step import make_train_step

from _parity import to_first, to_last, value_and_vjp

max_pool_module = importlib.import_module("jaxcnn.kernels.xla.max_pool")   # the package exports the function

TOL = 1e-10


def _vjp(fn, x, dy):
    y, (dx,) = value_and_vjp(fn)(x, dy)
    return y, dx


@pytest.mark.parametrize("shape,kernel,layout", [
    ((3, 8, 6, 4), 2, "NHWC"),
    ((2, 9, 7, 3), (3, 2), "NHWC"),          # sizes not divisible: the tail rows/cols get no gradient
    ((2, 3, 8, 10), 2, "NCHW"),
    ((2, 12, 5), 3, "NHWC"),                  # 1-D
    ((1, 4, 6, 4, 2), (2, 3, 2), "NHWC"),     # 3-D
    ((8, 6, 3), (2, 2), "NHWC"),              # unbatched 2-D
    ((2, 10, 9, 3), (5, 4), "NHWC"),          # 20 taps: the arg-max form, not the scan
])
def test_fast_max_pool_matches_autodiff(x64, shape, kernel, layout):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape))   # continuous: no ties, autodiff is unambiguous
    y_ref = ops.max_pool(x, kernel, layout=layout)
    dy = jnp.asarray(rng.standard_normal(y_ref.shape))
    y, g = _vjp(lambda v: fast_max_pool(v, kernel, layout=layout), x, dy)
    _, g_ref = _vjp(lambda v: ops.max_pool(v, kernel, layout=layout), x, dy)
    assert y.dtype == jnp.float64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(g, g_ref, rtol=TOL, atol=TOL)
    assert float(jnp.sum(g != 0)) == y_ref.size      # exactly one input per window


@pytest.mark.parametrize("max_scan_taps", [16, 0], ids=["scan", "argmax"])
def test_fast_max_pool_ties_and_nan_like_torch(x64, monkeypatch, max_scan_taps):
    monkeypatch.setattr(max_pool_module, "MAX_SCAN_TAPS", max_scan_taps)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(2, 3, 8, 6)).astype(np.float64)    # NCHW, many ties
    x[0, 0, 0, 1] = np.nan
    x[1, 2, 5, 4] = np.nan
    x[1, 2, 4, 4] = np.nan                                          # two NaNs in one window
    dy = rng.standard_normal((2, 3, 4, 3))
    t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(t, 2).backward(torch.tensor(dy))
    y, g = _vjp(lambda v: fast_max_pool(v, 2, layout="NCHW"), jnp.asarray(x), jnp.asarray(dy))
    np.testing.assert_array_equal(np.asarray(y), torch.nn.functional.max_pool2d(torch.tensor(x), 2).numpy())
    np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=TOL, atol=TOL)
    # and channels-last gives the same gradient
    _, g_last = _vjp(lambda v: fast_max_pool(v, 2), jnp.asarray(to_last(x)), jnp.asarray(to_last(dy)))
    np.testing.assert_allclose(to_first(g_last), t.grad.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kw", [dict(stride=1), dict(padding=1, kernel_size=3, stride=2), dict(dilation=2),
                                dict(ceil_mode=True)])
def test_fast_max_pool_falls_back_off_the_fast_path(x64, kw):
    kw = {"kernel_size": 2, **kw}
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 7, 7, 3)))
    assert not fast.non_overlapping(x, **kw)
    calls = []

    def spy(*a, **k):
        calls.append(a)
        return ops.max_pool(*a, **k)

    y = fast.max_pool_with(spy)(x, **kw)
    assert calls, "geometry off the fast path must go to the fallback"
    np.testing.assert_array_equal(y, ops.max_pool(x, **kw))
    # the "auto" entry (explicit twin fallback) has autodiff's gradient there too
    dy = jnp.ones_like(y)
    _, g = _vjp(lambda v: dispatch.FORMULATIONS["max_pool"]["fast"](v, **kw), x, dy)
    _, g_ref = _vjp(lambda v: ops.max_pool(v, **kw), x, dy)
    np.testing.assert_allclose(g, g_ref, rtol=TOL, atol=TOL)


def test_fast_max_pool_rejects_bad_input_like_the_op():
    with pytest.raises(ValueError, match="max_pool"):
        fast_max_pool(jnp.ones((1, 1, 4, 4)), 0)
    with pytest.raises(ValueError, match="max_pool"):
        fast_max_pool(jnp.ones((1, 2, 2, 1)), 3)


@pytest.mark.parametrize("shape,layout,affine", [((6, 5, 4, 3), "NHWC", True), ((4, 3, 5, 2), "NCHW", True),
                                                 ((7, 5), "NHWC", False), ((3, 4, 6, 2), "NHWC", False)])
def test_fast_batch_norm_matches_autodiff(x64, shape, layout, affine):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal(shape) * 3 + 2)
    c = shape[1] if layout == "NCHW" else shape[-1]
    w = jnp.asarray(rng.standard_normal(c)) if affine else None
    b = jnp.asarray(rng.standard_normal(c)) if affine else None
    rm, rv = jnp.asarray(rng.standard_normal(c)), jnp.asarray(rng.uniform(0.5, 2, c))
    kw = dict(train=True, momentum=0.05, eps=1e-3, layout=layout)
    out = fast_batch_norm(x, rm, rv, w, b, **kw)
    ref = ops.batch_norm(x, rm, rv, w, b, **kw)
    for a, r in zip(out, ref):
        np.testing.assert_allclose(a, r, rtol=1e-14, atol=1e-14)
    dy = jnp.asarray(rng.standard_normal(shape))

    def loss(op):
        def f(x, w, b):
            y, m, v = op(x, rm, rv, w, b, **kw)
            return jnp.sum(y * dy) + jnp.sum(m) + jnp.sum(v)   # statistics carry no gradient to x
        return jax.grad(f, argnums=(0, 1, 2) if affine else 0)(x, w, b)
    for a, r in zip(jax.tree.leaves(loss(fast_batch_norm)), jax.tree.leaves(loss(ops.batch_norm))):
        np.testing.assert_allclose(a, r, rtol=TOL, atol=TOL)


def test_fast_batch_norm_matches_torch(x64):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 4, 4)) * 2 - 1
    w, b, dy = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal((5, 3, 4, 4))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(tx, rm, rv, tw, tb, training=True, momentum=0.1, eps=1e-5)
    ty.backward(torch.tensor(dy))

    def f(x, w, b):
        y, m, v = fast_batch_norm(x, jnp.zeros(3), jnp.ones(3), w, b, train=True, layout="NCHW")
        return jnp.sum(y * dy), (y, m, v)
    grads, (y, m, v) = jax.grad(f, argnums=(0, 1, 2), has_aux=True)(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m, rm.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v, rv.numpy(), rtol=1e-12, atol=1e-12)
    for g, t in zip(grads, (tx, tw, tb)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_fast_batch_norm_axis_name_uses_global_batch(x64):
    """Under vmap with an axis name, statistics and the backward means span all shards:
    the same gradient as one batch-norm over the concatenated batch."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((4, 3, 2, 2, 5)))          # 4 shards of 3 images
    w, b = jnp.asarray(rng.standard_normal(5)), jnp.asarray(rng.standard_normal(5))
    dy = jnp.asarray(rng.standard_normal(x.shape))
    rm, rv = jnp.zeros(5), jnp.ones(5)

    def sharded(x, w):
        def one(xs, dys):
            def f(xs, w):
                y, _, _ = fast_batch_norm(xs, rm, rv, w, b, train=True, axis_name="i")
                return jnp.sum(y * dys)
            return jax.grad(f, argnums=(0, 1))(xs, w)
        return jax.vmap(one, axis_name="i")(x, dy)

    def whole(x, w):
        y, _, _ = ops.batch_norm(x.reshape(12, 2, 2, 5), rm, rv, w, b, train=True)
        return jnp.sum(y * dy.reshape(12, 2, 2, 5))
    gx, gw = sharded(x, w)
    gx_ref, gw_ref = jax.grad(whole, argnums=(0, 1))(x, w)
    np.testing.assert_allclose(gx, gx_ref, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(jnp.sum(gw, 0), gw_ref, rtol=TOL, atol=TOL)   # local sums add up


def test_fast_batch_norm_eval_matches_torch_and_bad_input(x64):
    x = np.random.default_rng(6).standard_normal((4, 3))
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    y, m, v = fast_batch_norm(jnp.asarray(x), jnp.asarray(rm), jnp.asarray(rv), train=False)
    ref = torch.nn.functional.batch_norm(torch.tensor(x), torch.tensor(rm), torch.tensor(rv), training=False)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-12, atol=1e-12)          # (x - 0.5) / sqrt(2 + 1e-5)
    np.testing.assert_array_equal(m, rm)                                        # eval: statistics untouched
    np.testing.assert_array_equal(v, rv)
    rm, rv = jnp.asarray(rm), jnp.asarray(rv)
    with pytest.raises(ValueError, match="running_mean must have shape"):
        fast_batch_norm(x, jnp.zeros(4), jnp.ones(4), train=True)
    with pytest.raises(ValueError, match="more than one value per channel"):
        fast_batch_norm(x[:1], rm, rv, train=True)


def test_auto_table_names_measured_choices():
    table = dispatch.auto_table()
    assert set(table) == set(dispatch.FORMULATIONS)
    assert {op: table[op] for op in dispatch.DEFAULT_TABLE} == dispatch.DEFAULT_TABLE
    assert table["dense"] == "autodiff"                  # not listed: autodiff
    with pytest.raises(ValueError, match="no formulation 'nope' for op 'max_pool'"):
        dispatch.set_auto_table({"max_pool": "nope"})
    assert dispatch.auto_table() == table                # a refused table changes nothing


def test_auto_choices_scope_a_table_to_a_block():
    with dispatch.auto_choices({"max_pool": "explicit"}):
        assert dispatch.auto_table()["max_pool"] == "explicit"
        assert dispatch.auto.resolve("max_pool") is dispatch.FORMULATIONS["max_pool"]["explicit"]
    assert dispatch.auto_table()["max_pool"] == dispatch.DEFAULT_TABLE["max_pool"]


@pytest.mark.slow
def test_auto_mode_train_step_gradients_equal_autodiff(x64):
    """fmnist_cnn (conv, ReLU, BatchNorm, max-pool, dropout, dense) in float64: the
    "auto" step's gradients, new statistics and loss are autodiff's."""
    model = models.create("fmnist_cnn", num_classes=10, widths=(3, 4), hidden=8)
    rng = np.random.default_rng(7)
    batch = {"image": jnp.asarray(rng.standard_normal((6, 28, 28, 1))),
             "label": jnp.asarray(rng.integers(0, 10, 6))}
    tx = optax.sgd(1.0)                     # update == -grad, so the new params expose the grads
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), (6, 28, 28, 1))
    ts = ts.replace(params=jax.tree.map(lambda a: a.astype(jnp.float64), ts.params),
                    state=jax.tree.map(lambda a: a.astype(jnp.float64), ts.state))
    out = {}
    for mode in ("autodiff", "auto"):
        step = jax.jit(make_train_step(model, ops.cross_entropy, tx, backprop=mode))
        out[mode] = step(ts, batch, jax.random.PRNGKey(1))
    (new_a, met_a), (new_b, met_b) = out["autodiff"], out["auto"]
    for a, b in zip(jax.tree.leaves((new_a.params, new_a.state)), jax.tree.leaves((new_b.params, new_b.state))):
        np.testing.assert_allclose(b, a, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(met_b["loss"], met_a["loss"], rtol=1e-12)
    assert float(met_a["grad_norm"]) > 0


def test_auto_mode_uses_the_fast_formulations():
    """Tracing under "auto" reaches the fast max-pool / batch-norm (not the ops)."""
    seen = []
    x = jnp.ones((2, 4, 4, 3))
    with backprop_mode("auto"):
        for name in ("max_pool", "batch_norm"):
            fn = dispatch.auto.resolve(name)
            seen.append(fn is dispatch.FORMULATIONS[name][dispatch.DEFAULT_TABLE[name]])
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda v: jnp.sum(dispatch.max_pool(v, 2) ** 2)))(x))
    assert all(seen)
    assert "select_and_scatter" not in jaxpr and "custom_vjp" in jaxpr
