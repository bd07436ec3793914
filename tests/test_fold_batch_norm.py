"""Inference-mode BatchNorm folded into the convolution (issue 22 goal 4,
kernels.onednn.fold, dispatch.conv_bn_eval): under "auto", ``serial`` runs a Conv, the
BatchNorm after it and an optional ReLU at ``train=False`` as one convolution with
``w' = w * gamma / sqrt(var + eps)`` and ``b' = (b - mean) * scale + beta`` -- equal to the
unfused network in float64 (random statistics, gamma and beta; NHWC on oneDNN, NCHW on
lax's fallback; biases, strides, groups, depthwise, dilation, BatchNorms without affine),
to torch's ``fuse_conv_bn_weights``, and in its gradients; its state is returned unchanged.
A conv_bn_act chain's and MobileNetV2's evaluation programs hold the fused calls and no
BatchNorm arithmetic on activations. Training, "autodiff" and "explicit" trace exactly the
unfused programs; inspection (recording / tapping) sees every layer."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcnn import dispatch, models
from jaxcnn.combinators import serial
from jaxcnn.dispatch import backprop_mode
from jaxcnn.kernels import onednn
from jaxcnn.kernels.onednn import isa
from jaxcnn.layers import BatchNorm, Conv, LayerError, Relu, recording
from jaxcnn.layers.base import tapping
from jaxcnn.models.common import conv_bn_act
from jaxcnn.types import Layer

from _parity import assert_close, value_and_vjp

# float32 against float64: each output sums at most 3*3*6 = 54 products of O(1) values,
# then is scaled by gamma / sqrt(var + eps) <= 1.5 / sqrt(0.3) < 3 (random statistics
# below); float32 rounding of the folded weights and of the sum stays near 1e-6 of the
# result's scale, so 2e-5 (test_kernels_onednn_fused.py's) leaves summation-order room
# and nothing more -- a wrong channel's scale or a missing beta misses it by far.
RTOL = 2e-5
# bfloat16: the folded weights and the result are rounded to bfloat16 (step 2^-8); 1e-2
# of the scale, as test_kernels_onednn_bf16.py.
BF16_RTOL = 1e-2

FUSED = "jaxcnn_onednn_conv_bias_forward"

# (input shape, conv kwargs, BatchNorm kwargs, relu after the BatchNorm)
CASES = {
    "bias_relu": ((3, 10, 9, 6), dict(features=8, kernel_size=3, padding=1), {}, True),
    "no_bias_no_relu": ((3, 10, 9, 6), dict(features=8, kernel_size=3, padding=1, use_bias=False), {}, False),
    "depthwise_stride2": ((2, 11, 11, 6), dict(features=6, kernel_size=3, stride=2, padding=1, groups=6,
                                               use_bias=False), {}, True),
    "groups_dilation_no_affine": ((2, 12, 10, 6), dict(features=4, kernel_size=(3, 2), dilation=(2, 1), groups=2),
                                  dict(use_scale=False, use_bias=False), False),
    "1d": ((3, 13, 5), dict(features=4, kernel_size=4, stride=3, padding="same"), dict(eps=1e-3), True),
    "nchw": ((3, 6, 10, 9), dict(features=8, kernel_size=3, padding=1, layout="NCHW"), dict(layout="NCHW"), True),
}


def _block(conv_kw, bn_kw, relu):
    items = [("conv", Conv(**conv_kw)), ("bn", BatchNorm(**bn_kw))] + ([("act", Relu())] if relu else [])
    return serial(*items)


def _randomised(rng, params, state):
    """Params from the init replaced by N(0, 1) draws (so beta and the bias are not their
    defaults; gamma +-U(0.5, 1.5)) and running statistics mean ~ N(0, 1), var ~ U(0.3, 2):
    float64 numpy."""
    params = jax.tree.map(lambda a: rng.standard_normal(a.shape), params)
    if "bn" in params and "weight" in params["bn"]:
        shape = params["bn"]["weight"].shape
        params["bn"]["weight"] = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)
    state = {"bn": {"running_mean": rng.standard_normal(state["bn"]["running_mean"].shape),
                    "running_var": rng.uniform(0.3, 2.0, state["bn"]["running_var"].shape)}}
    return params, state


def _problem(case, seed=0):
    x_shape, conv_kw, bn_kw, relu = CASES[case]
    layer = _block(conv_kw, bn_kw, relu)
    _, params, state = layer.init(jax.random.PRNGKey(0), x_shape)
    rng = np.random.default_rng(seed)
    params, state = _randomised(rng, params, state)
    return layer, params, state, rng.standard_normal(x_shape)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


def _ops_traced(fn, *args):
    """{op: calls} of the dispatch ops (and fused runs) ``fn`` traces."""
    seen = []
    with dispatch.observe(lambda name, a, kw: seen.append(name)):
        jax.make_jaxpr(fn)(*args)
    return {op: seen.count(op) for op in sorted(set(seen))}


def _eval(layer):
    return lambda p, s, x: layer.apply(p, s, x, train=False)


FOLD = {"conv_bn_eval": "onednn"}   # folding is not in the default table (docs/performance.md)


def _auto(fn, table=None):
    """``fn`` traced under "auto" with folding on, and ``table``'s entries over that."""
    def traced(*args):
        with backprop_mode("auto"), dispatch.auto_choices({**FOLD, **(table or {})}):
            return fn(*args)
    return traced


