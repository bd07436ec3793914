"""Parity of activations, batch norm, cross-entropy, pad, upsample, channel shuffle and
dropout with torch (values and gradients), plus dropout statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import jaxcnn.ops as F
from _parity import assert_close, to_first, to_last, torch_vjp


def jit_vjp(fn, args, g):
    def both(args, g):
        y, vjp = jax.vjp(fn, *args)
        return y, vjp(g)
    return jax.jit(both)(args, g)


# --- activations -----------------------------------------------------------------------
ACTIVATION_CASES = [
    ("relu", F.relu, TF.relu),
    ("relu6", F.relu6, TF.relu6),
    ("leaky_relu", F.leaky_relu, TF.leaky_relu),
    ("leaky_relu_0.2", lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    ("sigmoid", F.sigmoid, torch.sigmoid),
    ("tanh", F.tanh, torch.tanh),
    ("elu", F.elu, TF.elu),
    ("elu_0.5", lambda x: F.elu(x, 0.5), lambda x: TF.elu(x, 0.5)),
    ("selu", F.selu, TF.selu),
    ("gelu", F.gelu, TF.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    ("silu", F.silu, TF.silu),
    ("softplus", F.softplus, TF.softplus),
    ("softplus_b2_t3", lambda x: F.softplus(x, 2.0, 3.0), lambda x: TF.softplus(x, 2.0, 3.0)),
    ("softplus_b0.5_t1", lambda x: F.softplus(x, 0.5, 1.0), lambda x: TF.softplus(x, 0.5, 1.0)),
    ("hardsigmoid", F.hardsigmoid, TF.hardsigmoid),
    ("hardswish", F.hardswish, TF.hardswish),
    ("softmax", F.softmax, lambda x: TF.softmax(x, -1)),
    ("softmax_axis1", lambda x: F.softmax(x, axis=1), lambda x: TF.softmax(x, 1)),
    ("log_softmax", F.log_softmax, lambda x: TF.log_softmax(x, -1)),
    ("log_softmax_axis0", lambda x: F.log_softmax(x, axis=0), lambda x: TF.log_softmax(x, 0)),
    ("identity", F.identity, lambda x: x * 1),
]


@pytest.mark.parametrize("name,ours,theirs", ACTIVATION_CASES, ids=[c[0] for c in ACTIVATION_CASES])
def test_activation_parity(name, ours, theirs):
    """Values and gradients on random inputs, large values, and the exact kink points
    (0, +-3, 6, softplus thresholds) where the one-sided derivative must be torch's."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    kinks = np.array([0.0, -3.0, 3.0, 6.0, 1.5, 0.5, 2.0, -0.0, 25.0, -25.0, 1e-3, -1e-3], np.float32)
    x = np.concatenate([rng.standard_normal(36).astype(np.float32) * 4, kinks]).reshape(6, 8)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y, (dx,) = jit_vjp(ours, (x,), g)
    y_ref, (dx_ref,) = torch_vjp(theirs, (x,), g)
    assert_close(y, y_ref, 1e-5, name)
    assert_close(dx, dx_ref, 1e-5, name + " grad")


def test_activation_parity_float64(x64):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(40) * 4, [0.0, -3.0, 3.0, 6.0]]).reshape(4, 11)
    for name, ours, theirs in ACTIVATION_CASES:
        y_ref, (dx_ref,) = torch_vjp(theirs, (x,), np.ones_like(x))
        y, vjp = jax.vjp(ours, jnp.asarray(x))
        assert y.dtype == jnp.float64
        assert_close(y, y_ref, 1e-10, name)
        # torch's float64 hardsigmoid backward multiplies by a float32 1/6
        assert_close(vjp(jnp.ones_like(y))[0], dx_ref, 1e-7 if name == "hardsigmoid" else 1e-10, name + " grad")


TORCH_BY_NAME = {"relu": TF.relu, "relu6": TF.relu6, "leaky_relu": TF.leaky_relu, "elu": TF.elu, "selu": TF.selu,
                 "gelu": TF.gelu, "silu": TF.silu, "softplus": TF.softplus, "hardswish": TF.hardswish,
                 "hardsigmoid": TF.hardsigmoid, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                 "softmax": lambda t: TF.softmax(t, -1), "log_softmax": lambda t: TF.log_softmax(t, -1),
                 "identity": lambda t: t}


