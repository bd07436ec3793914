"""Random configurations shared by the backprop tests (seeded: every run sees the same ones)."""
from __future__ import annotations

import numpy as np

MODES = ("zeros", "reflect", "replicate", "circular")


def conv_case(seed: int, transpose: bool = False):
    """A random conv (or transposed conv) configuration with arrays; None if invalid."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    layout = ("NHWC", "NCHW")[seed % 2]
    g = int(rng.choice([1, 1, 2, 3]))
    ci, co = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    if not transpose and rng.random() < 0.15:        # depthwise
        ci, co, g = 3, 3, 3
    hi_size = 8 if rank < 3 else 6
    n = tuple(int(v) for v in rng.integers(3, hi_size, rank))
    k = tuple(int(v) for v in rng.integers(1, 4, rank))
    s = tuple(int(v) for v in rng.integers(1, 4, rank))
    d = tuple(int(v) for v in rng.integers(1, 3, rank))
    pads = [(int(rng.integers(0, 3)), int(rng.integers(0, 4))) for _ in range(rank)]
    mode = "zeros"
    if not transpose:
        mode = MODES[int(rng.integers(0, 4))]
        r = rng.random()
        if r < 0.1:
            pads = "same"
        elif r < 0.15:
            pads = "valid"
        elif r < 0.2:
            pads = int(rng.integers(0, 3))
    batch = int(rng.integers(1, 3))
    if transpose:
        wshape = k + (ci, co // g) if layout == "NHWC" else (ci, co // g) + k
        kw = dict(stride=s, padding=pads, dilation=d, groups=g, layout=layout,
                  output_padding=tuple(int(rng.integers(0, max(a, b))) for a, b in zip(s, d)))
    else:
        wshape = k + (ci // g, co) if layout == "NHWC" else (co, ci // g) + k
        kw = dict(stride=s, padding=pads, dilation=d, groups=g, layout=layout, padding_mode=mode)
    xshape = (batch,) + n + (ci,) if layout == "NHWC" else (batch, ci) + n
    return dict(x=rng.normal(size=xshape), w=rng.normal(size=wshape), b=rng.normal(size=(co,)), kw=kw,
                rng=rng)


def pool_case(seed: int, kind: str):
    """A random max/avg pooling configuration (torch's constraints: padding <= k/2)."""
    rng = np.random.default_rng(1000 + seed)
    rank = int(rng.integers(1, 4))
    layout = ("NHWC", "NCHW")[seed % 2]
    k = tuple(int(v) for v in rng.integers(1, 4, rank))
    s = tuple(int(v) for v in rng.integers(1, 4, rank))
    p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
    n = tuple(int(v) for v in rng.integers(3, 8 if rank < 3 else 6, rank))
    c = int(rng.integers(1, 4))
    xshape = (2,) + n + (c,) if layout == "NHWC" else (2, c) + n
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=bool(rng.random() < 0.5), layout=layout)
    if kind == "max":
        kw["dilation"] = tuple(int(v) for v in rng.integers(1, 3, rank))
    else:
        kw["count_include_pad"] = bool(rng.random() < 0.5)
        if rng.random() < 0.2:
            kw["divisor_override"] = int(rng.integers(1, 5))
    return dict(x=rng.normal(size=xshape), kw=kw, rng=rng)
