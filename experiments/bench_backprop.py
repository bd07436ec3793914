"""Explicit vs autodiff backward pass of conv, side by side, on this machine's CPU.

For each layer shape: the jit-compiled backward (dx, dw, db for a given dy) three ways --
``jax.vjp`` of ``ops.conv`` (autodiff), ``conv_backward`` with the weight gradient as one
batch-contracting conv ("conv"), and as one dot product per kernel tap ("taps") --
warmed up, then the median of ``--repeats`` timed runs. Writes
``experiments/results/bench_backprop.json`` and prints a table of times and ratios
(ratio = explicit time / autodiff time; below 1 means the explicit pass is faster).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import ops
from jaxcnn.backprop import conv_backward

SHAPES = [
    # name, batch, size, c_in, c_out, kernel, stride, padding, groups
    ("3x3 32->32 28x28 b64", 64, 28, 32, 32, 3, 1, 1, 1),
    ("3x3 s2 32->64 28x28 b64", 64, 28, 32, 64, 3, 2, 1, 1),
    ("1x1 64->64 14x14 b64", 64, 14, 64, 64, 1, 1, 0, 1),
    ("depthwise 3x3 64 28x28 b32", 32, 28, 64, 64, 3, 1, 1, 64),
    ("5x5 16->32 32x32 b32", 32, 32, 16, 32, 5, 1, 2, 1),
]


def _time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))          # compile + warm up
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(repeats: int):
    rows = []
    rng = np.random.default_rng(0)
    for name, n, size, ci, co, k, s, p, g in SHAPES:
        kw = dict(stride=s, padding=p, groups=g)
        x = jnp.asarray(rng.normal(size=(n, size, size, ci)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, ci // g, co)) * 0.1, jnp.float32)
        b = jnp.zeros(co, jnp.float32)
        dy = jnp.asarray(rng.normal(size=ops.conv(x, w, b, **kw).shape), jnp.float32)
        autodiff = jax.jit(lambda x, w, b, dy: jax.vjp(lambda x, w, b: ops.conv(x, w, b, **kw), x, w, b)[1](dy))
        times = {"autodiff": _time(autodiff, x, w, b, dy, repeats=repeats)}
        ref = autodiff(x, w, b, dy)
        for method in ("conv", "taps"):
            f = jax.jit(lambda x, w, b, dy, m=method: conv_backward(x, w, dy, b, weight_grad_method=m, **kw))
            got = f(x, w, b, dy)
            err = max(float(jnp.max(jnp.abs(a - r)) / (jnp.max(jnp.abs(r)) + 1e-30)) for a, r in zip(got, ref))
            times[method] = _time(f, x, w, b, dy, repeats=repeats)
            times[f"{method}_rel_err"] = err
        flops = 2 * 2 * dy.size * k * k * (ci // g)          # dx and dw, multiply-adds counted as 2
        rows.append({"shape": name, "batch": n, "size": size, "c_in": ci, "c_out": co, "kernel": k, "stride": s,
                     "groups": g, "autodiff_ms": times["autodiff"] * 1e3, "explicit_conv_ms": times["conv"] * 1e3,
                     "explicit_taps_ms": times["taps"] * 1e3,
                     "ratio_conv": times["conv"] / times["autodiff"], "ratio_taps": times["taps"] / times["autodiff"],
                     "autodiff_gflops": flops / times["autodiff"] / 1e9,
                     "max_rel_err_conv": times["conv_rel_err"], "max_rel_err_taps": times["taps_rel_err"]})
        r = rows[-1]
        print(f"{name:<28} autodiff {r['autodiff_ms']:8.2f} ms  explicit(conv) {r['explicit_conv_ms']:8.2f} ms "
              f"x{r['ratio_conv']:.2f}  explicit(taps) {r['explicit_taps_ms']:8.2f} ms x{r['ratio_taps']:.2f}",
              flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "bench_backprop.json"))
    args = parser.parse_args(argv)
    rows = bench(args.repeats)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"backend": jax.default_backend(), "devices": str(jax.devices()), "machine": platform.machine(),
            "jax": jax.__version__, "repeats": args.repeats, "dtype": "float32", "layout": "NHWC",
            "note": "ratio = explicit / autodiff backward time (dx, dw, db), median of repeats, jit, warmed up"}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