def test_get_activation_names_resolve_to_torchs_function_of_that_name():
    """Each name gives the activation torch calls by that name (default arguments), not
    merely some entry of the table: a swapped or mistyped entry shows in the values."""
    x = np.linspace(-7.0, 7.0, 29, dtype=np.float32).reshape(1, 29)
    for name, theirs in TORCH_BY_NAME.items():
        assert_close(F.get_activation(name)(x), theirs(torch.tensor(x)).numpy(), 1e-5, name)


def test_get_activation_unknown_lists_names():
    with pytest.raises(ValueError, match=r"unknown activation 'relu7'.*'relu6'"):
        F.get_activation("relu7")


# --- batch norm ------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_batch_norm_train_and_eval_parity(rank):
    rng = np.random.default_rng(10 + rank)
    for trial, (momentum, eps, offset, affine) in enumerate([(0.1, 1e-5, 0.0, True), (0.3, 1e-3, 50.0, True),
                                                             (0.01, 1e-5, -20.0, False)]):
        shape = (4, 3) + (5, 4, 3)[:rank]
        x = (rng.standard_normal(shape) * 2 + offset).astype(np.float32)
        rm = rng.standard_normal(3).astype(np.float32)
        rv = (rng.random(3) + 0.5).astype(np.float32)
        w = rng.standard_normal(3).astype(np.float32) if affine else None
        b = rng.standard_normal(3).astype(np.float32) if affine else None
        g = rng.standard_normal(shape).astype(np.float32)
        for train in (True, False):
            rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
            args = (x,) + ((w, b) if affine else ())

            def tfn(xt, *wb):
                return TF.batch_norm(xt, rm_t, rv_t, *(wb or (None, None)), training=train, momentum=momentum,
                                     eps=eps)

            y_ref, grads_ref = torch_vjp(tfn, args, g)
            for layout in ("NCHW", "NHWC"):
                last = layout == "NHWC" and rank > 0

                def fn(xx, *wb):
                    return F.batch_norm(xx, jnp.asarray(rm), jnp.asarray(rv), *(wb or (None, None)), train=train,
                                        momentum=momentum, eps=eps, layout=layout if rank else "NHWC")

                xin = to_last(x) if last else x
                (y, nm, nv), vjp = jax.vjp(fn, xin, *args[1:])
                grads = vjp((jnp.asarray(to_last(g) if last else g), jnp.zeros(3), jnp.zeros(3)))
                if last:
                    y, grads = to_first(y), [to_first(grads[0])] + list(grads[1:])
                what = f"bn rank={rank} train={train} {layout} trial={trial}"
                assert_close(y, y_ref, 1e-5, what)
                assert_close(nm, rm_t.numpy(), 1e-5, what + " running_mean")
                assert_close(nv, rv_t.numpy(), 1e-5, what + " running_var")
                for got, ref in zip(grads, grads_ref):
                    assert_close(got, ref, 1e-4, what + " grad")
                if train:    # running stats moved (unbiased variance), and only in training
                    assert not np.allclose(nm, rm)
                else:
                    np.testing.assert_array_equal(nm, rm)
                    np.testing.assert_array_equal(nv, rv)


def test_batch_norm_float64(x64):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 2, 3, 3)) + 7
    rm, rv = np.zeros(2), np.ones(2)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    y_ref = TF.batch_norm(torch.tensor(x), rm_t, rv_t, training=True, momentum=0.2).numpy()
    y, nm, nv = F.batch_norm(x, rm, rv, train=True, momentum=0.2, layout="NCHW")
    assert y.dtype == jnp.float64
    assert_close(y, y_ref, 1e-10)
    assert_close(nm, rm_t.numpy(), 1e-10)
    assert_close(nv, rv_t.numpy(), 1e-10)


# --- cross entropy ---------------------------------------------------------------------
def test_cross_entropy_parity():
    rng = np.random.default_rng(20)
    for i in range(24):
        extra = () if i % 3 else (int(rng.integers(1, 4)),)
        n, c = int(rng.integers(1, 6)), int(rng.integers(2, 7))
        logits = (rng.standard_normal((n, *extra, c)) * 3).astype(np.float32)
        labels = rng.integers(0, c, (n, *extra))
        smoothing = float((0.0, 0.1, 0.35, 1.0)[i % 4])
        reduction = ("mean", "sum", "none")[i % 3]
        g = rng.standard_normal(() if reduction != "none" else (n, *extra)).astype(np.float32)

        def tfn(lt):
            lt = torch.movedim(lt, -1, 1)          # torch's class axis is 1
            return TF.cross_entropy(lt, torch.tensor(labels), label_smoothing=smoothing, reduction=reduction)

        y_ref, (d_ref,) = torch_vjp(tfn, (logits,), g)
        y, (d,) = jit_vjp(lambda lg: F.cross_entropy(lg, labels, label_smoothing=smoothing, reduction=reduction),
                          (logits,), g)
        what = f"ce n={n} extra={extra} c={c} ls={smoothing} {reduction}"
        assert_close(y, y_ref, 1e-5, what)
        assert_close(d, d_ref, 1e-5, what + " grad")


