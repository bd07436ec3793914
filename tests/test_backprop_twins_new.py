"""The explicit twins of lp_pool, adaptive_max_pool, upsample and max_unpool: gradient
equal to jax autodiff (float64, 1e-10) and to torch autograd over random
configurations; registered in dispatch; and the eval step's loss is the dispatched one."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import ops
from jaxcnn import dispatch
from jaxcnn.backprop import twins
from jaxcnn.dispatch import backprop_mode
from jaxcnn.dispatch import observe
from jaxcnn.ops.random import normal


torch = pytest.importorskip("torch")
TF = torch.nn.functional
LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _nchw_to(layout, a):
    """An NCHW array in ``layout``."""
    return a if layout == "NCHW" else np.moveaxis(a, 1, -1)


def _to_nchw(layout, a):
    return a if layout == "NCHW" else np.moveaxis(a, -1, 1)


def _lp_case(rng, layout):
    rank = int(rng.integers(1, 4))
    k = tuple(int(v) for v in rng.integers(1, 4, rank))
    s = tuple(int(v) for v in rng.integers(1, 4, rank))
    n = tuple(int(kk + rng.integers(0, 4)) for kk in k)
    p = float(rng.choice([1.0, 2.0, 3.0, 1.5]))
    x = rng.uniform(0.2, 2.0, size=(2, int(rng.integers(1, 4))) + n)       # positive: x^1.5 is real
    kw = dict(norm_type=p, kernel_size=k, stride=s, ceil_mode=bool(rng.random() < 0.5))
    tk, ts = (k[0], s[0]) if rank == 1 else (k, s)       # lp_pool1d wants ints
    torch_fn = lambda t: getattr(TF, f"lp_pool{rank}d")(t, p, tk, ts, kw["ceil_mode"])  # noqa: E731
    return x, kw, torch_fn


def _adaptive_max_case(rng, layout):
    rank = int(rng.integers(1, 4))
    n = tuple(int(v) for v in rng.integers(2, 8 if rank < 3 else 6, rank))
    # outputs larger than the input make windows overlap (one input feeds several outputs)
    out = tuple(int(rng.integers(1, nn + 3)) for nn in n)
    x = rng.normal(size=(2, int(rng.integers(1, 4))) + n)
    kw = dict(output_size=out)
    return x, kw, lambda t: getattr(TF, f"adaptive_max_pool{rank}d")(t, out)


def _upsample_case(rng, layout):
    rank = int(rng.integers(1, 4))
    n = tuple(int(v) for v in rng.integers(2, 6, rank))
    mode = "nearest" if rng.random() < 0.4 else LINEAR[rank]
    align = None if mode == "nearest" else bool(rng.random() < 0.5)
    if rng.random() < 0.5:
        size, scale = tuple(int(v) for v in rng.integers(1, 9, rank)), None
    else:
        size, scale = None, tuple(float(v) for v in rng.choice([0.5, 1.5, 2.0, 2.5, 3.0], rank))
    x = rng.normal(size=(2, int(rng.integers(1, 4))) + n)
    kw = dict(size=size, scale_factor=scale, mode=mode, align_corners=align)
    return x, kw, lambda t: TF.interpolate(t, size=size, scale_factor=scale, mode=mode, align_corners=align)


def _unpool_case(rng, layout, overlapping=False):
    rank = int(rng.integers(1, 4))
    k = tuple(int(v) for v in rng.integers(1, 4, rank))
    # stride >= kernel: every pooled value has its own index (autodiff's scatter and
    # torch's gather agree only then; overlapping windows are checked against torch alone)
    s = tuple(int(kk + (0 if overlapping else rng.integers(0, 2)) - (1 if overlapping and kk > 1 else 0))
              for kk in k)
    p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
    n = tuple(int(kk + rng.integers(1, 5)) for kk in k)
    src = rng.normal(size=(2, int(rng.integers(1, 4))) + n)
    pooled, idx = ops.max_pool(src, k, s, p, return_indices=True, layout="NCHW")
    # torch's default size can be smaller than the pooled plane when padding is used
    out = n if any(p) or rng.random() < 0.5 else None
    kw = dict(indices=_nchw_to(layout, np.asarray(idx)), kernel_size=k, stride=s, padding=p, output_size=out)
    torch_fn = lambda t: getattr(TF, f"max_unpool{rank}d")(t, torch.tensor(np.asarray(idx), dtype=torch.int64),  # noqa: E731
                                                           k, s, p, out)
    return np.asarray(pooled), kw, torch_fn


CASES = {"lp_pool": _lp_case, "adaptive_max_pool": _adaptive_max_case, "upsample": _upsample_case,
         "max_unpool": _unpool_case}


def _grads(name, x, kw, dy, layout):
    """(autodiff gradient of the op, gradient of its twin) for cotangent ``dy``; one
    compiled computation per configuration (eager dispatch would compile every small op)."""
    op, twin = getattr(ops, name), getattr(twins, name)

    @jax.jit
    def both(x, dy):
        y, vjp = jax.vjp(lambda x: op(x, **kw, layout=layout), x)
        y_t, vjp_t = jax.vjp(lambda x: twin(x, **kw, layout=layout), x)
        return y, y_t, vjp(dy)[0], vjp_t(dy)[0]

    y, y_t, ref, got = both(x, dy)
    np.testing.assert_array_equal(np.asarray(y_t), np.asarray(y))     # the twin's forward is the op
    return ref, got


@pytest.mark.parametrize("name", sorted(CASES))
def test_twin_gradient_equals_autodiff_and_torch(x64, name):
    rng = np.random.default_rng(sorted(CASES).index(name))
    for i in range(5):                       # five random configurations per op, both layouts
        layout = ("NCHW", "NHWC")[i % 2]
        x_nchw, kw, torch_fn = CASES[name](rng, layout)
        t = torch.tensor(x_nchw, requires_grad=True)
        y_torch = torch_fn(t)
        dy_nchw = rng.normal(size=tuple(y_torch.shape))
        y_torch.backward(torch.tensor(dy_nchw))
        x, dy = _nchw_to(layout, x_nchw), _nchw_to(layout, dy_nchw)
        ref, got = _grads(name, x, kw, dy, layout)
        where = f"{name} case {i} {layout} {kw if name != 'max_unpool' else kw['kernel_size']}"
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10, err_msg=where)
        np.testing.assert_allclose(_to_nchw(layout, np.asarray(got)), t.grad.numpy(), rtol=1e-10, atol=1e-10,
                                   err_msg=where)


def test_max_unpool_twin_follows_torch_on_repeated_indices(x64):
    """Overlapping pooling windows can pick the same input twice; torch's max_unpool
    backward gives every duplicate the gradient (a gather), so does the twin."""
    rng = np.random.default_rng(7)
    seen_repeat = 0
    for _ in range(6):
        x, kw, torch_fn = _unpool_case(rng, "NCHW", overlapping=True)
        idx = kw["indices"].reshape(*kw["indices"].shape[:2], -1)
        seen_repeat += any(len(set(row)) < len(row) for plane in idx for row in plane)
        t = torch.tensor(x, requires_grad=True)
        y_torch = torch_fn(t)
        dy = rng.normal(size=tuple(y_torch.shape))
        y_torch.backward(torch.tensor(dy))
        got = jax.jit(lambda x, dy: jax.vjp(lambda x: twins.max_unpool(x, **kw, layout="NCHW"), x)[1](dy)[0])(x, dy)
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert seen_repeat >= 1


def test_adaptive_max_pool_twin_ties_go_to_first_maximum():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 2, 0].set(1.0)   # window of output (0, 0) all zeros: a tie
    g = jax.jit(jax.grad(lambda x: twins.adaptive_max_pool(x, (2, 2)).sum()))(x)[0, :, :, 0]
    t = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)
    TF.adaptive_max_pool2d(t, (2, 2)).sum().backward()
    np.testing.assert_array_equal(np.asarray(g), t.grad.numpy()[0, 0])
    assert float(g[0, 0]) == 1.0 and float(g[1, 2]) == 1.0


def test_twins_with_indices_and_unbatched_inputs(x64):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5, 2))              # unbatched NHWC (H, W, C)
    y, idx = twins.adaptive_max_pool(x, (3, 2), return_indices=True)
    # torch on the same unbatched input (C, H, W): values and flat per-plane indices
    y_t, idx_t = TF.adaptive_max_pool2d(torch.tensor(np.moveaxis(x, -1, 0)), (3, 2), return_indices=True)
    np.testing.assert_array_equal(np.asarray(y), np.moveaxis(y_t.numpy(), 0, -1))
    np.testing.assert_array_equal(np.asarray(idx), np.moveaxis(idx_t.numpy(), 0, -1))
    pooled, unique_idx = ops.max_pool(x, (2, 2), return_indices=True)      # (3, 2, 2), distinct indices
    cases = [(x, lambda o, v: o.adaptive_max_pool(v, (3, 2), return_indices=True)[0]),
             (np.abs(pooled), lambda o, v: o.lp_pool(v, 2.0, (2, 2))),
             (pooled, lambda o, v: o.max_unpool(v, unique_idx, (2, 2), output_size=(6, 5)))]
    for v, fn in cases:
        ref, got = jax.jit(lambda v: (jax.grad(lambda v: jnp.sum(fn(ops, v) ** 2))(v),
                                      jax.grad(lambda v: jnp.sum(fn(twins, v) ** 2))(v)))(v)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_new_twins_are_registered_and_dispatched():
    assert {"lp_pool", "adaptive_max_pool", "upsample", "max_unpool"} <= set(dispatch.explicit_ops())
    x = jnp.ones((1, 4, 4, 2))
    _, idx = ops.max_pool(x, 2, return_indices=True)

    def net(x):
        y = dispatch.upsample(dispatch.lp_pool(x, 2.0, 2), scale_factor=2)
        return dispatch.max_unpool(dispatch.adaptive_max_pool(y, (2, 2)), idx, 2)

    counts = {}
    for mode in ("autodiff", "explicit"):
        with backprop_mode(mode):        # explicit: would raise NotImplementedError without a twin
            # a fresh function per mode: jax caches a trace per function, and the mode is
            # read only when tracing
            counts[mode] = str(jax.make_jaxpr(lambda x: net(x))(x)).count("custom_vjp_call")
    assert counts == {"autodiff": 0, "explicit": 4}


def test_eval_step_loss_is_the_dispatched_cross_entropy():
    from jaxcnn.combinators import serial
    from jaxcnn.layers import Dense, Flatten
    from jaxcnn.train import create_train_state, make_eval_step
    net = serial(Flatten(), Dense(10))
    ts = create_train_state(net, optax.sgd(0.1), jax.random.key(0), (3, 4, 4, 1))
    batch = {"image": normal(jax.random.key(1), (3, 4, 4, 1)), "label": jnp.array([0, 3, 9]),
             "mask": jnp.array([1.0, 1.0, 0.0])}
    called = []
    with observe(lambda name, args, kwargs: called.append(name)):     # sees the calls while tracing
        sums = jax.jit(make_eval_step(net))(ts, batch)
    assert "cross_entropy" in called
    logits = batch["image"].reshape(3, -1) @ ts.params["1"]["weight"] + ts.params["1"]["bias"]
    expect = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])[:2].sum()
    np.testing.assert_allclose(float(sums["loss_sum"]), float(expect), rtol=1e-5)
    assert int(sums["count"]) == 2
