"""kernels.onednn.conv_relu (issue 22, fused convolutions): one oneDNN forward with the bias
and ReLU as post-ops, and oneDNN's gradients (the weight gradient with the bias gradient),
equals autodiff of ``jax.nn.relu(lax conv + b)`` -- against lax in float64 and torch's
conv2d + relu in float64, bfloat16 against a float32 reference, the derivative 0 at
exactly 0 -- for strides, dilations, groups, 1-D / 3-D, unbatched and bias-free convs;
off oneDNN's path it is relu of the unfused conv. ``serial`` runs a model's Conv -> ReLU
pairs through it under "auto" only (fmnist_cnn's step holds the fused calls and no XLA
ReLU for them); "autodiff" and "explicit" trace exactly the unfused programs; inspection
(recording / tapping) is never fused; errors still name the Conv."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxcnn import dispatch, models, ops
from jaxcnn.combinators import serial
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import onednn
from jaxcnn.kernels.onednn import fused as fused_module, isa
from jaxcnn.layers import Conv, Dense, Flatten, LayerError, Relu, recording
from jaxcnn.layers.base import elementwise, tapping
from jaxcnn.train import create_train_state, make_train_step
from jaxcnn.ops.random import normal

from _parity import assert_close, conv_arrays, conv_vjp, to_first

# float32 against float64: each output sums at most 3*3*6 = 54 products (the gradients a
# few hundred), so float32 rounding stays near 1e-6 of the result's scale; 2e-5 (as in
# test_kernels_onednn.py) leaves summation-order noise room and nothing more.
RTOL = 2e-5
# bfloat16: every result is rounded once to bfloat16 (relative step 2^-8 = 0.0039) from a
# float32 accumulation on the same bfloat16 inputs; 1e-2 of the scale (as in
# test_kernels_onednn_bf16.py) -- a bfloat16 accumulation or a wrong tap misses it widely.
BF16_RTOL = 1e-2

CASES = [
    ((4, 10, 9, 6), (3, 3, 6, 8), dict(padding=1), True),                                   # fmnist_cnn-like
    ((3, 11, 9, 6), (3, 2, 3, 8), dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2), True),
    ((2, 9, 9, 1), (5, 5, 1, 6), dict(padding=2), True),                                    # one input channel
    ((2, 8, 8, 12), (3, 3, 1, 12), dict(padding=1, stride=2, groups=12), True),             # depthwise
    ((3, 13, 4), (4, 4, 5), dict(stride=3, padding="same"), True),                          # 1-D
    ((2, 5, 6, 4, 3), (2, 3, 2, 3, 4), dict(stride=(1, 2, 1), padding=(1, 0, 1)), True),    # 3-D
    ((7, 8, 3), (3, 3, 3, 5), dict(padding="valid"), True),                                 # unbatched
    ((4, 10, 9, 6), (3, 3, 6, 8), dict(padding=1, dilation=2), False),                      # no bias
]


def _fused(kw):
    return jax.jit(lambda x, w, b: onednn.conv_relu(x, w, b, **kw))


def _reference(kw):
    return lambda x, w, b: ops.relu(ops.conv(x, w, b, **kw))


def test_the_library_builds_and_loads():
    assert onednn.load(), onednn.reason()


@pytest.mark.parametrize("x_shape,w_shape,kw,bias", CASES)
def test_values_and_gradients_match_lax_in_float64(x_shape, w_shape, kw, bias, x64):
    rng = np.random.default_rng(0)
    x, w, b = conv_arrays(rng, x_shape, w_shape, bias)
    f32 = [None if a is None else jnp.asarray(a, jnp.float32) for a in (x, w, b)]
    y = _fused(kw)(*f32)
    dy = rng.standard_normal(y.shape)
    got_y, got = conv_vjp(_fused(kw), *f32, jnp.asarray(dy, jnp.float32))
    ref_y, ref = conv_vjp(_reference(kw), *(None if a is None else jnp.asarray(a) for a in (x, w, b)), jnp.asarray(dy))
    assert y.dtype == jnp.float32 and ref_y.dtype == jnp.float64
    assert 0.2 < float(jnp.mean(ref_y > 0)) < 0.8          # the ReLU masks a real part of dy
    assert_close(got_y, ref_y, RTOL, "y")
    for g, r, name in zip(got, ref, ("dx", "dw", "db")):
        assert g.dtype == jnp.float32
        assert_close(g, r, RTOL, name)


def test_matches_torch_conv2d_relu_in_float64():
    rng = np.random.default_rng(1)
    x, w, b = conv_arrays(rng, (3, 12, 10, 8), (3, 3, 4, 6), True)
    kw = dict(stride=2, padding=1, dilation=(1, 2), groups=2)
    tx, tb = torch.tensor(to_first(x), requires_grad=True), torch.tensor(b, requires_grad=True)
    tw = torch.tensor(np.transpose(w, (3, 2, 0, 1)), requires_grad=True)
    ty = torch.relu(torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=(1, 1), dilation=(1, 2), groups=2))
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    y, (dx, dw, db) = conv_vjp(_fused(kw), *(jnp.asarray(a, jnp.float32) for a in (x, w, b)),
                           jnp.asarray(np.moveaxis(dy, 1, -1), jnp.float32))
    assert_close(to_first(y), ty.detach().numpy(), RTOL, "y")
    assert_close(to_first(dx), tx.grad.numpy(), RTOL, "dx")
    assert_close(np.transpose(np.asarray(dw), (3, 2, 0, 1)), tw.grad.numpy(), RTOL, "dw")
    assert_close(db, tb.grad.numpy(), RTOL, "db")


def test_the_derivative_at_zero_is_jax_nn_relus():
    """Small integers make many pre-activations exactly 0: there the gradient is 0, as
    autodiff of jax.nn.relu (and torch) gives; a ``y >= 0`` mask would pass dy through."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.integers(-1, 2, (2, 6, 6, 3)), jnp.float32)
    w = jnp.asarray(rng.integers(-1, 2, (3, 3, 3, 4)), jnp.float32)
    b = jnp.asarray([0.0, 1.0, -1.0, 0.0], jnp.float32)
    kw = dict(padding=1)
    pre = ops.conv(x, w, b, **kw)
    assert int(jnp.sum(pre == 0)) > 20
    dy = jnp.asarray(rng.standard_normal(pre.shape), jnp.float32)
    got_y, got = conv_vjp(_fused(kw), x, w, b, dy)
    ref_y, ref = conv_vjp(jax.jit(_reference(kw)), x, w, b, dy)
    np.testing.assert_array_equal(got_y, ref_y)              # integer sums: exact in float32
    for g, r, name in zip(got, ref, ("dx", "dw", "db")):
        assert_close(g, r, RTOL, name)


