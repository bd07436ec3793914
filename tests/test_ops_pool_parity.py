"""Randomised parity of the pooling ops with torch.nn.functional (``layout="NCHW"``),
their input gradients, and the channels-last layout.

Every config draws rank (1-3-D), kernel, stride (incl. the default ``None``), padding
up to half the kernel, dilation, ceil_mode, count_include_pad, divisor_override, and
sizes from 1 (tiny, kernel == input size) upward. Each config is jitted once (forward +
``jax.vjp``) because XLA:CPU compile time, not the arithmetic, dominates.
"""
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import jaxcnn.ops as F
from _parity import assert_close, to_first, to_last, torch_vjp

T_MAX = {1: TF.max_pool1d, 2: TF.max_pool2d, 3: TF.max_pool3d}
T_AVG = {1: TF.avg_pool1d, 2: TF.avg_pool2d, 3: TF.avg_pool3d}
T_LP = {1: TF.lp_pool1d, 2: TF.lp_pool2d, 3: TF.lp_pool3d}
T_AAVG = {1: TF.adaptive_avg_pool1d, 2: TF.adaptive_avg_pool2d, 3: TF.adaptive_avg_pool3d}
T_AMAX = {1: TF.adaptive_max_pool1d, 2: TF.adaptive_max_pool2d, 3: TF.adaptive_max_pool3d}
T_UNPOOL = {1: TF.max_unpool1d, 2: TF.max_unpool2d, 3: TF.max_unpool3d}


def jit_vjp(fn, x, g):
    """(y, dx) of sum(fn(x) * g), forward and backward in one compilation."""
    def both(x, g):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(g)[0]
    return jax.jit(both)(x, g)


def random_pool_config(rng, with_dilation):
    """Random window geometry that torch accepts (resampled until it does)."""
    while True:
        rank = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        kmax = {1: 5, 2: 4, 3: 3}[rank]
        kernel = tuple(int(k) for k in rng.integers(1, kmax + 1, rank))
        stride = None if rng.random() < 0.25 else tuple(int(s) for s in rng.integers(1, 4, rank))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        dilation = tuple(int(d) for d in rng.integers(1, 3, rank)) if with_dilation and rng.random() < 0.4 \
            else (1,) * rank
        eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        smax = {1: 10, 2: 7, 3: 5}[rank]
        if rng.random() < 0.15:
            sizes = list(eff)                                  # kernel == input size
        else:
            sizes = [int(rng.integers(1, smax + 1)) for _ in range(rank)]
        if any(n + 2 * p < e for n, p, e in zip(sizes, padding, eff)):
            continue
        return dict(rank=rank, kernel=kernel, stride=stride, padding=padding, dilation=dilation, sizes=sizes,
                    ceil_mode=bool(rng.random() < 0.5), batch=int(rng.integers(1, 3)),
                    channels=int(rng.integers(1, 4)))


def _x(cfg, rng, dtype):
    return rng.standard_normal((cfg["batch"], cfg["channels"], *cfg["sizes"])).astype(dtype)


def check_max_pool(cfg, rng, dtype, rtol, layout):
    """Output, input gradient, indices and the max_unpool round trip vs torch; all of
    ours in one jitted call."""
    x = _x(cfg, rng, dtype)
    kernel, rank = cfg["kernel"], cfg["rank"]
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], ceil_mode=cfg["ceil_mode"])
    yt, it = T_MAX[rank](torch.tensor(x), kernel, return_indices=True, **kw)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    y_ref, (dx_ref,) = torch_vjp(lambda t: T_MAX[rank](t, kernel, **kw), [x], g)
    try:   # torch only accepts an output_size within a stride of its default size
        un_ref = T_UNPOOL[rank](yt, it, kernel, cfg["stride"], cfg["padding"], output_size=x.shape[2:]).numpy()
    except (ValueError, RuntimeError):         # ... and indices inside that size
        un_ref = None
    last = layout == "NHWC"

    def everything(v, g):
        y, vjp = jax.vjp(lambda u: F.max_pool(u, kernel, layout=layout, **kw), v)
        _, idx = F.max_pool(v, kernel, return_indices=True, layout=layout, **kw)
        un = F.max_unpool(y, idx, kernel, cfg["stride"], cfg["padding"], output_size=x.shape[2:], layout=layout)
        return y, vjp(g)[0], idx, un

    outs = jax.jit(everything)(*((to_last(x), to_last(g)) if last else (x, g)))
    y, dx, idx, un = [to_first(o) for o in outs] if last else outs
    if np.isinf(y_ref).any():
        # a dilated window that sees only padding: torch gives -inf there, and so do we
        np.testing.assert_array_equal(np.isneginf(np.asarray(y)), np.isneginf(y_ref))
        return
    assert_close(y, y_ref, rtol, f"max_pool {layout} {cfg}")
    assert_close(dx, dx_ref, rtol, f"max_pool {layout} dx {cfg}")
    np.testing.assert_array_equal(np.asarray(idx), it.numpy(), err_msg=f"max_pool indices {cfg}")
    if un_ref is not None:
        assert_close(un, un_ref, rtol, f"max_unpool {layout} {cfg}")


