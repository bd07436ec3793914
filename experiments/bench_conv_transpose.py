"""Strided transposed convolution, forward + backward, three ways side by side.

For each layer shape: one jit-compiled ``value_and_grad`` of ``sum(y * g)`` with respect
to input and weight, with ``y`` from ``jaxcnn.ops.conv_transpose`` (XLA's conv over the
stride-dilated input: what autodiff gives), from the matmul + overlap-add formulation
``backprop="auto"`` uses (``jaxcnn.kernels.xla.conv_transpose``), and from
``torch.nn.functional.conv_transposeNd`` with ``.backward()`` (PyTorch 2.13, fp32). Rounds
are interleaved (xla, overlap-add, torch, xla, ...); the median of each is reported,
with the ratio of torch's time to each JAX formulation's (above 1: faster than torch).

Run:  python experiments/bench_conv_transpose.py [--rounds 3] [--iters 5]
Writes experiments/results/bench_conv_transpose.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from jaxcnn.config import XLA_CPU_FLAGS, add_xla_cpu_flags  # noqa: E402  (imports no jax)

add_xla_cpu_flags(os.environ)  # the CLI's flags, with its jaxlib check, before jax loads

CASES = [  # name, x shape (NHWC / NWC / NDHWC), kernel, stride, padding, output_padding, C_out
    ("unet up 128->64 2x2/2 8x8 b16", (16, 8, 8, 128), (2, 2), 2, 0, 0, 64),
    ("unet up 64->32 2x2/2 16x16 b16", (16, 16, 16, 64), (2, 2), 2, 0, 0, 32),
    ("unet up 32->16 2x2/2 32x32 b16", (16, 32, 32, 32), (2, 2), 2, 0, 0, 16),
    ("dcgan 4x4/2 p1 128->64 8x8 b32", (32, 8, 8, 128), (4, 4), 2, 1, 0, 64),
    ("3x3/2 p1 op1 64->32 16x16 b32", (32, 16, 16, 64), (3, 3), 2, 1, 1, 32),
    ("1-D audio k512/128 p256 257->1 L128 b4", (4, 128, 257), (512,), 128, 256, 0, 1),
    ("1-D k16/8 p4 64->32 L256 b16", (16, 256, 64), (16,), 8, 4, 0, 32),
    ("3-D 2x2x2/2 32->16 8^3 b4", (4, 8, 8, 8, 32), (2, 2, 2), 2, 0, 0, 16),
]


def _median_ms(fn, iters):
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def jax_runner(impl, xs, kernel, stride, padding, out_pad, c_out):
    import jax
    import jax.numpy as jnp
    x = jax.random.normal(jax.random.PRNGKey(0), xs)
    w = jax.random.normal(jax.random.PRNGKey(1), (*kernel, xs[-1], c_out)) * 0.05
    kw = dict(stride=stride, padding=padding, output_padding=out_pad)
    g = jax.random.normal(jax.random.PRNGKey(2), jax.eval_shape(lambda x, w: impl(x, w, **kw), x, w).shape)
    f = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(impl(x, w, **kw) * g), (0, 1)))
    jax.block_until_ready(f(x, w))
    return lambda: jax.block_until_ready(f(x, w))


def torch_runner(xs, kernel, stride, padding, out_pad, c_out):
    import torch
    rank = len(kernel)
    fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
          3: torch.nn.functional.conv_transpose3d}[rank]
    x = torch.randn(xs[0], xs[-1], *xs[1:-1], requires_grad=True)
    w = (torch.randn(xs[-1], c_out, *kernel) * 0.05).requires_grad_()
    y = fn(x, w, stride=stride, padding=padding, output_padding=out_pad)
    g = torch.randn_like(y)

    def step():
        x.grad = w.grad = None
        (fn(x, w, stride=stride, padding=padding, output_padding=out_pad) * g).sum().backward()
    step()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "bench_conv_transpose.json"))
    args = p.parse_args()
    import jax
    import torch
    from jaxcnn import ops
    from jaxcnn.kernels.xla.conv_transpose import conv_transpose as overlap_add
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    print(f"{'case':40s} {'xla ms':>9s} {'overlap-add ms':>15s} {'torch ms':>9s} {'xla vs torch':>13s} "
          f"{'overlap-add vs torch':>21s}", flush=True)
    for name, *case in CASES:
        runners = {"xla": jax_runner(ops.conv_transpose, *case), "overlap_add": jax_runner(overlap_add, *case),
                   "torch": torch_runner(*case)}
        times = {k: [] for k in runners}
        for _ in range(args.rounds):
            for k, run in runners.items():
                times[k].append(_median_ms(run, args.iters))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"case": name, **{f"{k}_ms": v for k, v in med.items()},
               "xla_vs_torch": med["torch"] / med["xla"], "overlap_add_vs_torch": med["torch"] / med["overlap_add"]}
        rows.append(row)
        print(f"{name:40s} {med['xla']:9.2f} {med['overlap_add']:15.2f} {med['torch']:9.2f} "
              f"{row['xla_vs_torch']:12.2f}x {row['overlap_add_vs_torch']:20.2f}x", flush=True)
    out = pathlib.Path(args.out)
    out.write_text(json.dumps({"jax": jax.__version__, "torch": torch.__version__, "cpu_count": os.cpu_count(),
                               "xla_flags": XLA_CPU_FLAGS, "rounds": args.rounds, "iters": args.iters,
                               "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
