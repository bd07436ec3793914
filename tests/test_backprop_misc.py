"""Explicit backward passes of dense, activations, batch norm and losses vs jax.vjp and
torch; the custom_vjp twins; and a small serial stack trained with explicit backprop
equal to the autodiff run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ops
from jaxcnn import dispatch
from jaxcnn.backprop import activation_backward, batch_norm_backward, cross_entropy_backward, dense_backward
from jaxcnn.dispatch import backprop_mode
from jaxcnn.backprop.activations import ELEMENTWISE

ACT_KW = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 0.7}, "softplus": {"beta": 2.0, "threshold": 3.0},
          "gelu": {"approximate": "tanh"}}


def test_dense_backward(x64):
    rng = np.random.default_rng(0)
    for shape in [(5, 4), (2, 3, 4)]:
        x, w, b = rng.normal(size=shape), rng.normal(size=(4, 6)), rng.normal(size=6)
        y, vjp = jax.vjp(ops.dense, x, w, b)
        dy = rng.normal(size=y.shape)
        for g, r in zip(dense_backward(x, w, dy), vjp(dy)):
            np.testing.assert_allclose(g, r, atol=1e-12)


@pytest.mark.parametrize("name", ELEMENTWISE + ("softmax", "log_softmax"))
def test_activation_backward(x64, name):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 7)) * 4
    x[0, :4] = [-3.0, 3.0, 6.0, 0.5]          # hardswish/relu6 corners stay on torch's side
    kw = ACT_KW.get(name, {})
    y, vjp = jax.vjp(lambda x: getattr(ops, name)(x, **kw), x)
    dy = rng.normal(size=y.shape)
    np.testing.assert_allclose(activation_backward(name, x, dy, **kw), vjp(dy)[0], atol=1e-12)
    if name == "gelu":
        y, vjp = jax.vjp(ops.gelu, x)
        np.testing.assert_allclose(activation_backward(name, x, dy), vjp(dy)[0], atol=1e-12)


@pytest.mark.parametrize("layout,shape", [("NHWC", (4, 3, 5, 3)), ("NCHW", (4, 3, 5)), ("NHWC", (6, 3))])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_backward(x64, layout, shape, train):
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape) * 2 + 1
    c = shape[-1] if layout == "NHWC" else shape[1]
    rm, rv = rng.normal(size=c), rng.uniform(0.5, 2, size=c)
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    y, vjp = jax.vjp(lambda x, g, b: ops.batch_norm(x, rm, rv, g, b, train=train, layout=layout)[0], x, gamma, beta)
    dy = rng.normal(size=y.shape)
    got = batch_norm_backward(x, rm, rv, gamma, beta, dy, train=train, layout=layout)
    for g, r in zip(got, vjp(dy)):
        np.testing.assert_allclose(g, r, atol=1e-10)


def test_batch_norm_backward_matches_torch(x64):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, gamma, beta = rng.normal(size=(4, 3, 5, 2)), rng.normal(size=3), rng.normal(size=3)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    y = torch.nn.functional.batch_norm(tx, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                                       tg, tb, training=True)
    dy = rng.normal(size=y.shape)
    y.backward(torch.tensor(dy))
    got = batch_norm_backward(x, np.zeros(3), np.ones(3), gamma, beta, dy, train=True, layout="NCHW")
    for g, t in zip(got, (tx, tg, tb)):
        np.testing.assert_allclose(g, t.grad.numpy(), atol=1e-10)


def test_cross_entropy_backward(x64):
    rng = np.random.default_rng(4)
    z, lab = rng.normal(size=(5, 4)), np.array([0, 3, 1, 1, 2])
    for kw in [{}, {"label_smoothing": 0.1}, {"reduction": "sum"}, {"reduction": "none"}]:
        y, vjp = jax.vjp(lambda z: ops.cross_entropy(z, lab, **kw), z)
        dy = rng.normal(size=y.shape)
        np.testing.assert_allclose(cross_entropy_backward(z, lab, dy, **kw), vjp(dy)[0], atol=1e-12)


def test_explicit_mode_raises_for_op_without_twin(monkeypatch):
    # every differentiable op has a twin now: take one away to see the error path
    monkeypatch.delitem(dispatch.TWINS, "lp_pool")
    with backprop_mode("explicit"):
        with pytest.raises(NotImplementedError, match="no explicit backward"):
            dispatch.lp_pool(jnp.ones((1, 4, 4, 1)), 2.0, 2)


def test_twins_dropout_and_batch_norm_state(x64):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3, 3, 2))
    key = jax.random.PRNGKey(0)
    rm, rv, g, b = np.zeros(2), np.ones(2), rng.normal(size=2), rng.normal(size=2)

    def f(x, g, b):
        y, m, v = dispatch.batch_norm(x, rm, rv, g, b, train=True)
        y = dispatch.dropout(key, y, 0.3, train=True)
        y = dispatch.spatial_dropout(jax.random.fold_in(key, 1), y, 0.5, train=True)
        return jnp.sum(y ** 2), (m, v)

    (l1, s1), g1 = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(x, g, b)
    with backprop_mode("explicit"):
        (l2, s2), g2 = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(x, g, b)
    np.testing.assert_allclose(l1, l2, rtol=1e-14)
    for a, c in zip(g1 + s1, g2 + s2):
        np.testing.assert_allclose(a, c, atol=1e-12)


def _stack_loss(p, x, labels):
    """conv -> relu -> avg_pool -> conv(stride 2, reflect) -> tanh -> max_pool -> dense -> cross-entropy."""
    h = dispatch.relu(dispatch.conv(x, p["w1"], p["b1"], padding=1))
    h = dispatch.avg_pool(h, 2)
    h = dispatch.tanh(dispatch.conv(h, p["w2"], p["b2"], stride=2, padding=(1, 0), padding_mode="reflect"))
    h = dispatch.max_pool(h, 2, ceil_mode=True)
    h = h.reshape(h.shape[0], -1)
    return dispatch.cross_entropy(dispatch.dense(h, p["wd"], p["bd"]), labels)


def _train(mode, params, x, labels, steps=4, lr=0.1):
    with backprop_mode(mode):
        step = jax.jit(jax.value_and_grad(_stack_loss))
        losses = []
        for _ in range(steps):
            loss, grads = step(params, x, labels)
            params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
            losses.append(float(loss))
    return params, losses


def test_serial_stack_trains_identically_with_explicit_backprop():
    rng = np.random.default_rng(6)
    params = {"w1": rng.normal(size=(3, 3, 2, 4)) * 0.3, "b1": np.zeros(4), "w2": rng.normal(size=(3, 3, 4, 6)) * 0.3,
              "b2": np.zeros(6), "wd": rng.normal(size=(6, 5)) * 0.3, "bd": np.zeros(5)}
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    x = jnp.asarray(rng.normal(size=(8, 9, 10, 2)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, size=8))
    p_auto, l_auto = _train("autodiff", params, x, labels)
    p_expl, l_expl = _train("explicit", params, x, labels)
    np.testing.assert_allclose(l_expl, l_auto, rtol=1e-5)
    assert l_auto[-1] < l_auto[0]
    for k in params:
        np.testing.assert_allclose(p_expl[k], p_auto[k], atol=1e-5)