@pytest.mark.parametrize("case", list(CASES))
def test_the_folded_eval_output_is_the_unfused_one_in_float64(case, x64):
    layer, params, state, x = _problem(case)
    p32, s32, x32 = _cast(params, jnp.float32), _cast(state, jnp.float32), jnp.asarray(x, jnp.float32)
    fused = jax.jit(_auto(_eval(layer)))
    y, new_state = fused(p32, s32, x32)
    ref, _ = _eval(layer)(_cast(params, jnp.float64), _cast(state, jnp.float64), jnp.asarray(x))  # ops, unfused
    assert y.dtype == jnp.float32 and ref.dtype == jnp.float64
    if CASES[case][3]:
        assert 0.2 < float(jnp.mean(ref > 0)) < 0.8          # the ReLU clips a real part
    assert_close(y, ref, RTOL, case)
    assert jax.tree.structure(new_state) == jax.tree.structure(s32)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(s32)):
        np.testing.assert_array_equal(a, b)                 # evaluation: the statistics as they were
    # the run went through the fold, as one convolution: oneDNN's on NHWC, lax's on NCHW
    assert _ops_traced(_auto(_eval(layer)), p32, s32, x32) == {"conv_bn_eval": 1}
    hlo = fused.lower(p32, s32, x32).as_text()
    assert hlo.count(f"@{FUSED}(") == (0 if case == "nchw" else 1)
    assert hlo.count("convolution") == (1 if case == "nchw" else 0)