@pytest.mark.parametrize("x_shape,w_shape,kw,bias", [CASES[0], CASES[1], CASES[-1],
                                                     ((16, 14, 14, 32), (3, 3, 32, 64), dict(padding=1), True)])
@pytest.mark.usefixtures("onednn_bfloat16")
def test_bfloat16_matches_a_float32_reference(x_shape, w_shape, kw, bias):
    rng = np.random.default_rng(3)
    bf = [None if a is None else jnp.asarray(a, jnp.bfloat16) for a in conv_arrays(rng, x_shape, w_shape, bias)]
    f32 = [None if a is None else a.astype(jnp.float32) for a in bf]     # the same values exactly
    y = _fused(kw)(*bf)
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.bfloat16)
    got_y, got = conv_vjp(_fused(kw), *bf, dy)
    ref_y, ref = conv_vjp(_reference(kw), *f32, dy.astype(jnp.float32))
    assert got_y.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in got)
    assert_close(got_y.astype(jnp.float32), ref_y, BF16_RTOL, "y")
    for g, r, name in zip(got, ref, ("dx", "dw", "db")):
        assert_close(g.astype(jnp.float32), r, BF16_RTOL, name)


def _calls(stablehlo_text, target):
    """How many custom calls to ``target`` a lowered (StableHLO) program makes."""
    return stablehlo_text.count(f"@{target}(")


def _weight_grad_target(db_in_onednn):
    return "jaxcnn_onednn_conv_weight_bias_grad" if db_in_onednn else "jaxcnn_onednn_conv_weight_grad"


@pytest.fixture(params=[False, True], ids=["db_xla", "db_onednn"])
def db_in_onednn(request, monkeypatch):
    """Both places the bias gradient can come from (read when a function is traced)."""
    monkeypatch.setattr(fused_module, "BIAS_GRAD_IN_ONEDNN", request.param)
    return request.param


