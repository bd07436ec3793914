"""kernels.onednn.batch_norm: training-mode BatchNorm on oneDNN's primitives equals the op
(values, batch statistics, running statistics, gradients of input, weight and bias)
against float64 autodiff and torch, for 2-5-D channels-last inputs, with and without
affine parameters, with float32's forward as by default (XLA's, exactly) or on oneDNN;
bfloat16 against a float32 reference; other layouts, float64, a pmap
axis and evaluation mode are the XLA formulation's; bad input fails with the op's errors;
"auto" trains fmnist_cnn through it."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn import dispatch, ops
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import onednn, xla
from jaxcnn.kernels.onednn import isa

bn_module = importlib.import_module("jaxcnn.kernels.onednn.batch_norm")   # the package exports the function


@pytest.fixture(params=["xla forward", "onednn forward"])
def forward(request, monkeypatch):
    """float32's forward as by default (the XLA formulation's) or on oneDNN too."""
    if request.param == "onednn forward":
        monkeypatch.setattr(bn_module, "FORWARD_ON_ONEDNN", (jnp.float32, jnp.bfloat16))
    return request.param

from _parity import assert_close, to_first, to_last

RTOL = 2e-5          # float32 against float64
BF16_RTOL = 2e-2     # bfloat16 input and output against float32 on the same bfloat16 input

SHAPES = [(8, 5, 6, 7), (16, 9), (6, 10, 4), (4, 3, 5, 2, 6), (32, 3, 3, 64)]


def _run(fn, x, rm, rv, w, b, dy, momentum=0.1, eps=1e-3):
    def loss(x, w, b):
        y, m, v = fn(x, rm, rv, w, b, train=True, momentum=momentum, eps=eps)
        return jnp.sum(y.astype(jnp.float32) * dy), (y, m, v)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(x, w, b)
    return out, grads


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = rng.standard_normal(shape) * 3 + 1.5
    return (x, rng.standard_normal(c) * 0.1, rng.random(c) + 0.5, rng.standard_normal(c), rng.standard_normal(c),
            rng.standard_normal(shape))


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_autodiff_of_the_op(x64, forward, shape):
    x, rm, rv, w, b, dy = _data(shape)
    f32 = [jnp.asarray(a, jnp.float32) for a in (x, rm, rv, w, b)]
    got, got_g = _run(onednn.batch_norm, *f32, jnp.asarray(dy, jnp.float32))
    want, want_g = _run(ops.batch_norm, *(jnp.asarray(a) for a in (x, rm, rv, w, b)), jnp.asarray(dy))
    for name, g, r in zip(("y", "running_mean", "running_var", "dx", "dweight", "dbias"), (*got, *got_g),
                          (*want, *want_g)):
        assert g.dtype == jnp.float32, name
        assert_close(g, r, RTOL, name)


def test_is_the_onednn_primitive_where_it_applies(forward):
    for dtype in (jnp.float32, jnp.bfloat16):
        x = jnp.ones((4, 3, 3, 2), dtype)
        text = jax.jit(jax.grad(lambda x: jnp.sum(onednn.batch_norm(x, None, None, train=True)[0] ** 2))).lower(
            x).as_text()
        applies = dtype == jnp.float32 or isa.bfloat16()      # bfloat16 needs the CPU's bfloat16
        assert ("jaxcnn_onednn_batch_norm_backward" in text) == applies, (dtype, isa.name())
        on_onednn = applies and (dtype == jnp.bfloat16 or forward == "onednn forward")
        assert ("jaxcnn_onednn_batch_norm_forward" in text) == on_onednn, dtype


def test_without_affine_parameters_or_running_statistics(x64, forward):
    x, *_, dy = _data((6, 4, 4, 3), seed=1)
    got, _ = _run(lambda x, rm, rv, w, b, **kw: onednn.batch_norm(x, None, None, **kw),
                  jnp.asarray(x, jnp.float32), None, None, None, None, jnp.asarray(dy, jnp.float32))
    want, _ = _run(lambda x, rm, rv, w, b, **kw: ops.batch_norm(x, None, None, **kw),
                   jnp.asarray(x), None, None, None, None, jnp.asarray(dy))
    assert got[1] is None and got[2] is None
    assert_close(got[0], want[0], RTOL, "y")


def test_matches_torch_forward_backward_and_running_statistics(forward):
    x, rm, rv, w, b, dy = _data((8, 6, 5, 4), seed=2)
    tx = torch.tensor(to_first(x), dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=True, momentum=0.1, eps=1e-3)
    ty.backward(torch.tensor(to_first(dy)))
    (y, m, v), (dx, dw, db) = _run(onednn.batch_norm, *(jnp.asarray(a, jnp.float32) for a in (x, rm, rv, w, b)),
                                   jnp.asarray(dy, jnp.float32))
    for name, g, r in (("y", y, to_last(ty.detach().numpy())), ("running_mean", m, trm.numpy()),
                       ("running_var", v, trv.numpy()), ("dx", dx, to_last(tx.grad.numpy())),
                       ("dweight", dw, tw.grad.numpy()), ("dbias", db, tb.grad.numpy())):
        assert_close(g, r, RTOL, name)


@pytest.mark.usefixtures("onednn_bfloat16")
def test_bfloat16_against_float32_on_the_same_input():
    x, rm, rv, w, b, dy = _data((16, 7, 7, 32), seed=3)
    xb = jnp.asarray(x, jnp.bfloat16)
    args = [jnp.asarray(a, jnp.float32) for a in (rm, rv, w, b)]
    (y, m, v), (dx, dw, db) = _run(onednn.batch_norm, xb, *args, jnp.asarray(dy, jnp.float32))
    (yr, mr, vr), (dxr, dwr, dbr) = _run(ops.batch_norm, xb.astype(jnp.float32), *args, jnp.asarray(dy, jnp.float32))
    assert y.dtype == dx.dtype == jnp.bfloat16 and dw.dtype == db.dtype == m.dtype == jnp.float32
    for name, g, r in (("y", y, yr), ("running_mean", m, mr), ("running_var", v, vr), ("dx", dx, dxr),
                       ("dweight", dw, dwr), ("dbias", db, dbr)):
        assert_close(g.astype(jnp.float32), r, BF16_RTOL, name)
    assert "jaxcnn_onednn_batch_norm_forward_bf16" in jax.jit(
        lambda x: onednn.batch_norm(x, None, None, train=True)[0]).lower(xb).as_text()


@pytest.mark.parametrize("case", ["nchw", "float64", "eval", "axis_name"])
def test_other_cases_are_the_xla_formulation(x64, case):
    x, rm, rv, w, b, _ = _data((4, 5, 5, 3), seed=4)
    dtype = jnp.float64 if case == "float64" else jnp.float32
    x, rm, rv, w, b = (jnp.asarray(a, dtype) for a in (x, rm, rv, w, b))
    kw = dict(train=case != "eval", momentum=0.1, eps=1e-3)
    if case == "nchw":
        x, kw = jnp.moveaxis(x, -1, 1), dict(kw, layout="NCHW")
    assert not onednn.batch_norm_applies(x, kw.get("layout", "NHWC"), "i" if case == "axis_name" else None) \
        or case == "eval"
    if case == "axis_name":
        def run(fn):
            return jax.vmap(lambda x: fn(x, rm, rv, w, b, axis_name="i", **kw), axis_name="i")(x[None])
    else:
        def run(fn):
            return fn(x, rm, rv, w, b, **kw)
    text = jax.jit(lambda x_: run(onednn.batch_norm)).lower(x).as_text()
    assert "jaxcnn_onednn" not in text
    for g, r in zip(run(onednn.batch_norm), run(xla.batch_norm)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(r))


def test_bad_input_fails_with_the_ops_errors():
    x = jnp.ones((4, 3, 3, 2), jnp.float32)
    with pytest.raises(ValueError) as got:
        onednn.batch_norm(x, jnp.zeros(3), jnp.ones(3), train=True)
    with pytest.raises(ValueError) as want:
        ops.batch_norm(x, jnp.zeros(3), jnp.ones(3), train=True)
    assert str(got.value) == str(want.value)
    with pytest.raises(ValueError, match="batch_norm"):
        onednn.batch_norm(x[:1, :1, :1], jnp.zeros(2), jnp.ones(2), train=True)   # one value per channel


def test_float32_forward_is_the_xla_formulations_exactly():
    x, rm, rv, w, b, _ = _data((8, 6, 6, 5), seed=5)
    args = [jnp.asarray(a, jnp.float32) for a in (x, rm, rv, w, b)]
    for g, r in zip(onednn.batch_norm(*args, train=True, eps=1e-3), xla.batch_norm(*args, train=True, eps=1e-3)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(r))


def test_auto_mode_trains_through_it_to_autodiffs_gradients(forward):
    assert dispatch.DEFAULT_TABLE["batch_norm"] == "onednn"
    from jaxcnn.layers import BatchNorm, Conv, Relu
    from jaxcnn.combinators import serial
    net = serial(("conv", Conv(4, 3, padding="same")), ("act", Relu()), ("bn", BatchNorm()))
    _, params, state = net.init(jax.random.PRNGKey(0), (8, 6, 6, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 6, 6, 3))

    def loss(p, mode):
        with backprop_mode(mode):
            y, new_state = net.apply(p, state, x, train=True)
        return jnp.sum(jnp.sin(y)), new_state
    with backprop_mode("auto"):
        text = jax.jit(lambda p: jax.grad(lambda p: loss(p, "auto")[0])(p)).lower(params).as_text()
    assert "jaxcnn_onednn_batch_norm_backward" in text
    (g, s), (r, rs) = (jax.jit(jax.grad(lambda p, m=m: loss(p, m), has_aux=True))(params) for m in ("auto", "autodiff"))
    for a, b_ in zip(jax.tree.leaves((g, s)), jax.tree.leaves((r, rs))):
        assert_close(a, b_, 1e-4)