def test_gradients_through_the_fold_are_the_unfused_ones_in_float64(x64):
    """An evaluation-mode forward may be differentiated (inputs' saliency, adversarial
    examples): the fold's arithmetic is autodiff's, the convolution's gradients oneDNN's."""
    layer, params, state, x = _problem("bias_relu", seed=1)
    y64 = _eval(layer)(_cast(params, jnp.float64), _cast(state, jnp.float64), jnp.asarray(x))[0]
    dy = np.random.default_rng(2).standard_normal(y64.shape)

    def run(p, s, x):
        return layer.apply(p, s, x, train=False)[0]
    got_y, got = value_and_vjp(_auto(run))(_cast(params, jnp.float32), _cast(state, jnp.float32),
                                           jnp.asarray(x, jnp.float32), jnp.asarray(dy, jnp.float32))
    ref_y, ref = value_and_vjp(run)(_cast(params, jnp.float64), _cast(state, jnp.float64), jnp.asarray(x),
                                    jnp.asarray(dy))
    assert_close(got_y, ref_y, RTOL, "y")
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ref)):
        assert_close(g, r, RTOL, jax.tree_util.keystr(path))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_the_fold_is_torchs_fuse_conv_bn_weights(layout, x64):
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((8, 3, 3, 3)), rng.standard_normal(8)          # torch's (O, I, kH, kW)
    mean, var = rng.standard_normal(8), rng.uniform(0.3, 2.0, 8)
    gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
    tw, tb = torch.nn.utils.fusion.fuse_conv_bn_weights(*(torch.tensor(a) for a in (w, b, mean, var)), 1e-3,
                                                         torch.tensor(gamma), torch.tensor(beta))
    ours = np.transpose(w, (2, 3, 1, 0)) if layout == "NHWC" else w
    got_w, got_b = onednn.fold_batch_norm(*(jnp.asarray(a) for a in (ours, b, mean, var, gamma, beta)), eps=1e-3,
                                          layout=layout)
    want_w = np.transpose(tw.detach().numpy(), (2, 3, 1, 0)) if layout == "NHWC" else tw.detach().numpy()
    np.testing.assert_allclose(got_w, want_w, rtol=1e-12)
    np.testing.assert_allclose(got_b, tb.detach().numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"running_var must have shape \(8,\)"):
        onednn.fold_batch_norm(jnp.asarray(ours), None, jnp.asarray(mean), jnp.ones(7), layout=layout)


def test_bfloat16_matches_a_float32_reference():
    """precision="bf16" casts params and state to bfloat16: the fold is computed in float32
    and the folded weights rounded once to bfloat16, the result bfloat16 as unfused."""
    layer, params, state, x = _problem("bias_relu", seed=4)
    bf = [_cast(t, jnp.bfloat16) for t in (params, state, x)]
    y, _ = jax.jit(_auto(_eval(layer)))(*bf)
    ref, _ = _eval(layer)(*(_cast(t, jnp.float32) for t in bf))                # the same values exactly
    assert y.dtype == jnp.bfloat16
    assert (f"@{FUSED}_bf16(" in jax.jit(_auto(_eval(layer))).lower(*bf).as_text()) == isa.bfloat16(), isa.name()
    assert_close(y.astype(jnp.float32), ref, BF16_RTOL)


def test_float64_is_folded_but_not_sent_to_onednn(x64):
    layer, params, state, x = _problem("bias_relu", seed=5)
    args = (_cast(params, jnp.float64), _cast(state, jnp.float64), jnp.asarray(x))
    assert "ffi_call" not in str(jax.make_jaxpr(_auto(_eval(layer)))(*args))
    assert _ops_traced(_auto(_eval(layer)), *args) == {"conv_bn_eval": 1}
    assert_close(_auto(_eval(layer))(*args)[0], _eval(layer)(*args)[0], 1e-12)


@pytest.mark.parametrize("layout,x_shape", [("NHWC", (9, 7, 3)), ("NCHW", (3, 9, 7))])
def test_unbatched_input_evaluates_as_unfused(layout, x_shape):
    """Unbatched NCHW: ops.batch_norm's channel axis (1) is the conv output's height, so
    there is nothing to fold -- conv_bn_eval computes what unfused does; NHWC folds."""
    layer = _block(dict(features=4, kernel_size=3, padding=1, layout=layout), dict(layout=layout), True)
    _, params, state = layer.init(jax.random.PRNGKey(0), x_shape)
    params, state = _cast(_randomised(np.random.default_rng(7), params, state), jnp.float32)
    x = jnp.asarray(np.random.default_rng(8).standard_normal(x_shape), jnp.float32)
    assert _ops_traced(_auto(_eval(layer)), params, state, x) == {"conv_bn_eval": 1}
    assert_close(_auto(_eval(layer))(params, state, x)[0], _eval(layer)(params, state, x)[0], 1e-5)


