"""Randomised parity of ``jaxcnn.ops.conv`` / ``conv_transpose`` with torch.

Hundreds of seeded random configurations (1-3-D, strides, dilation, groups incl.
depthwise, int / per-dim / (lo, hi) / string paddings, every padding mode, tiny and odd
sizes, kernel == input size) are compared with torch in ``layout="NCHW"``: outputs, and
the gradients w.r.t. input, weight and bias of ``sum(y * cotangent)``. Each config is
also run channels-last and must equal the transposed channels-first result.

The torch reference never goes through our padding resolution: explicit pads are built
here (TF-style split for ``"same"`` with stride > 1), applied with ``F.pad`` and fed to
``F.convNd``; symmetric paddings also go through ``nn.ConvNd(padding_mode=...)``.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import jaxcnn.ops as F
from _parity import assert_close, to_first, to_last

TORCH_CONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}
TORCH_CONVT = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}
TORCH_MODULE = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def weight_to_last(w):
    """torch (A, B, *k) -> channels-last (*k, B, A) for conv; for conv_transpose the NHWC
    weight (*k, C_in, C_out/g) comes from torch's (C_in, C_out/g, *k) by moving k first."""
    rank = w.ndim - 2
    return np.transpose(w, tuple(range(2, 2 + rank)) + (1, 0))


def tconv_weight_to_last(w):
    rank = w.ndim - 2
    return np.transpose(w, tuple(range(2, 2 + rank)) + (0, 1))