def test_the_fused_custom_calls_are_what_runs(db_in_onednn):
    x, w, b = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones((4,))
    text = jax.jit(jax.grad(lambda x, w, b: onednn.conv_relu(x, w, b, padding=1).sum(), argnums=(0, 1, 2))
                   ).lower(x, w, b).as_text()
    for target in ("jaxcnn_onednn_conv_bias_forward", "jaxcnn_onednn_conv_input_grad",
                   _weight_grad_target(db_in_onednn)):
        assert _calls(text, target) == 1
    assert _calls(text, "jaxcnn_onednn_conv_forward") == _calls(text, _weight_grad_target(not db_in_onednn)) == 0


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, RTOL), (jnp.bfloat16, BF16_RTOL)])
def test_the_bias_gradient_from_onednn_matches_too(dtype, rtol, monkeypatch, request):
    """conv.cc's weight + bias gradient primitive (BIAS_GRAD_IN_ONEDNN, not the default)."""
    if dtype == jnp.bfloat16:
        request.getfixturevalue("onednn_bfloat16")
    monkeypatch.setattr(fused_module, "BIAS_GRAD_IN_ONEDNN", True)
    x_shape, w_shape, kw, _ = CASES[1]
    rng = np.random.default_rng(4)
    args = [jnp.asarray(a, dtype) for a in conv_arrays(rng, x_shape, w_shape, True)]
    dy = jnp.asarray(rng.standard_normal(jax.eval_shape(_reference(kw), *args).shape), dtype)
    assert "weight_bias_grad" in jax.jit(lambda *a: conv_vjp(_fused(kw), *a, dy)[1]).lower(*args).as_text()
    _, got = conv_vjp(_fused(kw), *args, dy)
    _, ref = conv_vjp(_reference(kw), *(a.astype(jnp.float32) for a in args), dy.astype(jnp.float32))
    for g, r, name in zip(got, ref, ("dx", "dw", "db")):
        assert_close(g.astype(jnp.float32), r, rtol, name)


@pytest.mark.parametrize("args,kwargs", [
    ((jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones(4)), dict(padding_mode="reflect", padding=1)),
    ((jnp.ones((2, 3, 6, 6)), jnp.ones((4, 3, 3, 3)), jnp.ones(4)), dict(layout="NCHW")),
])
def test_off_its_path_it_is_relu_of_the_unfused_conv(args, kwargs):
    text = str(jax.make_jaxpr(lambda *a: onednn.conv_relu(*a, **kwargs))(*args))
    assert "ffi_call" not in text
    np.testing.assert_array_equal(onednn.conv_relu(*args, **kwargs), ops.relu(onednn.conv(*args, **kwargs)))


def test_float64_is_not_sent_to_onednn(x64):
    x, w, b = jnp.ones((2, 6, 6, 3)), -jnp.ones((3, 3, 3, 4)), jnp.arange(4.0)
    assert "ffi_call" not in str(jax.make_jaxpr(lambda *a: onednn.conv_relu(*a, padding=1))(x, w, b))
    y = onednn.conv_relu(x.astype(jnp.float32), w.astype(jnp.float32), b, padding=1)   # the bias promotes
    assert y.dtype == jnp.float64
    np.testing.assert_array_equal(y, ops.relu(ops.conv(x.astype(jnp.float32), w.astype(jnp.float32), b, padding=1)))


def test_other_platforms_lower_xlas_convolution():
    x, w, b = (jax.ShapeDtypeStruct(s, jnp.float32) for s in ((2, 6, 6, 3), (3, 3, 3, 4), (4,)))
    fn = jax.jit(jax.grad(lambda x, w, b: onednn.conv_relu(x, w, b, padding=1).sum(), argnums=(0, 1, 2)))
    text = jax.export.export(fn, platforms=["cuda"])(x, w, b).mlir_module()
    assert "jaxcnn_onednn" not in text and "convolution" in text


# ---- the wiring: serial's Conv -> ReLU pairs under the backprop modes ----

def _ops_traced(step, args):
    """{op: calls} of the conv and relu ops (and fused pairs) ``step`` traces through dispatch."""
    seen = []
    with dispatch.observe(lambda name, a, kw: seen.append(name)):
        jax.make_jaxpr(lambda *a: step(*a))(*args)      # a new function: traced afresh, not from jit's cache
    return {op: seen.count(op) for op in ("conv", "relu", "conv_relu") if op in seen}


def _fmnist_step(**kwargs):
    model = models.create("fmnist_cnn")
    tx = optax.sgd(0.01, momentum=0.9)
    shape = (4, 28, 28, 1)
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), shape)
    batch = {"image": normal(jax.random.PRNGKey(1), shape), "label": jnp.arange(4) % 10}
    return make_train_step(model, ops.cross_entropy, tx, **kwargs), (ts, batch, jax.random.PRNGKey(2))