def test_other_platforms_lower_xlas_convolution():
    layer, params, state, x = _problem("bias_relu")
    args = [jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float32), t) for t in (params, state, x)]
    text = jax.export.export(jax.jit(_auto(_eval(layer))), platforms=["cuda"])(*args).mlir_module()
    assert "jaxcnn_onednn" not in text and "convolution" in text


# ---- the wiring: which runs serial folds, and where it must not ----

def _unregistered(layer):
    """The same computation as ``layer``, but not a layer the fusion registry knows."""
    return Layer(layer.init, layer.apply, layer.name, layer.meta)


def _chain(bn=BatchNorm):
    """Two conv_bn_act-like runs (with and without a ReLU) and a lone Conv -> ReLU."""
    return serial(("c1", Conv(6, 3, padding=1, use_bias=False)), ("b1", bn()), ("r1", Relu()),
                  ("c2", Conv(6, 1)), ("b2", bn()),
                  ("c3", Conv(4, 3)), ("r3", Relu()))


def _jaxpr(layer, mode, train, grad=False):
    x = jnp.ones((2, 8, 8, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)

    def loss(params):
        return jnp.sum(layer.apply(params, state, x, train=train)[0] ** 2)
    with backprop_mode(mode):
        return str(jax.make_jaxpr(jax.grad(loss) if grad else loss)(params))


@pytest.mark.parametrize("mode", ["autodiff", "explicit"])
def test_other_modes_trace_exactly_the_unfused_eval_program(mode):
    fusible = _jaxpr(_chain(), mode, train=False)
    plain = _jaxpr(_chain(lambda: _unregistered(BatchNorm())), mode, train=False)
    assert fusible == plain and "ffi_call" not in fusible


def test_training_traces_exactly_the_unfolded_program():
    """train=True needs the batch's statistics: the fused step is as before (its conv_relu
    pair only), forward and gradients."""
    fusible = _jaxpr(_chain(), "auto", train=True, grad=True)
    plain = _jaxpr(_chain(lambda: _unregistered(BatchNorm())), "auto", train=True, grad=True)
    assert fusible == plain and fusible.count(FUSED) == 1          # c3 -> r3


def test_serial_folds_each_conv_bn_run_and_keeps_the_conv_relu_pair():
    layer = _chain()
    x = jnp.ones((2, 8, 8, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)
    assert _ops_traced(_auto(_eval(layer)), params, state, x) == {"conv_bn_eval": 2, "conv_relu": 1}
    off = _ops_traced(_auto(_eval(layer), {"conv_bn_eval": "autodiff"}), params, state, x)
    assert off == {"batch_norm": 2, "conv": 2, "conv_relu": 1, "relu": 1}
    unregistered = _chain(lambda: _unregistered(BatchNorm()))
    assert _ops_traced(_auto(_eval(unregistered)), params, state, x) == off
    y, new_state = _auto(_eval(layer))(params, state, x)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_a_batch_norm_of_another_layout_is_not_folded():
    """NHWC conv, NCHW BatchNorm: it normalises axis 1 (a spatial axis here), not the
    conv's channels; serial leaves it alone."""
    layer = serial(Conv(8, 3, padding=1), BatchNorm(layout="NCHW"), Relu())
    x = jnp.ones((2, 8, 9, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)
    assert _ops_traced(_auto(_eval(layer)), params, state, x) == {"batch_norm": 1, "conv": 1, "relu": 1}


def _activation_arithmetic(hlo, batch):
    """StableHLO lines subtracting, multiplying or taking rsqrt of batch-shaped tensors:
    BatchNorm's evaluation arithmetic on activations (the fold's is on weights)."""
    return [line for line in hlo.splitlines()
            if re.search(rf"stablehlo\.(subtract|multiply|rsqrt) .*tensor<{batch}x", line)]


def test_a_conv_bn_act_chain_evaluates_as_fused_calls_only():
    """Each conv_bn_act block (torchvision's Conv2dNormActivation) one custom call, its
    result the next one's input: no XLA pass for the BatchNorm or the ReLU between them."""
    layer = serial(conv_bn_act(8, 3, 2), conv_bn_act(8, 3, groups=8), conv_bn_act(12, 1, act=None),
                   conv_bn_act(12, 3))
    x = jnp.ones((5, 16, 16, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)
    lowered = jax.jit(_auto(_eval(layer))).lower(params, state, x)
    hlo, compiled = lowered.as_text(), lowered.compile().as_text()
    calls = re.findall(rf'(%\S+) = \S+ custom-call\((%[^,]+), .*custom_call_target="{FUSED}".*activation = (\d) : i64',
                       compiled)
    assert [relu for _, _, relu in calls] == ["1", "1", "0", "1"]
    assert [arg for _, arg, _ in calls[1:]] == [out for out, _, _ in calls[:-1]]     # chained directly
    assert "jaxcnn_onednn_conv_forward" not in hlo and _activation_arithmetic(hlo, 5) == []
    unfolded = jax.jit(_auto(_eval(layer), {"conv_bn_eval": "autodiff"})).lower(params, state, x).as_text()
    assert unfolded.count("@jaxcnn_onednn_conv_forward(") == 4 and _activation_arithmetic(unfolded, 5)


@pytest.mark.slow
def test_mobilenet_v2_evaluates_every_conv_folded():
    """All 52 Conv -> BatchNorm runs of MobileNetV2 (its ReLU6s stay XLA clamps) folded;
    the output equals the unfolded network's."""
    model = models.create("mobilenet_v2", num_classes=10, width_mult=0.25)
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 32, 32, 3))
    params, state = model.init(jax.random.PRNGKey(0), x.shape)
    rng = np.random.default_rng(6)
    state = jax.tree.map(lambda a: jnp.asarray(a + rng.uniform(0.0, 0.5, a.shape), jnp.float32), state)
    fold, unfold = (jax.jit(_auto(_eval(model), table)) for table in (None, {"conv_bn_eval": "autodiff"}))
    assert _ops_traced(_auto(_eval(model)), params, state, x)["conv_bn_eval"] == 52
    hlo = fold.lower(params, state, x).as_text()
    assert hlo.count(f"@{FUSED}(") == 52 and "jaxcnn_onednn_conv_forward" not in hlo
    assert _activation_arithmetic(hlo, 5) == [] and _activation_arithmetic(unfold.lower(params, state, x).as_text(), 5)
    y, ref = fold(params, state, x)[0], unfold(params, state, x)[0]
    assert_close(y, ref, 1e-4)      # float32 both ways: 52 layers' rounding, not a float64 reference


def test_inspection_sees_every_layer_unfolded():
    """recording (summary, torch import) and tapping (activations, Grad-CAM) read each
    child's output: no folding while they are active."""
    layer = _chain()
    x = jnp.ones((2, 8, 8, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)
    with backprop_mode("auto"), dispatch.auto_choices(FOLD):
        with recording() as records:
            text = str(jax.make_jaxpr(lambda p: layer.apply(p, state, x)[0])(params))
        assert [r.path[-1] for r in records] == ["c1", "b1", "r1", "c2", "b2", "c3", "r3"]
        assert FUSED not in text
        seen = []
        with tapping(lambda path, y: seen.append(path[-1]) or y):
            layer.apply(params, state, x)
        assert seen == ["c1", "b1", "r1", "c2", "b2", "c3", "r3"]


def test_an_error_in_a_folded_run_names_the_conv():
    layer = _chain()
    _, params, state = layer.init(jax.random.PRNGKey(0), (2, 8, 8, 3))
    with backprop_mode("auto"), dispatch.auto_choices(FOLD), pytest.raises(LayerError, match="'c1'"):
        layer.apply(params, state, jnp.ones((2, 8, 8, 5)))