def check_avg_pool(cfg, rng, dtype, rtol, layout):
    x = _x(cfg, rng, dtype)
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], ceil_mode=cfg["ceil_mode"],
              count_include_pad=cfg["count_include_pad"])
    if cfg["divisor_override"] is not None:
        kw["divisor_override"] = cfg["divisor_override"]
    tfn = T_AVG[cfg["rank"]]
    if cfg["rank"] == 1:           # avg_pool1d has no divisor_override
        assert "divisor_override" not in kw
    shape = tuple(tfn(torch.tensor(x), cfg["kernel"], **kw).shape)
    g = rng.standard_normal(shape).astype(dtype)
    y_ref, (dx_ref,) = torch_vjp(lambda t: tfn(t, cfg["kernel"], **kw), [x], g)
    last = layout == "NHWC"
    y, dx = jit_vjp(lambda v: F.avg_pool(v, cfg["kernel"], layout=layout, **kw),
                    to_last(x) if last else x, to_last(g) if last else g)
    if last:
        y, dx = to_first(y), to_first(dx)
    assert_close(y, y_ref, rtol, f"avg_pool {layout} {cfg}")
    assert_close(dx, dx_ref, rtol, f"avg_pool {layout} dx {cfg}")


@pytest.mark.parametrize("chunk", [0, pytest.param(1, marks=pytest.mark.slow)])   # 20 by default, 40 in all
def test_max_pool_random_parity(chunk):
    rng = np.random.default_rng(3000 + chunk)
    for i in range(20):
        check_max_pool(random_pool_config(rng, True), rng, np.float32, 1e-5, ("NCHW", "NHWC")[i % 2])


@pytest.mark.parametrize("chunk", range(2))
def test_avg_pool_random_parity(chunk):
    rng = np.random.default_rng(4000 + chunk)
    for i in range(20):
        cfg = random_pool_config(rng, False)
        while cfg["rank"] == 3 and any(n < k for n, k in zip(cfg["sizes"], cfg["kernel"])):
            cfg = random_pool_config(rng, False)     # torch's avg_pool3d rejects these despite padding
        cfg["count_include_pad"] = bool(rng.random() < 0.5)
        cfg["divisor_override"] = int(rng.integers(1, 7)) if cfg["rank"] > 1 and rng.random() < 0.3 else None
        check_avg_pool(cfg, rng, np.float32, 1e-5, ("NCHW", "NHWC")[i % 2])


def test_pool_random_parity_float64(x64):
    rng = np.random.default_rng(5000)
    for i in range(10):
        layout = ("NCHW", "NHWC")[i % 2]
        check_max_pool(random_pool_config(rng, True), rng, np.float64, 1e-10, layout)
        cfg = random_pool_config(rng, False)
        while cfg["rank"] == 3 and any(n < k for n, k in zip(cfg["sizes"], cfg["kernel"])):
            cfg = random_pool_config(rng, False)
        cfg["count_include_pad"] = bool(i % 3)
        cfg["divisor_override"] = 5 if cfg["rank"] > 1 and i % 4 == 0 else None
        check_avg_pool(cfg, rng, np.float64, 1e-10, layout)


def test_pool_generator_covers_options():
    rng = np.random.default_rng(3000)
    cfgs = [random_pool_config(rng, True) for _ in range(200)]
    assert {c["rank"] for c in cfgs} == {1, 2, 3}
    assert any(c["stride"] is None for c in cfgs) and any(c["ceil_mode"] for c in cfgs)
    assert any(max(c["dilation"]) > 1 for c in cfgs) and any(max(c["padding"]) > 0 for c in cfgs)
    assert any(min(c["sizes"]) == 1 for c in cfgs)
    # ceil_mode changes the output size in some configs (the extra, partial window)
    assert any(F.pool_output_size(n, k, s or k, p, d, True) != F.pool_output_size(n, k, s or k, p, d, False)
               for c in cfgs for n, k, s, p, d in zip(c["sizes"], c["kernel"], c["stride"] or c["kernel"],
                                                      c["padding"], c["dilation"]))


def test_lp_pool_random_parity():
    rng = np.random.default_rng(6000)
    for i in range(20):
        rank = (1, 2, 3)[i % 3]
        kernel = tuple(int(k) for k in rng.integers(1, 4, rank))
        stride = None if i % 4 == 0 else tuple(int(s) for s in rng.integers(1, 3, rank))
        sizes = [int(k + rng.integers(0, 4)) for k in kernel]
        p = float((1.0, 2.0, 3.0, 1.5)[i % 4])
        ceil_mode = bool(i % 2)
        x = np.abs(rng.standard_normal((2, 2, *sizes))).astype(np.float32) + 0.1
        tfn = T_LP[rank]
        ks = kernel if rank > 1 else kernel[0]
        ss = stride if (stride is None or rank > 1) else stride[0]
        shape = tuple(tfn(torch.tensor(x), p, ks, ss, ceil_mode).shape)
        g = rng.standard_normal(shape).astype(np.float32)
        y_ref, (dx_ref,) = torch_vjp(lambda t: tfn(t, p, ks, ss, ceil_mode), [x], g)
        layout = ("NCHW", "NHWC")[i % 2]
        last = layout == "NHWC"
        y, dx = jit_vjp(lambda v: F.lp_pool(v, p, kernel, stride, ceil_mode, layout=layout),
                        to_last(x) if last else x, to_last(g) if last else g)
        if last:
            y, dx = to_first(y), to_first(dx)
        assert_close(y, y_ref, 1e-5, f"lp_pool p={p} {kernel} {stride} {sizes} ceil={ceil_mode}")
        assert_close(dx, dx_ref, 1e-4, f"lp_pool dx p={p} {kernel} {stride} {sizes}")