def test_accuracy_and_mse():
    logits = np.array([[0.1, 2.0, 0.3], [1.0, 0.0, -1.0], [0.0, 0.0, 5.0], [3.0, 4.0, 0.0]], np.float32)
    assert float(F.accuracy(logits, np.array([1, 0, 1, 1]))) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    for red in ("mean", "sum", "none"):
        assert_close(F.mse_loss(a, b, reduction=red),
                     TF.mse_loss(torch.tensor(a), torch.tensor(b), reduction=red).numpy(), 1e-6)


# --- pad -------------------------------------------------------------------------------
def test_pad_parity_all_modes():
    rng = np.random.default_rng(30)
    count = 0
    for i in range(40):
        mode = ("constant", "reflect", "replicate", "circular")[i % 4]
        npad = int(rng.integers(1, 4))
        if mode == "constant":
            ndim = int(rng.integers(npad, npad + 3))
            shape = tuple(int(s) for s in rng.integers(1, 6, ndim))
            pads = []
            for ax in range(npad):
                size = shape[ndim - 1 - ax]
                lo, hi = (int(v) for v in rng.integers(-2, 4, 2))
                while size + min(lo, 0) + min(hi, 0) < 1:        # keep something (negative = crop)
                    lo, hi = lo + 1, hi + 1
                pads += [lo, hi]
        else:
            ndim = npad + int(rng.integers(1, 3))                 # torch: (C, *sp) or (N, C, *sp)
            shape = tuple(int(s) for s in rng.integers(1, 6, ndim))
            pads = []
            for ax in range(npad):
                size = shape[ndim - 1 - ax]
                top = size - 1 if mode == "reflect" else (size if mode == "circular" else 3)
                pads += [int(v) for v in rng.integers(0, top + 1, 2)]
        x = rng.standard_normal(shape).astype(np.float32)
        value = float(rng.standard_normal()) if mode == "constant" else 0.0
        kw = dict(value=value) if mode == "constant" else {}
        g_shape = tuple(TF.pad(torch.tensor(x), pads, mode=mode, **kw).shape)
        g = rng.standard_normal(g_shape).astype(np.float32)
        y_ref, (dx_ref,) = torch_vjp(lambda t: TF.pad(t, pads, mode=mode, **kw), (x,), g)
        y, (dx,) = jit_vjp(lambda v: F.pad(v, pads, mode=mode, value=value), (x,), g)
        assert_close(y, y_ref, 1e-6, f"pad {mode} {shape} {pads}")
        assert_close(dx, dx_ref, 1e-6, f"pad {mode} grad {shape} {pads}")
        count += 1
    assert count == 40


def test_pad_negative_constant_crops():
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    for pads in ([-1, -2], [-1, 2, 1, -3], [0, 0, -3, 0]):
        np.testing.assert_array_equal(F.pad(x, pads), TF.pad(torch.tensor(x), pads).numpy())


