"""``jaxcnn bench MODEL``: time one train step of a zoo model under each backprop mode
on this machine, side by side (interleaved rounds, ratios to autodiff), with compile
time and XLA's GFLOP/s. ``--tune`` instead re-measures ``backprop="auto"``'s table
(per op, the fastest backward formulation in this model's train step) and saves it,
so that "auto" uses it in every later command (:mod:`jaxcnn.train.autotune`).
The comparison with PyTorch and flax.linen lives in
``experiments/bench_train.py`` (it needs their model definitions)."""
from __future__ import annotations

import os
import statistics
import time

from .startup import apply_saved_table
from .summary import batched_shape, input_shape


def register(subparsers) -> None:
    from ..dispatch.mode import MODES
    from ..train import defaults
    p = subparsers.add_parser("bench", help="train-step time of a model under each backprop mode")
    p.add_argument("model", help="a zoo name (jaxcnn.models.available()) or 'package.module:function'")
    p.add_argument("--input", default=None, help="input shape without batch, NHWC (default: the model's own)")
    p.add_argument("--num-classes", type=int, default=10, help="model output width (default: 10)")
    p.add_argument("--batch", type=int, default=defaults.BENCH_BATCH_SIZE,
                   help=f"batch size (default: {defaults.BENCH_BATCH_SIZE})")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated backprop modes (default: all)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round (default: 5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the modes (default: 3)")
    p.add_argument("--tune", action="store_true",
                   help="measure each op's backward formulations in this model's step and save the fastest as "
                        "backprop='auto''s table for this machine")
    p.add_argument("--tune-file", default=None,
                   help="where --tune saves the table (default: ~/.cache/jaxcnn/auto_table.json, which 'auto' "
                        "reads; another path is read when JAXCNN_AUTO_TABLE names it)")
    p.set_defaults(func=run)


def run(args) -> int:
    import jax
    import optax

    from ..dispatch.mode import MODES
    from ..models import create
    from ..ops import cross_entropy
    from ..train.state import create_train_state
    from ..train.step import make_train_step
    from .errors import UsageError

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise UsageError(f"--modes must be a comma-separated subset of {', '.join(MODES)}, got {args.modes!r}")
    if args.batch < 2 or args.steps < 1 or args.rounds < 1:
        raise UsageError(f"--batch must be >= 2 and --steps/--rounds >= 1, got {args.batch}/{args.steps}/"
                         f"{args.rounds}")
    model = create(args.model, num_classes=args.num_classes)
    shape = batched_shape(args, input_shape(args, model))
    if args.tune:
        # measured against the package's table, not a table an earlier --tune saved
        return _tune(args, model, shape)
    apply_saved_table("bench")
    tx = optax.sgd(0.01, momentum=0.9)
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), shape)
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), shape),
             "label": jax.random.randint(jax.random.PRNGKey(2), (args.batch,), 0, args.num_classes)}
    key = jax.random.PRNGKey(3)
    compiled, rows = {}, {}
    for mode in modes:
        t0 = time.perf_counter()
        compiled[mode] = jax.jit(make_train_step(model, cross_entropy, tx, backprop=mode)).lower(
            ts, batch, key).compile()
        cost = compiled[mode].cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
        rows[mode] = {"compile_s": time.perf_counter() - t0, "gflop": float(cost.get("flops", 0.0)) / 1e9,
                      "times": []}
        jax.block_until_ready(compiled[mode](ts, batch, key))          # warm-up
    for _ in range(args.rounds):
        for mode in modes:
            state = ts
            for _ in range(args.steps):
                t0 = time.perf_counter()
                state, metrics = compiled[mode](state, batch, key)
                metrics["loss"].block_until_ready()
                rows[mode]["times"].append(time.perf_counter() - t0)
    base = statistics.median(rows[modes[0]]["times"])
    print(f"{args.model}, batch {args.batch}, input {shape[1:]}, {jax.devices()[0].platform}, "
          f"{args.rounds} rounds x {args.steps} steps")
    print(f"{'backprop':10s} {'ms/step':>9s} {'img/s':>9s} {'vs ' + modes[0]:>12s} {'compile s':>10s} "
          f"{'GFLOP/s':>8s}")
    for mode in modes:
        med = statistics.median(rows[mode]["times"])
        r = rows[mode]
        print(f"{mode:10s} {1e3 * med:9.1f} {args.batch / med:9.0f} {base / med:11.2f}x {r['compile_s']:10.1f} "
              f"{r['gflop'] / med:8.1f}")
    from .. import hostmem
    from ..kernels import onednn
    print("host memory: " + ("freed memory kept for reuse (jaxcnn.hostmem)" if hostmem.applied() else
                             "C library's default (XLA's per-step buffers are page-faulted anew; see jaxcnn.hostmem)"))
    print("auto's convolutions: " + ("oneDNN (GFLOP/s leaves out its custom calls)" if onednn.load() else
                                     f"XLA's ({onednn.reason()})"))
    return 0


def _tune(args, model, shape) -> int:
    from .. import config
    from ..train import autotune as tuning
    print(f"tuning backprop='auto' on {args.model}, batch {shape[0]}, input {shape[1:]}: per op, median ms/step "
          f"of the whole train step with each formulation ({args.rounds} rounds x {args.steps} steps)", flush=True)
    result = tuning.tune(model, shape, args.num_classes, steps=args.steps, rounds=args.rounds,
                         log=lambda line: print(line, flush=True))
    result["model"] = args.model
    path = tuning.save(result, args.tune_file)
    chosen = ", ".join(f"{op}={choice}" for op, choice in sorted(result["table"].items()))
    print(f"saved {path}: {chosen}")
    read = config.auto_table_path()
    if read is not None and os.path.abspath(path) == os.path.abspath(read):
        print("backprop='auto' uses it from now on in `jaxcnn train` and `jaxcnn bench` (JAXCNN_AUTO_TABLE=0 "
              "ignores it)")
    else:
        print(f"'auto' reads it when JAXCNN_AUTO_TABLE={path} is set")
    return 0
