"""One process, interleaved rounds: a zoo model's train step under ``backprop="auto"`` with
each Conv -> ReLU pair fused (oneDNN forward with the bias and a ReLU post-op, the bias
gradient an XLA reduction: auto's default) against the same step unfused
(``auto_table={"conv_relu": "autodiff"}``: oneDNN's conv, then XLA's bias add and ReLU, as
before issue 22 goal 4). ``--without`` names other table entries to take out instead
(``--model lenet5 --without conv_sigmoid,avg_pool``: LeNet-5's fused Conv -> sigmoid
pairs and its reshaped-sum average pools); with several, a row per entry left out alone
too, and the "unfused" row leaves out all of them. ``--db-in-onednn`` adds a row with the bias gradient from
oneDNN's weight-gradient primitive (``kernels.onednn.fused.BIAS_GRAD_IN_ONEDNN``: what
decided where db is computed; the other rows take it where
``fused.DB_IN_ONEDNN_FOR`` says for their activation).

``--layers`` times fmnist_cnn's four conv -> ReLU layers alone instead (batch 128, forward +
VJP at a fixed cotangent, jit-compiled): ``onednn.conv_relu`` (each db variant) against
``ops.relu(onednn.conv)``; with ``--forward``, the forward alone (fused, unfused, and the
conv without bias or ReLU). A layer's VJP alone flatters the unfused form: its ReLU output
is dead there (only the mask is used), where in a network it feeds the next layer.

Ratios are taken within a round (same machine load), median and range over rounds.

Run:  python experiments/bench_conv_relu.py [--model fmnist_cnn] [--precision fp32] [--rounds 7] [--steps 5]
                                            [--without conv_relu]
      python experiments/bench_conv_relu.py --layers [--forward] [--rounds 15]
Writes experiments/results/bench_conv_relu.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from jaxcnn.config import add_xla_cpu_flags  # noqa: E402  (imports no jax)

UNFUSED = "unfused"
DB_ONEDNN = "fused, db in oneDNN"


# fmnist_cnn's conv layers at batch 128: (input NHWC, kernel HWIO)
FMNIST_LAYERS = {"conv1 1->32 28x28": ((128, 28, 28, 1), (3, 3, 1, 32)),
                 "conv2 32->32 28x28": ((128, 28, 28, 32), (3, 3, 32, 32)),
                 "conv3 32->64 14x14": ((128, 14, 14, 32), (3, 3, 32, 64)),
                 "conv4 64->64 14x14": ((128, 14, 14, 64), (3, 3, 64, 64))}


def _layers(args):
    """Per layer: median ms of forward + VJP, fused and unfused, interleaved rounds."""
    import jax
    import jax.numpy as jnp

    from jaxcnn import ops
    from jaxcnn.kernels import onednn
    from jaxcnn.kernels.onednn import fused

    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    forms = {"fused": lambda x, w, b: onednn.conv_relu(x, w, b, padding=1),
             DB_ONEDNN: lambda x, w, b: onednn.conv_relu(x, w, b, padding=1),
             UNFUSED: lambda x, w, b: ops.relu(onednn.conv(x, w, b, padding=1))}
    if args.forward:      # no db to place; the conv alone (no bias, no ReLU) is the floor
        del forms[DB_ONEDNN]
        forms["conv alone"] = lambda x, w, b: onednn.conv(x, w, None, padding=1)
    rows = []
    for name, (xs, ws) in FMNIST_LAYERS.items():
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        x, w = jax.random.normal(keys[0], xs, dtype), jax.random.normal(keys[1], ws, dtype)
        b = jax.random.normal(keys[2], ws[-1:], dtype)
        dy = jax.random.normal(keys[3], xs[:-1] + ws[-1:], dtype)
        fns = {}
        for k, f in forms.items():
            fused.BIAS_GRAD_IN_ONEDNN = True if k == DB_ONEDNN else None     # read when traced: compile now
            run = f if args.forward else (lambda x, w, b, f=f: jax.vjp(f, x, w, b)[1](dy))
            fns[k] = jax.jit(run).lower(x, w, b).compile()
        fused.BIAS_GRAD_IN_ONEDNN = None
        times = {k: [] for k in fns}
        for fn in fns.values():
            jax.block_until_ready(fn(x, w, b))
        for _ in range(args.rounds):
            for k, fn in fns.items():
                t = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(x, w, b))
                    t.append(time.perf_counter() - t0)
                times[k].append(1e3 * statistics.median(t))
        row = {"layer": name, **{f"{k} ms": statistics.median(t) for k, t in times.items()}}
        others = [k for k in times if k != UNFUSED]
        for k in others:
            ratios = [u / f for u, f in zip(times[UNFUSED], times[k])]
            row[f"{k} speedup"] = statistics.median(ratios)
            row[f"{k} speedup range"] = [min(ratios), max(ratios)]
        rows.append(row)
        print(f"{name:20s} " + "  ".join(f"{k} {statistics.median(t):6.2f} ms" for k, t in times.items()) +
              "  speed-up " + "  ".join(f"{k} {row[k + ' speedup']:.3f}x ({row[k + ' speedup range'][0]:.3f}-"
                                        f"{row[k + ' speedup range'][1]:.3f})" for k in others),
              flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fmnist_cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--db-in-onednn", action="store_true")
    p.add_argument("--without", default="conv_relu",
                   help="comma-separated auto-table entries the unfused row sets to autodiff")
    p.add_argument("--layers", action="store_true")
    p.add_argument("--forward", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "bench_conv_relu.json"))
    args = p.parse_args()
    add_xla_cpu_flags()           # as the CLI does, before jax starts
    from jaxcnn.hostmem import keep_freed_memory
    keep_freed_memory()
    import jax
    from _timing import interleaved_step_ms, step_problem

    if args.layers:
        rows = _layers(args)
        out = pathlib.Path(args.out)
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"layers": rows, "precision": args.precision, "jax": jax.__version__,
                                   "rounds": args.rounds, "steps": args.steps}, indent=1))
        print("wrote", out)
        return
    from jaxcnn.kernels.onednn import fused
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step

    model, shape, tx, batch, loss = step_problem(args.model, args.batch)
    without = [e for e in args.without.split(",") if e]
    configs = {"fused": {}, UNFUSED: {e: "autodiff" for e in without}}
    if len(without) > 1:
        configs.update({f"without {e}": {e: "autodiff"} for e in without})
    if args.db_in_onednn:
        configs[DB_ONEDNN] = {}
    steps, states = {}, {}
    for name, table in configs.items():
        fused.BIAS_GRAD_IN_ONEDNN = True if name == DB_ONEDNN else None   # read when the step is traced
        try:
            fn = jax.jit(make_train_step(model, loss, tx, backprop="auto", precision=args.precision,
                                         auto_table=table), donate_argnums=0)
            ts = create_train_state(model, tx, jax.random.PRNGKey(2), shape)
            steps[name] = fn.lower(ts, batch, jax.random.PRNGKey(3)).compile()
        finally:
            fused.BIAS_GRAD_IN_ONEDNN = None
        states[name] = ts
    times = interleaved_step_ms(steps, states, (batch, jax.random.PRNGKey(3)), rounds=args.rounds,
                                steps_per_round=args.steps)
    rows = []
    for name, t in times.items():
        ratios = [u / x for u, x in zip(times[UNFUSED], t)]
        rows.append({"config": name, "step_ms": statistics.median(t), "step_ms_range": [min(t), max(t)],
                     "speedup_vs_unfused": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)]})
        print(f"{name:18s} {statistics.median(t):8.1f} ms ({min(t):.1f}-{max(t):.1f})  vs unfused "
              f"{statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})", flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "batch": args.batch, "precision": args.precision,
                               "without": without,
                               "jax": jax.__version__, "rounds": args.rounds, "steps": args.steps, "rows": rows},
                              indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