# --- upsample --------------------------------------------------------------------------
def test_upsample_parity():
    rng = np.random.default_rng(40)
    for i in range(24):
        rank = (1, 2, 3)[i % 3]
        mode = ("nearest", ("linear", "bilinear", "trilinear")[rank - 1])[(i // 3) % 2]
        align = None if mode == "nearest" else bool((i // 6) % 2)
        sizes = [int(s) for s in rng.integers(1, 6 if rank < 3 else 4, rank)]
        if i % 4 < 2:
            size = [int(s) for s in rng.integers(1, 9, rank)]
            kw = dict(size=size)
        else:
            factors = [float(rng.choice([0.5, 1.0, 1.5, 2.0, 3.0, 2.5])) for _ in range(rank)]
            if any(int(np.floor(n * f)) < 1 for n, f in zip(sizes, factors)):
                factors = [2.0] * rank
            kw = dict(scale_factor=factors)
        x = rng.standard_normal((2, 2, *sizes)).astype(np.float32)
        tkw = dict(kw, mode=mode, align_corners=align)
        shape = tuple(TF.interpolate(torch.tensor(x), **tkw).shape)
        g = rng.standard_normal(shape).astype(np.float32)
        y_ref, (dx_ref,) = torch_vjp(lambda t: TF.interpolate(t, **tkw), (x,), g)
        layout = ("NCHW", "NHWC")[i % 2]
        last = layout == "NHWC"
        y, (dx,) = jit_vjp(lambda v: F.upsample(v, layout=layout, **tkw), (to_last(x) if last else x,),
                           to_last(g) if last else g)
        if last:
            y, dx = to_first(y), to_first(dx)
        what = f"upsample {layout} {sizes} {tkw}"
        assert_close(y, y_ref, 1e-5, what)
        assert_close(dx, dx_ref, 1e-5, what + " grad")


# --- channel shuffle -------------------------------------------------------------------
def _shuffle_reference(x, groups):
    """out[:, c] = x[:, (c % g) * (C // g) + c // g] (NCHW)."""
    c = x.shape[1]
    src = [(j % groups) * (c // groups) + j // groups for j in range(c)]
    return x[:, src]


def test_channel_shuffle_reference_and_torch():
    rng = np.random.default_rng(50)
    for c, groups in [(6, 2), (6, 3), (12, 4), (8, 8), (5, 1), (9, 3)]:
        x = rng.standard_normal((2, c, 3, 2)).astype(np.float32)
        ref = _shuffle_reference(x, groups)
        np.testing.assert_array_equal(F.channel_shuffle(x, groups, layout="NCHW"), ref)
        np.testing.assert_array_equal(torch.nn.ChannelShuffle(groups)(torch.tensor(x)).numpy(), ref)
        np.testing.assert_array_equal(to_first(F.channel_shuffle(to_last(x), groups)), ref)


# --- dropout ---------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_statistics(rate):
    x = jnp.ones((200, 500))
    key = jax.random.PRNGKey(0)
    y = F.dropout(key, x, rate, train=True)
    kept = np.asarray(y) != 0
    n = kept.size
    assert abs((1 - kept.mean()) - rate) < 5 * np.sqrt(rate * (1 - rate) / n)      # rate respected
    assert abs(float(y.mean()) - 1.0) < 5 * np.sqrt(rate / ((1 - rate) * n))      # mean preserved
    np.testing.assert_allclose(np.asarray(y)[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    np.testing.assert_array_equal(y, F.dropout(key, x, rate, train=True))          # deterministic per key
    assert not np.array_equal(y, F.dropout(jax.random.PRNGKey(1), x, rate, train=True))
    np.testing.assert_array_equal(F.dropout(key, x, rate, train=False), x)        # identity in eval
    np.testing.assert_array_equal(F.dropout(None, x, rate, train=False), x)


@pytest.mark.parametrize("shape", [(1,), (7, 3), (64, 125)])
def test_keep_mask_uses_both_halves_of_each_draw(shape):
    """Two 16-bit uniforms per 32-bit draw: odd sizes work, neighbours (the two halves of
    one draw) are uncorrelated, keep_prob 0 and 1 are exact."""
    from jaxcnn.ops.nn import keep_mask
    key = jax.random.PRNGKey(5)
    assert keep_mask(key, 1.0, shape).all() and not keep_mask(key, 0.0, shape).any()
    mask = np.asarray(keep_mask(key, 0.5, shape))
    assert mask.shape == shape and mask.dtype == np.bool_
    if mask.size >= 1000:
        flat = mask.ravel().astype(float)
        n = flat.size
        assert abs(flat.mean() - 0.5) < 5 * np.sqrt(0.25 / n)
        pairs = flat[: n // 2 * 2].reshape(-1, 2)                     # low and high half of one draw
        assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 5 / np.sqrt(len(pairs))
        assert abs(np.corrcoef(flat[1:-1:2], flat[2::2])[0, 1]) < 5 / np.sqrt(len(pairs))   # across draws


def test_spatial_dropout_drops_whole_maps():
    x = jnp.ones((64, 5, 4, 32))
    key = jax.random.PRNGKey(3)
    y = np.asarray(F.spatial_dropout(key, x, 0.5, train=True))
    per_map = y.reshape(64, 20, 32)
    assert np.all((per_map == 0).all(1) | (per_map == 2.0).all(1))     # a map is all kept or all dropped
    assert 0.4 < (per_map[:, 0] == 0).mean() < 0.6
    yf = np.asarray(F.spatial_dropout(key, jnp.moveaxis(x, -1, 1), 0.5, train=True, layout="NCHW"))
    assert np.all((yf == 0).all((2, 3)) | (yf == 2.0).all((2, 3)))
    np.testing.assert_array_equal(F.spatial_dropout(key, x, 0.5, train=False), x)