def test_adaptive_pools_random_parity():
    rng = np.random.default_rng(7000)
    for i in range(18):
        rank = (1, 2, 3)[i % 3]
        sizes = [int(n) for n in rng.integers(1, 8 if rank < 3 else 5, rank)]
        outs = [int(rng.integers(1, n + 3)) for n in sizes]        # also larger than the input
        if i % 5 == 0 and rank > 1:
            outs[0] = None                                         # None keeps that size
        x = rng.standard_normal((int(rng.integers(1, 3)), 2, *sizes)).astype(np.float32)
        o = outs if rank > 1 else outs[0]
        layout = ("NCHW", "NHWC")[i % 2]
        last = layout == "NHWC"
        g = rng.standard_normal(tuple(T_AAVG[rank](torch.tensor(x), o).shape)).astype(np.float32)
        ya_ref, (da_ref,) = torch_vjp(lambda t: T_AAVG[rank](t, o), [x], g)
        ym_ref, (dm_ref,) = torch_vjp(lambda t: T_AMAX[rank](t, o), [x], g)
        i_ref = T_AMAX[rank](torch.tensor(x), o, return_indices=True)[1].numpy()

        def everything(v, g):
            ya, vjp_a = jax.vjp(lambda u: F.adaptive_avg_pool(u, tuple(outs), layout=layout), v)
            ym, vjp_m = jax.vjp(lambda u: F.adaptive_max_pool(u, tuple(outs), layout=layout), v)
            idx = F.adaptive_max_pool(v, tuple(outs), return_indices=True, layout=layout)[1]
            return ya, vjp_a(g)[0], ym, vjp_m(g)[0], idx

        res = jax.jit(everything)(*((to_last(x), to_last(g)) if last else (x, g)))
        ya, da, ym, dm, idx = [to_first(r) for r in res] if last else res
        what = f"adaptive {layout} {sizes}->{outs}"
        assert_close(ya, ya_ref, 1e-5, what + " avg")
        assert_close(da, da_ref, 1e-5, what + " avg dx")
        assert_close(ym, ym_ref, 1e-5, what + " max")
        assert_close(dm, dm_ref, 1e-5, what + " max dx")
        np.testing.assert_array_equal(np.asarray(idx), i_ref, err_msg=what + " indices")


def test_global_pools_match_adaptive_to_one():
    rng = np.random.default_rng(8000)
    for rank in (1, 2, 3):
        x = rng.standard_normal((2, 3, *(4, 3, 2)[:rank])).astype(np.float32)
        xt = torch.tensor(x)
        assert_close(F.global_avg_pool(x, layout="NCHW"), T_AAVG[rank](xt, 1).flatten(1).numpy(), 1e-6)
        assert_close(F.global_max_pool(x, layout="NCHW"), T_AMAX[rank](xt, 1).flatten(1).numpy(), 1e-6)
        assert_close(F.global_avg_pool(to_last(x)), T_AAVG[rank](xt, 1).flatten(1).numpy(), 1e-6)
        assert F.global_max_pool(to_last(x), keepdims=True).shape == (2,) + (1,) * rank + (3,)


def test_max_pool_ties_and_nan_follow_torch():
    """Tied maxima: the first in scan order; NaN propagates (torch)."""
    x = np.array([[[[1, 3, 3, 0], [3, 3, 2, 2], [0, 1, 5, 5], [5, 5, 5, 5]]]], np.float32)
    y, i = F.max_pool(x, 2, return_indices=True, layout="NCHW")
    yt, it = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(np.asarray(y), yt.numpy())
    np.testing.assert_array_equal(np.asarray(i), it.numpy())
    ya, ia = F.adaptive_max_pool(x, (3, 3), return_indices=True, layout="NCHW")
    yat, iat = TF.adaptive_max_pool2d(torch.tensor(x), (3, 3), return_indices=True)
    np.testing.assert_array_equal(np.asarray(ia), iat.numpy())
    xn = x.copy()
    xn[0, 0, 0, 1] = np.nan
    y = np.asarray(F.max_pool(xn, 2, layout="NCHW"))
    assert np.isnan(y[0, 0, 0, 0]) and np.all(np.isfinite(y.ravel()[1:]))
