"""Issue 25's features against torch in both layouts, and their explicit twins against
autodiff in float64: cross_entropy (weight, ignore_index, probability targets, class
axis), upsample's nearest-exact / bicubic / area modes, negative non-constant padding,
softmax dtype and 0-d inputs, dropout p=1, empty batch norm, max_pool indices under
jax.vjp, max_unpool's gradient with repeated indices."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import jaxcnn.ops as F
from jaxcnn import dispatch
from jaxcnn.dispatch import backprop_mode


def _vjp(fn, args, cot, mode="autodiff"):
    with backprop_mode(mode):
        y, vjp = jax.vjp(fn, *[jnp.asarray(a) for a in args])
        return np.asarray(y), [np.asarray(g) for g in vjp(jnp.asarray(cot))]


def _torch(fn, args, grad_mask):
    ts = [torch.tensor(a, requires_grad=m) for a, m in zip(args, grad_mask)]
    y = fn(*ts)
    cot = np.random.default_rng(1).standard_normal(tuple(y.shape))
    gs = torch.autograd.grad(y, [t for t in ts if t.requires_grad], torch.tensor(cot))
    return y.detach().numpy(), [g.numpy() for g in gs], cot


CE_CASES = list(itertools.product([(4, 3), (3,), (2, 3, 2, 2)], [False, True], [False, True], [-100, 1],
                                  ["mean", "sum", "none"], [0.0, 0.2]))


# each mode in one layout by default, the other two combinations under -m slow
@pytest.mark.parametrize("mode, layout", [("autodiff", "NCHW"), ("explicit", "NHWC"),
                                          pytest.param("autodiff", "NHWC", marks=pytest.mark.slow),
                                          pytest.param("explicit", "NCHW", marks=pytest.mark.slow)])
def test_cross_entropy_options_match_torch(x64, layout, mode):
    rng = np.random.default_rng(0)
    ns = dispatch if mode == "explicit" else F
    checked = 0
    for shape, prob, weighted, ignore, reduction, smoothing in CE_CASES:
        if prob and ignore != -100:
            continue
        ca = 0 if len(shape) == 1 else 1
        x = rng.standard_normal(shape)
        if prob:
            t = rng.random(shape)
            t /= t.sum(ca, keepdims=True)
        else:
            t = rng.integers(0, shape[ca], size=shape[:ca] + shape[ca + 1:])
            t.flat[0] = 0 if ignore == 1 else t.flat[0]        # never every row ignored
        w = rng.random(shape[ca]) + 0.5 if weighted else None
        ty, tg, cot = _torch(lambda a, b: TF.cross_entropy(a, b, None if w is None else torch.tensor(w),
                                                           ignore_index=ignore, reduction=reduction,
                                                           label_smoothing=smoothing), [x, t], [True, prob])
        move = (lambda a: a) if layout == "NCHW" else (lambda a: np.moveaxis(a, ca, -1))
        c = cot if (layout == "NCHW" or reduction != "none") else cot
        args = [move(x), move(t)] if prob else [move(x)]

        def fn(*a):
            return ns.cross_entropy(a[0], a[1] if prob else jnp.asarray(t), weight=None if w is None else jnp.asarray(w),
                                    ignore_index=ignore, reduction=reduction, label_smoothing=smoothing, layout=layout)
        y, gs = _vjp(fn, args, c, mode)
        np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-12)
        for g, want in zip(gs, tg):
            np.testing.assert_allclose(g, move(want), rtol=1e-10, atol=1e-12)
        checked += 1
    assert checked == 108


def test_cross_entropy_all_ignored_is_nan_with_zero_gradient(x64):
    for ns, mode in ((F, "autodiff"), (dispatch, "explicit")):
        y, (g,) = _vjp(lambda z: ns.cross_entropy(z, jnp.array([1, 1]), ignore_index=1), [np.ones((2, 3))], 1.0,
                       mode)
        assert np.isnan(y) and np.all(g == 0)


def test_cross_entropy_bad_weight_shape():
    with pytest.raises(ValueError, match=r"cross_entropy: weight must have shape \(3,\) for 3 classes, got \(2,\)"):
        F.cross_entropy(jnp.ones((2, 3)), jnp.array([0, 1]), weight=jnp.ones(2))


UPSAMPLE_SPECS = [dict(size=(3, 4)), dict(size=(9, 6)), dict(scale_factor=1.7), dict(scale_factor=0.6),
                  dict(scale_factor=(2.0, 0.5))]


@pytest.mark.parametrize("resize", ["nearest-exact", "bicubic", "area"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["autodiff", "explicit"])
def test_upsample_modes_match_torch(x64, resize, layout, mode):
    rng = np.random.default_rng(0)
    ns = dispatch if mode == "explicit" else F
    corners = [None, True, False] if resize == "bicubic" else [None]
    for spec, ac in itertools.product(UPSAMPLE_SPECS, corners):
        x = rng.standard_normal((2, 3, 5, 4))
        ty, (tg,), cot = _torch(lambda a: TF.interpolate(a, mode=resize, align_corners=ac, **spec), [x], [True])
        move = (lambda a: a) if layout == "NCHW" else (lambda a: np.moveaxis(a, 1, -1))
        y, (g,) = _vjp(lambda a: ns.upsample(a, mode=resize, align_corners=ac, layout=layout, **spec), [move(x)],
                       move(cot), mode)
        np.testing.assert_allclose(y, move(ty), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g, move(tg), rtol=1e-10, atol=1e-12)


def test_upsample_refusals():
    with pytest.raises(ValueError, match=r"upsample: antialias=True is not supported"):
        F.upsample(jnp.ones((1, 4, 4, 1)), size=(2, 2), mode="bilinear", antialias=True)
    with pytest.raises(ValueError, match=r"upsample: align_corners only applies to the linear and bicubic modes"):
        F.upsample(jnp.ones((1, 4, 4, 1)), size=(2, 2), mode="area", align_corners=True)


@pytest.mark.parametrize("pad_mode", ["replicate", "circular", "reflect", "constant"])
def test_negative_padding_matches_torch(x64, pad_mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5))
    for pads in [(-1, 1, -2, 1), (-2, -1, 2, 3), (2, -1, -1, 0), (-4, 4, 0, 0)]:
        if pad_mode == "circular" and pads == (-4, 4, 0, 0):
            # torch wraps 4 around a 1-wide cropped axis, copying from its own unwritten
            # output; jaxcnn refuses (docs/torch_parity.md)
            with pytest.raises(ValueError, match=r"pad: circular padding \(0, 4\) must not exceed the axis size 1"):
                F.pad(x, pads, pad_mode)
            continue
        try:
            ty, (tg,), cot = _torch(lambda a: TF.pad(a, pads, pad_mode), [x], [True])
        except RuntimeError:
            with pytest.raises(ValueError, match=r"pad: "):
                F.pad(x, pads, pad_mode)
            continue
        y, (g,) = _vjp(lambda a: F.pad(a, pads, pad_mode), [x], cot)
        np.testing.assert_allclose(y, ty)
        np.testing.assert_allclose(g, tg)
        # pad_spatial: the same crop on the spatial axes of an NHWC array
        last = np.moveaxis(x, 1, -1)
        spatial = [(pads[2], pads[3]), (pads[0], pads[1])]
        np.testing.assert_allclose(np.moveaxis(np.asarray(F.pad_spatial(last, spatial, pad_mode)), -1, 1), ty)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("mode", ["autodiff", "explicit"])
def test_softmax_dtype_and_scalar(x64, name, mode):
    ns = dispatch if mode == "explicit" else F
    tfn = getattr(torch, name)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    ty, (tg,), cot = _torch(lambda a: tfn(a, 1, dtype=torch.float64), [x], [True])
    y, (g,) = _vjp(lambda a: getattr(ns, name)(a, 1, dtype=jnp.float64), [x], cot, mode)
    assert y.dtype == np.float64 and g.dtype == np.float32
    np.testing.assert_allclose(y, ty, rtol=1e-12)
    np.testing.assert_allclose(g, tg, rtol=1e-6)
    s = np.float64(0.7)
    ty, (tg,), cot = _torch(lambda a: tfn(a, 0), [s], [True])
    y, (g,) = _vjp(lambda a: getattr(ns, name)(a, 0), [s], cot, mode)
    assert y.shape == () and np.allclose(y, ty) and np.allclose(g, tg)
    with pytest.raises(ValueError, match=rf"{name}: axis must be 0 or -1 for a 0-d input, got 1"):
        getattr(F, name)(jnp.float32(1.0), 1)


def test_flatten_scalar():
    assert F.flatten(jnp.float32(2.0), 0).shape == (1,)


@pytest.mark.parametrize("mode", ["autodiff", "explicit"])
def test_dropout_rate_one(x64, mode):
    ns = dispatch if mode == "explicit" else F
    x = jnp.arange(1.0, 7.0).reshape(1, 2, 3)
    with backprop_mode(mode):
        for fn in (lambda v: ns.dropout(jax.random.key(0), v, 1.0, train=True),
                   lambda v: ns.spatial_dropout(jax.random.key(0), v, 1.0, train=True)):
            y, vjp = jax.vjp(fn, x)
            assert np.all(np.asarray(y) == 0) and np.all(np.asarray(vjp(jnp.ones_like(x))[0]) == 0)
    assert np.all(F.dropout(None, x, 1.0, train=False) == x)
    with pytest.raises(ValueError, match=r"dropout: rate must be in \[0, 1\], got 1.5"):
        F.dropout(None, x, 1.5, train=True)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_batch_norm_empty_batch(x64, layout):
    shape = (0, 3, 4) if layout == "NCHW" else (0, 4, 3)
    rm, rv, w = jnp.arange(3.0), jnp.ones(3), jnp.ones(3)
    for ns, mode in ((F, "autodiff"), (dispatch, "explicit")):
        with backprop_mode(mode):
            (y, m, v), vjp = jax.vjp(lambda x, w: ns.batch_norm(x, rm, rv, w, None, train=True, layout=layout),
                                     jnp.zeros(shape), w)
            gx, gw = vjp((jnp.zeros(shape), jnp.zeros(3), jnp.zeros(3)))
        assert y.shape == shape and np.all(m == rm) and np.all(v == rv) and gx.shape == shape and np.all(gw == 0)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_pool_indices_differentiable_into_max_unpool(x64, layout):
    """SegNet's pattern: pooled values differentiated, indices kept for max_unpool."""
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    tx = torch.tensor(x, requires_grad=True)
    ty = TF.max_unpool2d(*TF.max_pool2d(tx, 2, return_indices=True), 2)
    cot = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    tg, = torch.autograd.grad(ty, tx, torch.tensor(cot))
    move = (lambda a: a) if layout == "NCHW" else (lambda a: np.moveaxis(a, 1, -1))
    for ns, mode in ((F, "autodiff"), (dispatch, "explicit")):
        y, (g,) = _vjp(lambda a: ns.max_unpool(*ns.max_pool(a, 2, return_indices=True, layout=layout), (2, 2),
                                               layout=layout), [move(x)], move(cot), mode)
        np.testing.assert_allclose(y, move(ty.detach().numpy()))
        np.testing.assert_allclose(g, move(tg.numpy()))


def test_max_unpool_repeated_indices_gradient(x64):
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 2))
    idx = np.array([[[[0, 0], [3, 3]], [[1, 1], [1, 2]]]])
    ty, (tg,), cot = _torch(lambda a: TF.max_unpool2d(a, torch.tensor(idx), 2), [x], [True])
    for ns, mode in ((F, "autodiff"), (dispatch, "explicit")):
        y, (g,) = _vjp(lambda a: ns.max_unpool(a, jnp.asarray(idx), (2, 2), layout="NCHW"), [x], cot, mode)
        np.testing.assert_allclose(g, tg)
