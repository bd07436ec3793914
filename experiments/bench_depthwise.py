"""Depthwise conv on XLA CPU: ``lax.conv_general_dilated(feature_group_count=C)`` vs the
same conv written as shifted multiply-adds (``jaxcnn.kernels.xla.depthwise``), forward and
forward+backward (input and weight gradients), on MobileNetV2-like shapes.

Each setting of the XLA CPU flag runs in its own subprocess (the flag must be set before
jax is imported): ``default`` and ``tuned`` (``--xla_cpu_experimental_ynn_fusion_type=
-individual_convolution``, what ``jaxcnn`` sets). Prints per-shape times and the ratio
grouped/shifted (> 1: the shifted form is faster), checks both agree, and writes
``experiments/results/bench_depthwise.json``.

Run:  python experiments/bench_depthwise.py [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
from jaxcnn.config import XLA_CPU_FLAGS  # noqa: E402  (imports no jax)

YNN_FLAG = " ".join(XLA_CPU_FLAGS)   # the CLI's flag (this benchmark is what measured it)
# (batch, size, channels, kernel, stride): MobileNetV2's depthwise layers at batch 32, 112-px input
SHAPES = [(32, 56, 96, 3, 2), (32, 28, 144, 3, 1), (32, 28, 144, 3, 2), (32, 14, 192, 3, 1),
          (32, 7, 576, 3, 1), (32, 28, 64, 5, 1), (128, 16, 32, 3, 1)]


def _median_ms(fn, args, steps):
    import jax
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def child(steps: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    from jaxcnn.kernels.xla.depthwise import depthwise_shifted

    rows = []
    for batch, size, c, k, s in SHAPES:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(batch, size, size, c)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, 1, c)), jnp.float32)
        pads = [(k // 2, k // 2)] * 2

        def grouped(x, w):
            return lax.conv_general_dilated(x, w, (s, s), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=c)

        def shifted(x, w):
            return depthwise_shifted(x, w, stride=(s, s), pads=pads, dilation=(1, 1), layout="NHWC")

        row = dict(batch=batch, size=size, channels=c, kernel=k, stride=s)
        np.testing.assert_allclose(grouped(x, w), shifted(x, w), rtol=1e-4, atol=1e-4)
        for name, f in (("grouped", grouped), ("shifted", shifted)):
            fwd = jax.jit(f)
            train = jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))
            row[f"{name}_fwd_ms"] = _median_ms(fwd, (x, w), steps)
            row[f"{name}_fwd_bwd_ms"] = _median_ms(train, (x, w), steps)
        row["fwd_ratio"] = row["grouped_fwd_ms"] / row["shifted_fwd_ms"]
        row["fwd_bwd_ratio"] = row["grouped_fwd_bwd_ms"] / row["shifted_fwd_bwd_ms"]
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.steps)))
        return
    results = {"cpu_count": os.cpu_count(), "settings": {}}
    for setting, flags in (("default", ""), ("tuned", YNN_FLAG)):
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps)], env=env,
                             check=True, capture_output=True, text=True).stdout
        rows = json.loads(out.strip().splitlines()[-1])
        results["settings"][setting] = rows
        print(f"\nXLA flags: {setting}")
        print(f"{'shape (B,HxW,C,k,s)':>26} {'grouped fwd+bwd':>16} {'shifted fwd+bwd':>16} {'ratio':>6}"
              f" {'fwd ratio':>9}")
        for r in rows:
            shape = f"{r['batch']},{r['size']}x{r['size']},{r['channels']},k{r['kernel']},s{r['stride']}"
            print(f"{shape:>26} {r['grouped_fwd_bwd_ms']:13.1f} ms {r['shifted_fwd_bwd_ms']:13.1f} ms"
                  f" {r['fwd_bwd_ratio']:6.2f} {r['fwd_ratio']:9.2f}")
    path = HERE / "results" / "bench_depthwise.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
