"""kernels.onednn.conv_sigmoid (issue 22, fused convolutions): one oneDNN forward with the
bias and a logistic post-op, and oneDNN's gradients, equals autodiff of
``jax.nn.sigmoid(lax conv + b)`` -- against lax in float64 and torch's conv2d + sigmoid in
float64, bfloat16 against a float32 reference -- for strides, dilations, groups, 1-D,
unbatched and bias-free convs. ``serial`` runs LeNet-5's Conv -> sigmoid pairs through it
under "auto" only (its step's values equal autodiff's in float32 to rounding); other modes
and inspection trace the unfused ops; an unknown activation is refused."""
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
from jaxcnn.layers import Activation, Conv, Dense, Flatten, recording
from jaxcnn.train import create_train_state, make_train_step

from _parity import assert_close, conv_arrays, conv_vjp, to_first

RTOL = 2e-5          # float32 against float64, as in test_kernels_onednn_fused.py
BF16_RTOL = 1e-2     # one bfloat16 rounding of a float32 accumulation, as there

CASES = [
    ((4, 10, 9, 6), (3, 3, 6, 8), dict(padding=1), True),
    ((2, 12, 12, 1), (5, 5, 1, 6), dict(padding=2), True),                                  # LeNet-5's conv1
    ((3, 11, 9, 6), (3, 2, 3, 8), dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2), True),
    ((3, 13, 4), (4, 4, 5), dict(stride=3, padding="same"), True),                          # 1-D
    ((7, 8, 3), (3, 3, 3, 5), dict(padding="valid"), True),                                 # unbatched
    ((4, 10, 9, 6), (3, 3, 6, 8), dict(padding=1, dilation=2), False),                      # no bias
]


def _fused(kw):
    return jax.jit(lambda x, w, b: onednn.conv_sigmoid(x, w, b, **kw))


def _reference(kw):
    return lambda x, w, b: ops.sigmoid(ops.conv(x, w, b, **kw))


def _arrays(rng, x_shape, w_shape, bias):
    return conv_arrays(rng, x_shape, w_shape, bias, w_scale=1 / 3)   # pre-activations of a few units


@pytest.mark.parametrize("x_shape,w_shape,kw,bias", CASES)
def test_values_and_gradients_match_lax_in_float64(x_shape, w_shape, kw, bias, x64):
    rng = np.random.default_rng(0)
    x, w, b = _arrays(rng, x_shape, w_shape, bias)
    f32 = [None if a is None else jnp.asarray(a, jnp.float32) for a in (x, w, b)]
    dy = rng.standard_normal(jax.eval_shape(_fused(kw), *f32).shape)
    got_y, got = conv_vjp(_fused(kw), *f32, jnp.asarray(dy, jnp.float32))
    ref_y, ref = conv_vjp(_reference(kw), *(None if a is None else jnp.asarray(a) for a in (x, w, b)), jnp.asarray(dy))
    assert got_y.dtype == jnp.float32 and ref_y.dtype == jnp.float64
    assert 0.05 < float(jnp.std(ref_y))                  # not saturated: the derivative matters
    assert_close(got_y, ref_y, RTOL, "y")
    for g, r, name in zip(got, ref, ("dx", "dw", "db")):
        assert g.dtype == jnp.float32
        assert_close(g, r, RTOL, name)


def test_matches_torch_conv2d_sigmoid_in_float64():
    rng = np.random.default_rng(1)
    x, w, b = _arrays(rng, (3, 12, 10, 8), (3, 3, 4, 6), True)
    tx, tb = torch.tensor(to_first(x), requires_grad=True), torch.tensor(b, requires_grad=True)
    tw = torch.tensor(np.transpose(w, (3, 2, 0, 1)), requires_grad=True)
    ty = torch.sigmoid(torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=(1, 1), dilation=(1, 2), groups=2))
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    kw = dict(stride=2, padding=1, dilation=(1, 2), groups=2)
    y, (dx, dw, db) = conv_vjp(_fused(kw), *(jnp.asarray(a, jnp.float32) for a in (x, w, b)),
                           jnp.asarray(np.moveaxis(dy, 1, -1), jnp.float32))
    assert_close(to_first(y), ty.detach().numpy(), RTOL, "y")
    assert_close(to_first(dx), tx.grad.numpy(), RTOL, "dx")
    assert_close(np.transpose(np.asarray(dw), (3, 2, 0, 1)), tw.grad.numpy(), RTOL, "dw")
    assert_close(db, tb.grad.numpy(), RTOL, "db")


