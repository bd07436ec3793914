"""First-layer convolutions (1-3 input channels) on XLA CPU: ``lax.conv_general_dilated``
against the same conv as shifted multiply-adds (``jaxcnn.kernels.xla.conv``, what
``backprop="auto"`` uses), forward and the weight gradient (a first layer's input is data, so a train step
needs just these two; the ``dw`` timing holds no forward: XLA drops the unused primal).

Times are medians over interleaved rounds in one process (this machine's timings drift
by 2-3x from minute to minute; interleaving keeps the two columns comparable). Prints a
row per shape with the ratio lax/fast (> 1: the shifted form is faster) and writes
``experiments/results/bench_conv_narrow.json``.

Run:  python experiments/bench_conv_narrow.py [--rounds 5] [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

from jaxcnn.config import add_xla_cpu_flags  # noqa: E402  (imports no jax)

add_xla_cpu_flags(os.environ)  # the CLI's flags, with its jaxlib check, before jax loads

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcnn import ops  # noqa: E402
from jaxcnn.kernels.xla import conv as fast_conv, narrow  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
# (input NHWC, kernel, C_out, padding, who has it)
SHAPES = [((128, 28, 28, 1), 3, 32, 1, "fmnist_cnn conv1"),
          ((128, 28, 28, 1), 5, 6, 2, "lenet5 conv1"),
          ((128, 32, 32, 3), 3, 64, 1, "cifar_resnet18 conv1"),
          ((128, 32, 32, 3), 3, 32, 1, "mobilenet_v2 (32x32) conv1"),
          ((128, 28, 28, 2), 3, 32, 1, "2 channels"),
          ((16, 64, 64, 3), 3, 16, 1, "unet (64x64) conv1"),
          ((128, 14, 14, 6), 5, 16, 0, "lenet5 conv2 (not narrow)")]


def _timer(fn, args, steps):
    jax.block_until_ready(fn(*args))

    def run():
        t0 = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        jax.block_until_ready(out)
        return 1e3 * (time.perf_counter() - t0) / steps
    return run


# input gradients: XLA's transposed conv vs one matmul + col2im (gemm_input_grad)
INPUT_GRAD_SHAPES = [((128, 14, 14, 6), (5, 5, 6, 16), 0, "lenet5 conv2"),
                     ((128, 14, 14, 4), (3, 3, 4, 16), 1, "4 -> 16"),
                     ((128, 28, 28, 8), (3, 3, 8, 32), 1, "8 -> 32 (not taken)")]


def input_grad_table(rounds, steps):
    from jaxcnn.kernels.xla.conv import _col2im_input_grad, gemm_input_grad
    rows = []
    print(f"\n{'input grad':34s} {'XLA':>8s} {'gemm':>8s} {'ratio':>6s}  taken")
    for shape, w_shape, pad, who in INPUT_GRAD_SHAPES:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)
        dy = jnp.asarray(rng.normal(size=ops.conv(x, w, padding=pad).shape), jnp.float32)
        pads = ((pad, pad),) * 2
        xla = jax.jit(lambda x, w, dy: jax.vjp(lambda x: ops.conv(x, w, padding=pad), x)[1](dy)[0])
        gemm = jax.jit(lambda x, w, dy: _col2im_input_grad(dy, w, x.shape[1:-1], pads))
        timers = {"xla": _timer(xla, (x, w, dy), steps), "gemm": _timer(gemm, (x, w, dy), steps)}
        times = {name: [] for name in timers}
        for _ in range(rounds):
            for name, run in timers.items():
                times[name].append(run())
        med = {name: statistics.median(v) for name, v in times.items()}
        taken = gemm_input_grad(shape, w_shape, 1, 1)
        rows.append(dict(shape=list(shape), weight=list(w_shape), who=who, xla_ms=med["xla"], gemm_ms=med["gemm"],
                         ratio=med["xla"] / med["gemm"], taken=taken,
                         max_abs_diff=float(jnp.max(jnp.abs(xla(x, w, dy) - gemm(x, w, dy))))))
        print(f"{str(shape) + ' ' + who:34.34s} {med['xla']:8.2f} {med['gemm']:8.2f} {rows[-1]['ratio']:5.2f}x  {taken}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    rows = []
    print(f"{'shape':34s} {'kernel':>6s} {'C_out':>5s}  {'lax fwd':>8s} {'fast fwd':>8s} {'ratio':>6s}  "
          f"{'lax dw':>8s} {'fast dw':>9s} {'fwd+dw ratio':>12s}")
    for shape, k, c_out, pad, who in SHAPES:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, shape[-1], c_out)) * 0.1, jnp.float32)
        dy = jnp.asarray(rng.normal(size=ops.conv(x, w, padding=pad).shape), jnp.float32)
        timers = {}
        for name, conv in (("lax", ops.conv), ("fast", fast_conv)):
            fwd = jax.jit(lambda x, w, conv=conv: conv(x, w, padding=pad))
            train = jax.jit(lambda x, w, dy, conv=conv: jax.vjp(lambda w: conv(x, w, padding=pad), w)[1](dy)[0])
            timers[name + " fwd"] = _timer(fwd, (x, w), args.steps)
            timers[name + " dw"] = _timer(train, (x, w, dy), args.steps)
        err = float(jnp.max(jnp.abs(fast_conv(x, w, padding=pad) - ops.conv(x, w, padding=pad))))
        times = {name: [] for name in timers}
        for _ in range(args.rounds):
            for name, run in timers.items():
                times[name].append(run())
        med = {name: statistics.median(v) for name, v in times.items()}
        row = dict(shape=list(shape), kernel=k, c_out=c_out, who=who, narrow=narrow(shape, w.shape),
                   max_abs_diff=err, **{f"{n.replace(' ', '_')}_ms": v for n, v in med.items()},
                   fwd_ratio=med["lax fwd"] / med["fast fwd"],
                   train_ratio=(med["lax fwd"] + med["lax dw"]) / (med["fast fwd"] + med["fast dw"]))
        rows.append(row)
        print(f"{str(shape) + ' ' + who:34.34s} {k:6d} {c_out:5d}  {med['lax fwd']:8.2f} {med['fast fwd']:8.2f} "
              f"{row['fwd_ratio']:5.2f}x  {med['lax dw']:8.2f} {med['fast dw']:9.2f} {row['train_ratio']:11.2f}x",
              flush=True)
    input_grad_rows = input_grad_table(args.rounds, args.steps)
    out = HERE / "results" / "bench_conv_narrow.json"
    out.write_text(json.dumps(dict(jax=jax.__version__, cpu_count=os.cpu_count(), rounds=args.rounds,
                                   steps=args.steps, rows=rows, input_grad_rows=input_grad_rows), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