# --------------------------------------------------------------------------------------
# Config generation
# --------------------------------------------------------------------------------------
def _same_pads(sizes, eff, stride):
    """TF 'same': out = ceil(n/s); total = max((out-1)*s + eff - n, 0); extra on the high side."""
    pads = []
    for n, e, s in zip(sizes, eff, stride):
        out = (n + s - 1) // s
        total = max((out - 1) * s + e - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def random_conv_config(rng):
    """One random conv configuration that is valid for torch (resampled until it is)."""
    while True:
        rank = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        kind = rng.choice(["plain", "grouped", "depthwise"], p=[0.55, 0.25, 0.2])
        if kind == "plain":
            groups, cig, cog = 1, int(rng.integers(1, 4)), int(rng.integers(1, 4))
        elif kind == "grouped":
            groups, cig, cog = int(rng.integers(2, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
        else:
            groups, cig, cog = int(rng.integers(1, 5)), 1, int(rng.integers(1, 3))
        kmax = {1: 5, 2: 4, 3: 3}[rank]
        kernel = tuple(int(k) for k in rng.integers(1, kmax + 1, rank))
        stride = tuple(int(s) for s in rng.integers(1, 4, rank)) if rng.random() < 0.5 else (1,) * rank
        dilation = tuple(int(d) for d in rng.integers(1, 3, rank)) if rng.random() < 0.35 else (1,) * rank
        eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        mode = str(rng.choice(["zeros", "reflect", "replicate", "circular"], p=[0.4, 0.2, 0.2, 0.2]))
        ptype = str(rng.choice(["int", "perdim", "pairs", "valid", "same", "full", "causal"],
                               p=[0.2, 0.15, 0.2, 0.1, 0.2, 0.08, 0.07]))
        if ptype == "causal" and rank != 1:
            ptype = "same"
        smax = {1: 9, 2: 7, 3: 5}[rank]
        if rng.random() < 0.15:              # kernel == input size
            sizes = list(eff)
        else:
            sizes = [int(rng.integers(1, smax + 1)) for _ in range(rank)]
        if ptype == "int":
            p = int(rng.integers(0, 3))
            padding, pads = p, [(p, p)] * rank
        elif ptype == "perdim":
            ps = [int(v) for v in rng.integers(0, 3, rank)]
            padding, pads = tuple(ps), [(v, v) for v in ps]
        elif ptype == "pairs":
            pads = [(int(a), int(b)) for a, b in rng.integers(0, 3, (rank, 2))]
            padding = tuple(pads)
        elif ptype == "valid":
            padding, pads = "valid", [(0, 0)] * rank
        elif ptype == "same":
            padding, pads = "same", _same_pads(sizes, eff, stride)
        elif ptype == "full":
            padding, pads = "full", [(e - 1, e - 1) for e in eff]
        else:
            padding, pads = "causal", [(eff[0] - 1, 0)]
        if any(n + lo + hi < e for n, (lo, hi), e in zip(sizes, pads, eff)):
            continue
        if mode == "reflect" and any(lo >= n or hi >= n for n, (lo, hi) in zip(sizes, pads)):
            continue
        if mode == "circular" and any(lo > n or hi > n for n, (lo, hi) in zip(sizes, pads)):
            continue
        return dict(rank=rank, groups=groups, c_in=cig * groups, c_out=cog * groups, kernel=kernel,
                    stride=stride, dilation=dilation, padding=padding, pads=pads, mode=mode, sizes=sizes,
                    batch=int(rng.integers(1, 3)), bias=bool(rng.random() < 0.8))


def torch_conv_reference(cfg, x, w, b, g):
    """torch output and gradients (x, w, b) of sum(y * g), arrays in NCHW."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    rank, mode, pads = cfg["rank"], cfg["mode"], cfg["pads"]
    symmetric = all(lo == hi for lo, hi in pads)
    use_module = (symmetric and not isinstance(cfg["padding"], str)) or \
        (cfg["padding"] == "same" and all(s == 1 for s in cfg["stride"]))
    if use_module:
        # nn.ConvNd with padding_mode (and torch's own padding="same" for stride 1).
        tpad = "same" if cfg["padding"] == "same" else tuple(lo for lo, _ in pads)
        m = TORCH_MODULE[rank](cfg["c_in"], cfg["c_out"], cfg["kernel"], stride=cfg["stride"], padding=tpad,
                               dilation=cfg["dilation"], groups=cfg["groups"], bias=bt is not None,
                               padding_mode=mode, dtype=xt.dtype)
        m.weight = torch.nn.Parameter(wt)
        if bt is not None:
            m.bias = torch.nn.Parameter(bt)
        y = m(xt)
        params = [xt, m.weight] + ([m.bias] if bt is not None else [])
    else:
        flat = []
        for lo, hi in reversed(pads):     # F.pad lists pairs from the last axis
            flat += [lo, hi]
        xp = TF.pad(xt, flat, mode=TORCH_PAD_MODE[mode]) if any(flat) else xt
        y = TORCH_CONV[rank](xp, wt, bt, stride=cfg["stride"], padding=0, dilation=cfg["dilation"],
                             groups=cfg["groups"])
        params = [xt, wt] + ([bt] if bt is not None else [])
    grads = torch.autograd.grad(y, params, grad_outputs=torch.tensor(g))
    return y.detach().numpy(), [gr.numpy() for gr in grads]


def conv_arrays(cfg, rng, dtype):
    k = cfg["kernel"]
    x = rng.standard_normal((cfg["batch"], cfg["c_in"], *cfg["sizes"])).astype(dtype)
    w = rng.standard_normal((cfg["c_out"], cfg["c_in"] // cfg["groups"], *k)).astype(dtype)
    b = rng.standard_normal(cfg["c_out"]).astype(dtype) if cfg["bias"] else None
    return x, w, b


def run_jitted(fn, args, g):
    """Output and gradients of sum(fn(*args) * g) w.r.t. every arg, in ONE compilation.

    XLA:CPU compiles each distinct conv for ~0.1-0.4 s; jitting forward + backward
    together (instead of eager op-by-op dispatch) keeps hundreds of configs affordable.
    """
    def both(args, g):
        y, vjp = jax.vjp(fn, *args)
        return y, vjp(g)
    return jax.jit(both)(args, g)


def check_conv_config(cfg, rng, dtype, rtol, layout):
    """Output and x/w/b gradients vs torch, computed in ``layout`` (NHWC results are
    transposed back to NCHW before comparing)."""
    x, w, b = conv_arrays(cfg, rng, dtype)
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"],
              padding_mode=cfg["mode"], layout=layout)
    last = layout == "NHWC"
    args = (to_last(x), weight_to_last(w)) if last else (x, w)
    args = args + (() if b is None else (b,))
    y_shape = jax.eval_shape(lambda *a: F.conv(*a, **kw), *args).shape
    g = rng.standard_normal(y_shape).astype(dtype)
    y, grads = run_jitted(lambda *a: F.conv(*a, **kw), args, g)
    assert y.dtype == dtype
    if last:
        y, g = to_first(y), to_first(g)
        grads = [to_first(grads[0]), np.transpose(grads[1], (cfg["rank"] + 1, cfg["rank"]) +
                                                 tuple(range(cfg["rank"])))] + list(grads[2:])
    y_ref, grads_ref = torch_conv_reference(cfg, x, w, b, np.ascontiguousarray(g))
    assert_close(y, y_ref, rtol, f"conv {layout} output {cfg}")
    for name, got, ref in zip(("dx", "dw", "db"), grads, grads_ref):
        assert_close(got, ref, rtol, f"conv {layout} {name} {cfg}")
    return cfg


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
N_CHUNKS, PER_CHUNK = 3, 25           # 75 float32 conv configurations (x, w, b grads each)


# 25 by default (every rank, mode and padding kind: asserted), all 75 under -m slow
@pytest.mark.parametrize("chunk", [0, *(pytest.param(c, marks=pytest.mark.slow) for c in range(1, N_CHUNKS))])
def test_conv_random_parity_float32(chunk):
    rng = np.random.default_rng(1000 + chunk)
    seen = set()
    for i in range(PER_CHUNK):
        cfg = random_conv_config(rng)
        check_conv_config(cfg, rng, np.float32, 1e-5, ("NCHW", "NHWC")[i % 2])
        seen.add((cfg["rank"], cfg["mode"], cfg["padding"] if isinstance(cfg["padding"], str) else "num"))
    assert len(seen) >= 10          # the chunk really mixes ranks, modes and padding kinds


def test_conv_random_parity_float64(x64):
    rng = np.random.default_rng(77)
    for i in range(12):
        check_conv_config(random_conv_config(rng), rng, np.float64, 1e-10, ("NCHW", "NHWC")[i % 2])


def test_conv_coverage_of_generator():
    """The generator reaches every rank, padding mode, padding kind and groups kind."""
    rng = np.random.default_rng(1000)
    cfgs = [random_conv_config(rng) for _ in range(400)]
    assert {c["rank"] for c in cfgs} == {1, 2, 3}
    assert {c["mode"] for c in cfgs} == {"zeros", "reflect", "replicate", "circular"}
    kinds = {c["padding"] for c in cfgs if isinstance(c["padding"], str)}
    assert kinds == {"valid", "same", "full", "causal"}
    assert any(c["groups"] > 1 and c["c_in"] == c["groups"] for c in cfgs)        # depthwise
    assert any(c["groups"] > 1 and c["c_in"] > c["groups"] for c in cfgs)         # grouped
    assert any(c["padding"] == "same" and max(c["stride"]) > 1 for c in cfgs)
    assert any(isinstance(c["padding"], tuple) and isinstance(c["padding"][0], tuple)
               and any(lo != hi for lo, hi in c["pads"]) for c in cfgs)            # asymmetric
    assert any(list(c["sizes"]) == [d * (k - 1) + 1 for k, d in zip(c["kernel"], c["dilation"])]
               for c in cfgs)                                                      # kernel == input


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_same_stride1_matches_torch_same_string(rank):
    """padding='same' (stride 1, even and odd kernels, dilation) vs torch's own 'same'."""
    rng = np.random.default_rng(rank)
    for k in (1, 2, 3, 4):
        for d in (1, 2):
            size = (6, 5, 4)[:rank]
            x = rng.standard_normal((2, 3, *size)).astype(np.float32)
            w = rng.standard_normal((4, 3, *(k,) * rank)).astype(np.float32)
            ref = TORCH_CONV[rank](torch.tensor(x), torch.tensor(w), padding="same", dilation=d).numpy()
            got = F.conv(x, w, padding="same", dilation=d, layout="NCHW")
            assert_close(got, ref, 1e-5, f"same k={k} d={d}")
            assert got.shape[2:] == x.shape[2:]


def test_conv_tiny_inputs():
    """1x1 input with a 1x1 kernel, with padding; an unbatched input stays unbatched."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    assert_close(F.conv(x, w, layout="NCHW"), TF.conv2d(torch.tensor(x), torch.tensor(w)).numpy(), 1e-5)
    w3 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    for mode in ("zeros", "replicate", "circular"):
        ref = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, bias=False)
        ref.weight = torch.nn.Parameter(torch.tensor(w3))
        assert_close(F.conv(x, w3, padding=1, padding_mode=mode, layout="NCHW"),
                     ref(torch.tensor(x)).detach().numpy(), 1e-5, mode)
    y = F.conv(x[0], w, layout="NCHW")
    assert y.shape == (4, 1, 1)
    assert_close(y, TF.conv2d(torch.tensor(x[0]), torch.tensor(w)).numpy(), 1e-5)


# --------------------------------------------------------------------------------------
# Transposed convolution
# --------------------------------------------------------------------------------------
def random_tconv_config(rng):
    while True:
        rank = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        groups = int(rng.choice([1, 1, 2, 3]))
        cig, cog = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        if rng.random() < 0.15:                       # depthwise-style
            cig, cog, groups = 1, 1, int(rng.integers(2, 4))
        kmax = {1: 4, 2: 4, 3: 3}[rank]
        kernel = tuple(int(k) for k in rng.integers(1, kmax + 1, rank))
        stride = tuple(int(s) for s in rng.integers(1, 4, rank))
        dilation = tuple(int(d) for d in rng.integers(1, 3, rank)) if rng.random() < 0.35 else (1,) * rank
        padding = tuple(int(rng.integers(0, d * (k - 1) + 1)) for k, d in zip(kernel, dilation))
        out_pad = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        smax = {1: 6, 2: 5, 3: 3}[rank]
        sizes = [int(rng.integers(1, smax + 1)) for _ in range(rank)]
        out = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1
               for n, s, p, d, k, o in zip(sizes, stride, padding, dilation, kernel, out_pad)]
        if min(out) < 1:
            continue
        return dict(rank=rank, groups=groups, c_in=cig * groups, c_out=cog * groups, kernel=kernel,
                    stride=stride, dilation=dilation, padding=padding, output_padding=out_pad, sizes=sizes,
                    out=out, batch=int(rng.integers(1, 3)), bias=bool(rng.random() < 0.8))


def check_tconv_config(cfg, rng, dtype, rtol, layout):
    x = rng.standard_normal((cfg["batch"], cfg["c_in"], *cfg["sizes"])).astype(dtype)
    w = rng.standard_normal((cfg["c_in"], cfg["c_out"] // cfg["groups"], *cfg["kernel"])).astype(dtype)
    b = rng.standard_normal(cfg["c_out"]).astype(dtype) if cfg["bias"] else None
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"],
              dilation=cfg["dilation"], groups=cfg["groups"])
    last = layout == "NHWC"
    args = ((to_last(x), tconv_weight_to_last(w)) if last else (x, w)) + (() if b is None else (b,))

    def fn(*a):
        return F.conv_transpose(*a, layout=layout, **kw)

    g = rng.standard_normal(jax.eval_shape(fn, *args).shape).astype(dtype)
    y, grads = run_jitted(fn, args, g)
    if last:
        r = cfg["rank"]
        y, g = to_first(y), np.ascontiguousarray(to_first(g))
        grads = [to_first(grads[0]), np.transpose(grads[1], (r, r + 1) + tuple(range(r)))] + list(grads[2:])
    assert list(y.shape[2:]) == cfg["out"]
    targs = [torch.tensor(a, requires_grad=True) for a in ((x, w) if b is None else (x, w, b))]
    yt = TORCH_CONVT[cfg["rank"]](*targs, **kw) if b is not None else \
        TORCH_CONVT[cfg["rank"]](targs[0], targs[1], None, **kw)
    grads_ref = torch.autograd.grad(yt, targs, grad_outputs=torch.tensor(g))
    assert_close(y, yt.detach().numpy(), rtol, f"conv_transpose {layout} output {cfg}")
    for name, got, ref in zip(("dx", "dw", "db"), grads, grads_ref):
        assert_close(got, ref.numpy(), rtol, f"conv_transpose {layout} {name} {cfg}")


@pytest.mark.parametrize("chunk", [0, pytest.param(1, marks=pytest.mark.slow)])   # 25 by default, 50 in all
def test_conv_transpose_random_parity_float32(chunk):
    rng = np.random.default_rng(2000 + chunk)
    for i in range(25):
        check_tconv_config(random_tconv_config(rng), rng, np.float32, 1e-5, ("NCHW", "NHWC")[i % 2])


def test_conv_transpose_random_parity_float64(x64):
    rng = np.random.default_rng(88)
    for i in range(8):
        check_tconv_config(random_tconv_config(rng), rng, np.float64, 1e-10, ("NCHW", "NHWC")[i % 2])


def test_conv_transpose_is_adjoint_of_conv():
    """<conv(x), y> == <x, conv_transpose(y)> with the same weight, stride, padding, groups."""
    rng = np.random.default_rng(9)
    done = 0
    while done < 6:
        cfg = random_tconv_config(rng)
        if any(o >= s for o, s in zip(cfg["output_padding"], cfg["stride"])):
            continue                     # then conv of the big output has one more position
        done += 1
        # conv maps out-sized inputs to `sizes` (with the output_padding absorbed as extra high input)
        rank, g = cfg["rank"], cfg["groups"]
        w = rng.standard_normal((cfg["c_in"], cfg["c_out"] // g, *cfg["kernel"]))
        y = rng.standard_normal((1, cfg["c_in"], *cfg["sizes"]))
        x = rng.standard_normal((1, cfg["c_out"], *cfg["out"]))
        kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=g)
        cx = F.conv(x.astype(np.float32), w.astype(np.float32), layout="NCHW", **kw)
        ty = F.conv_transpose(y.astype(np.float32), w.astype(np.float32), layout="NCHW",
                              output_padding=cfg["output_padding"], **kw)
        assert cx.shape == y.shape and ty.shape == x.shape
        lhs, rhs = float(np.sum(np.asarray(cx) * y)), float(np.sum(x * np.asarray(ty)))
        assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs), np.sum(np.abs(x)))