@pytest.mark.parametrize("x_shape,w_shape,kw,bias", [CASES[0], CASES[1], CASES[-1]])
@pytest.mark.usefixtures("onednn_bfloat16")
def test_bfloat16_matches_a_float32_reference(x_shape, w_shape, kw, bias):
    rng = np.random.default_rng(3)
    bf = [None if a is None else jnp.asarray(a, jnp.bfloat16) for a in _arrays(rng, x_shape, w_shape, bias)]
    f32 = [None if a is None else a.astype(jnp.float32) for a in bf]
    dy = jnp.asarray(rng.standard_normal(jax.eval_shape(_fused(kw), *bf).shape), jnp.bfloat16)
    got_y, got = conv_vjp(_fused(kw), *bf, dy)
    ref_y, ref = conv_vjp(_reference(kw), *f32, dy.astype(jnp.float32))
    assert got_y.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in got)
    assert_close(got_y.astype(jnp.float32), ref_y, BF16_RTOL, "y")
    for g, r, name in zip(got, ref, ("dx", "dw", "db")):
        assert_close(g.astype(jnp.float32), r, BF16_RTOL, name)


def test_the_logistic_post_op_is_what_runs():
    x, w, b = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones((4,))
    text = jax.jit(jax.grad(lambda x, w, b: onednn.conv_sigmoid(x, w, b, padding=1).sum(), argnums=(0, 1, 2))
                   ).lower(x, w, b).as_text()
    assert text.count("@jaxcnn_onednn_conv_bias_forward(") == 1 and "activation = 2 : i64" in text
    assert "logistic" not in text                        # no XLA sigmoid left


def test_an_unknown_activation_is_refused():
    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"conv_bias: activation must be one of \[None, 'relu', 'sigmoid'\], got 'tanh'"):
        onednn.conv_bias(x, w, None, activation="tanh")


def test_off_its_path_it_is_sigmoid_of_the_unfused_conv():
    args = (jnp.ones((2, 3, 6, 6)), jnp.ones((4, 3, 3, 3)) / 9, jnp.ones(4))
    assert "ffi_call" not in str(jax.make_jaxpr(lambda *a: onednn.conv_sigmoid(*a, layout="NCHW"))(*args))
    np.testing.assert_array_equal(onednn.conv_sigmoid(*args, layout="NCHW"),
                                  ops.sigmoid(onednn.conv(*args, layout="NCHW")))


# ---- the wiring: serial's Conv -> sigmoid pairs ----

def _lenet5_step(**kwargs):
    model = models.create("lenet5")
    tx = optax.sgd(0.1)
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), (4, 28, 28, 1))
    batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (4, 28, 28, 1)), "label": jnp.arange(4)}
    return make_train_step(model, ops.cross_entropy, tx, **kwargs), (ts, batch, jax.random.PRNGKey(2))


def test_lenet5_auto_step_runs_its_conv_sigmoid_pairs_fused():
    raw, args = _lenet5_step(backprop="auto")
    raw_unfused, _ = _lenet5_step(backprop="auto", auto_table={"conv_sigmoid": "autodiff"})
    fused_hlo, unfused_hlo = (jax.jit(f).lower(*args).as_text() for f in (raw, raw_unfused))
    assert fused_hlo.count("@jaxcnn_onednn_conv_bias_forward(") == 2 and fused_hlo.count("activation = 2 : i64") == 2
    # their bias gradients from oneDNN's weight-gradient primitive (fused.DB_IN_ONEDNN_FOR)
    assert fused_hlo.count("@jaxcnn_onednn_conv_weight_bias_grad(") == 2
    assert "jaxcnn_onednn_conv_bias_forward" not in unfused_hlo
    assert unfused_hlo.count("@jaxcnn_onednn_conv_forward(") == 2
    (new, metrics), (new_ref, metrics_ref) = jax.jit(raw)(*args), jax.jit(raw_unfused)(*args)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(new_ref.params)):
        assert_close(a, b, RTOL)
    assert_close(metrics["loss"], metrics_ref["loss"], RTOL)


def _small():
    return serial(("conv1", Conv(4, 3, padding=1)), ("act1", Activation("sigmoid")), ("conv2", Conv(4, 3)),
                  ("act2", Activation("sigmoid")), ("flat", Flatten()), ("fc", Dense(3)))


@pytest.mark.parametrize("mode,fused", [("auto", 2), ("autodiff", 0), ("explicit", 0)])
def test_only_auto_fuses_and_inspection_never_does(mode, fused):
    layer = _small()
    x = jnp.ones((2, 8, 8, 3))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)

    def loss(params):
        return jnp.sum(layer.apply(params, state, x, train=True)[0] ** 2)
    with backprop_mode(mode):
        text = str(jax.make_jaxpr(jax.grad(loss))(params))
        with recording() as records:
            watched = str(jax.make_jaxpr(lambda p: layer.apply(p, state, x)[0])(params))
    assert text.count("jaxcnn_onednn_conv_bias_forward") == fused
    assert "conv_bias_forward" not in watched
    assert [r.path[-1] for r in records] == ["conv1", "act1", "conv2", "act2", "flat", "fc"]
    assert dispatch.DEFAULT_TABLE["conv_sigmoid"] == "onednn"