def test_fmnist_cnn_auto_step_runs_its_conv_relu_pairs_fused():
    raw, args = _fmnist_step(backprop="auto")
    raw_unfused, _ = _fmnist_step(backprop="auto", auto_table={"conv_relu": "autodiff"})
    step, unfused = jax.jit(raw), jax.jit(raw_unfused)
    hlo = step.lower(*args).as_text()
    # all four conv(bias) -> ReLU pairs fused: no plain forward; dw (and db) as the kernel chose
    weight_grad = _weight_grad_target(fused_module.BIAS_GRAD_IN_ONEDNN)
    assert _calls(hlo, "jaxcnn_onednn_conv_bias_forward") == _calls(hlo, weight_grad) == 4
    assert _calls(hlo, "jaxcnn_onednn_conv_forward") == 0
    assert _calls(unfused.lower(*args).as_text(), "jaxcnn_onednn_conv_forward") == 4
    # each takes the bias and applies the ReLU itself: XLA's only ReLU left is fc1's
    operand = r"%[\w#]+"   # a value, or one result of a multi-result op (oneDNN's batch norm)
    fused_calls = re.findall(rf"@jaxcnn_onednn_conv_bias_forward\({operand}, {operand}, {operand}\).*activation = 1 : i64",
                             hlo)
    assert len(fused_calls) == 4
    assert _ops_traced(raw, args) == {"conv_relu": 4, "relu": 1}
    assert _ops_traced(raw_unfused, args) == {"conv": 4, "relu": 5}
    # the first conv's input gradient (data) is dropped, as unfused
    assert step.lower(*args).compile().as_text().count('custom_call_target="jaxcnn_onednn_conv_input_grad"') == 3
    (new, metrics), (new_ref, metrics_ref) = step(*args), unfused(*args)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(new_ref.params)):
        assert_close(a, b, RTOL)
    assert_close(metrics["loss"], metrics_ref["loss"], RTOL)


def test_bf16_train_step_takes_the_bf16_fused_call():
    step, args = _fmnist_step(backprop="auto", precision="bf16")
    hlo = jax.jit(step).lower(*args).as_text()
    assert _calls(hlo, "jaxcnn_onednn_conv_bias_forward_bf16") == (4 if isa.bfloat16() else 0), isa.name()


def _small(relu):
    return serial(("conv1", Conv(4, 3, padding=1)), ("act1", relu()), ("conv2", Conv(4, 3)), ("act2", relu()),
                  ("flat", Flatten()), ("fc", Dense(3)))


def _unregistered_relu():
    """The same computation as Relu(), but not a layer the fusion registry knows."""
    return elementwise("ReLU", lambda x: dispatch.relu(x), {"activation": "relu"})


def _grad_jaxpr(layer, mode):
    x = jnp.ones((2, 8, 8, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)

    def loss(params):
        return jnp.sum(layer.apply(params, state, x, train=True)[0] ** 2)
    with backprop_mode(mode):
        return str(jax.make_jaxpr(jax.grad(loss))(params)), params


@pytest.mark.parametrize("mode", ["autodiff", "explicit"])
def test_other_modes_trace_exactly_the_unfused_program(mode):
    fusible, params = _grad_jaxpr(_small(Relu), mode)
    plain, plain_params = _grad_jaxpr(_small(_unregistered_relu), mode)
    assert jax.tree.structure(params) == jax.tree.structure(plain_params)
    assert fusible == plain and "ffi_call" not in fusible


def test_auto_fuses_only_registered_pairs():
    fused, _ = _grad_jaxpr(_small(Relu), "auto")
    plain, _ = _grad_jaxpr(_small(_unregistered_relu), "auto")
    assert fused.count("jaxcnn_onednn_conv_bias_forward") == 2 and "jaxcnn_onednn_conv_bias_forward" not in plain


def test_inspection_sees_the_unfused_layers():
    """recording (summary, torch import) and tapping (activations, Grad-CAM) read each
    child's output: no fusion while they are active, every layer recorded."""
    layer = _small(Relu)
    x = jnp.ones((2, 8, 8, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)
    with backprop_mode("auto"):
        with recording() as records:
            text = str(jax.make_jaxpr(lambda p: layer.apply(p, state, x)[0])(params))
        assert [r.path[-1] for r in records] == ["conv1", "act1", "conv2", "act2", "flat", "fc"]
        assert "conv_bias_forward" not in text
        seen = []
        with tapping(lambda path, y: seen.append(path[-1]) or y):
            layer.apply(params, state, x)
        assert seen[:2] == ["conv1", "act1"]


def test_an_error_in_a_fused_pair_names_the_conv():
    layer = _small(Relu)
    _, params, state = layer.init(jax.random.PRNGKey(0), (2, 8, 8, 3))
    with backprop_mode("auto"), pytest.raises(LayerError, match="'conv1'"):
        layer.apply(params, state, jnp.ones((2, 8, 8, 5)))
