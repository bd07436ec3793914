"""Training-step throughput: jaxcnn (per backprop mode) vs flax.linen vs PyTorch (CPU fp32).

For each model at batch 128 (unet: 16) it times a full SGD (momentum) train step --
forward, cross-entropy, backward, update -- and reports ms/step, images/s and the
ratio to PyTorch's images/s. Every configuration runs in its own subprocess, and the
configurations are run round-robin ``--repeats`` times (interleaved in time), so that
PyTorch is timed in several processes (its lenet5 step is bimodal across processes on
this machine) and load from other programs hits all rows alike. Ratios are taken
within a round (same load), then the median over rounds is reported, with the spread
of PyTorch's per-process times.

JAX rows (flax and jaxcnn alike) run with what the CLI sets up: the XLA CPU flag
(``jaxcnn.config.XLA_CPU_FLAGS``) and freed host memory kept for reuse
(``jaxcnn.hostmem``: XLA's per-step temporaries are not page-faulted anew each step);
``--no-flag`` adds jaxcnn rows without either. Per JAX row: compile time of the first step
(``lower().compile()``), XLA's flop count of the step (``cost_analysis``) and the
achieved GFLOP/s (flops / median step time) -- against this CPU's fp32 peak (numpy
float32 matmul GFLOP/s, measured at the start of the run) so the distance to the limit
is visible.

Run:  python experiments/bench_train.py [--models lenet5,fmnist_cnn] [--repeats 3] [--steps 8]
Writes experiments/results/bench_train.json (``--out`` to change).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from jaxcnn.config import XLA_CPU_FLAGS, add_xla_cpu_flags  # noqa: E402  (jaxcnn.config imports no jax)

MODELS = {  # name -> (jaxcnn create kwargs, NHWC input shape, batch)
    "lenet5": ({}, (28, 28, 1), 128),
    "fmnist_cnn": ({}, (28, 28, 1), 128),
    "cifar_resnet18": ({}, (32, 32, 3), 128),
    "mobilenet_v2": ({}, (32, 32, 3), 128),                     # CIFAR-size input, depthwise convs
    "unet": ({"base": 16, "depth": 3, "input_shape": (64, 64, 1), "num_classes": 2}, (64, 64, 1), 16),
}
FLAX_MODELS = ("lenet5", "fmnist_cnn", "cifar_resnet18")


def _time(step, warmup, steps, batch):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"step_ms": 1e3 * med, "images_per_sec": batch / med}


def _flops(compiled):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _labels_shape(name, batch, shape):
    return (batch, *shape[:2]) if name == "unet" else (batch,)


def run_torch(name, batch, warmup, steps, mode, precision="fp32"):
    """``precision="bf16"``: the forward under ``torch.autocast("cpu", torch.bfloat16)``
    (PyTorch's own mixed precision; parameters and optimizer stay float32)."""
    import contextlib
    import torch
    sys.path.insert(0, str(HERE))
    from peers.torch_models import MODELS as TORCH
    torch.set_num_threads(os.cpu_count() or 1)
    build, shape = TORCH[name]
    model = build(10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 2 if name == "unet" else 10, _labels_shape(name, batch, shape[1:]))

    def autocast():
        return torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    return {**_time(step, warmup, steps, batch), "first_step_s": first}


def run_flax(name, batch, warmup, steps, mode):
    import jax
    import optax
    sys.path.insert(0, str(HERE))
    from peers.flax_models import MODELS as FLAX
    build, shape = FLAX[name]
    model, tx = build(10), optax.sgd(0.01, momentum=0.9)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, *shape))
    y = jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 10)
    variables = model.init({"params": jax.random.PRNGKey(2), "dropout": jax.random.PRNGKey(3)}, x, train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    opt_state = tx.init(params)

    def train_step(params, stats, opt_state, key):
        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                      rngs={"dropout": key}, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd
        (loss, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), upd.get("batch_stats", {}), opt_state, loss

    key = jax.random.PRNGKey(4)
    t0 = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(params, stats, opt_state, key).compile()
    compile_s = time.perf_counter() - t0
    carry = [params, stats, opt_state]

    def step():
        carry[0], carry[1], carry[2], loss = compiled(*carry, key)
        loss.block_until_ready()
    r = _time(step, warmup, steps, batch)
    return {**r, "compile_s": compile_s, "gflop_per_step": _flops(compiled) / 1e9}


def run_jaxcnn(name, batch, warmup, steps, mode, precision="fp32"):
    import jax
    import optax
    from jaxcnn import models
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step
    kwargs, shape, _ = MODELS[name]
    model = models.create(name, **{"num_classes": 10, **kwargs})
    tx = optax.sgd(0.01, momentum=0.9)

    def loss(logits, labels):   # mean cross-entropy (per pixel for unet)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    ts = create_train_state(model, tx, jax.random.PRNGKey(2), (batch, *shape))
    data = {"image": jax.random.normal(jax.random.PRNGKey(0), (batch, *shape)),
            "label": jax.random.randint(jax.random.PRNGKey(1), _labels_shape(name, batch, shape),
                                        0, model.num_classes)}
    key = jax.random.PRNGKey(4)
    step_fn = make_train_step(model, loss, tx, precision=precision) if mode == "default" else \
        make_train_step(model, loss, tx, backprop=mode, precision=precision)
    t0 = time.perf_counter()
    compiled = jax.jit(step_fn, donate_argnums=0).lower(ts, data, key).compile()
    compile_s = time.perf_counter() - t0
    carry = [ts]

    def step():
        carry[0], metrics = compiled(carry[0], data, key)
        metrics["loss"].block_until_ready()
    r = _time(step, warmup, steps, batch)
    return {**r, "compile_s": compile_s, "gflop_per_step": _flops(compiled) / 1e9}


RUNNERS = {"torch": run_torch, "flax": run_flax, "jaxcnn": run_jaxcnn,
           # bfloat16 compute (AVX-512 BF16 / AMX where the CPU has them), float32 parameters
           "torch-bf16": functools.partial(run_torch, precision="bf16"),
           "jaxcnn-bf16": functools.partial(run_jaxcnn, precision="bf16")}


def worker(framework, name, mode, warmup, steps, flag, timeout):
    env = dict(os.environ)
    if flag:
        add_xla_cpu_flags(env)      # the CLI's flags, with its jaxlib check
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"      # compile time is measured, not read from a cache
    cmd = [sys.executable, __file__, "--worker", framework, "--models", name, "--mode", mode,
           "--warmup", str(warmup), "--steps", str(steps)] + (["--keep-host-memory"] if flag else [])
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout}s"}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_peak_gflops(n=1024, repeats=5):
    """numpy float32 matmul GFLOP/s: the practical fp32 peak of this CPU."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def configurations(name, frameworks, modes, no_flag):
    rows = []
    if "torch" in frameworks:
        rows.append(("torch", "-", False))
    if "flax" in frameworks and name in FLAX_MODELS:
        rows.append(("flax", "-", True))
    if "jaxcnn" in frameworks:
        rows += [("jaxcnn", m, True) for m in modes]
        if no_flag:
            rows.append(("jaxcnn", modes[0], False))
    if "torch-bf16" in frameworks:
        rows.append(("torch-bf16", "-", False))
    if "jaxcnn-bf16" in frameworks:
        rows.append(("jaxcnn-bf16", modes[0], True))
    return rows


def summarise(name, rounds):
    """rounds: list of {config key: result}. Ratio per round against that round's torch."""
    out = []
    keys = list(rounds[0])
    for key in keys:
        ok = [r[key] for r in rounds if "step_ms" in r[key]]
        row = {"model": name, "framework": key[0], "backprop": key[1], "ynn_flag": key[2], "rounds": len(rounds)}
        if not ok:
            row["error"] = rounds[0][key].get("error", "failed")
            out.append(row)
            continue
        ms = [r["step_ms"] for r in ok]
        row.update(step_ms=statistics.median(ms), step_ms_min=min(ms), step_ms_max=max(ms),
                   images_per_sec=statistics.median(r["images_per_sec"] for r in ok))
        ratios = [r[key]["images_per_sec"] / r[("torch", "-", False)]["images_per_sec"] for r in rounds
                  if "step_ms" in r[key] and "step_ms" in r.get(("torch", "-", False), {})]
        if ratios:
            row.update(ratio_vs_torch=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
        for extra in ("compile_s", "gflop_per_step", "first_step_s"):
            if extra in ok[0]:
                row[extra] = statistics.median(r[extra] for r in ok)
        if "gflop_per_step" in row:
            row["gflops"] = row["gflop_per_step"] / (row["step_ms"] / 1e3)
        out.append(row)
    return out


def table(rows, peak):
    lines = [f"{'model':15s} {'framework':9s} {'backprop':9s} {'flag':5s} {'ms/step':>9s} {'(min-max)':>15s} "
             f"{'vs torch':>9s} {'(min-max)':>13s} {'compile s':>9s} {'GFLOP/s':>8s} {'% peak':>6s}"]
    for r in rows:
        head = f"{r['model']:15s} {r['framework']:9s} {r['backprop']:9s} {str(r['ynn_flag'])[0]:5s}"
        if "step_ms" not in r:
            lines.append(f"{head} error: {r['error']}")
            continue
        rng = f"({r['step_ms_min']:.1f}-{r['step_ms_max']:.1f})"
        ratio = f"{r['ratio_vs_torch']:8.2f}x" if "ratio_vs_torch" in r else f"{'':9s}"
        rrng = f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f})" if "ratio_min" in r else ""
        comp = f"{r['compile_s']:9.1f}" if "compile_s" in r else f"{'':9s}"
        gf = f"{r['gflops']:8.1f} {100 * r['gflops'] / peak:5.1f}%" if "gflops" in r else ""
        lines.append(f"{head} {r['step_ms']:9.1f} {rng:>15s} {ratio} {rrng:>13s} {comp} {gf}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--frameworks", default="torch,flax,jaxcnn",
                   help="comma-separated: torch, flax, jaxcnn, torch-bf16 (autocast), jaxcnn-bf16 (precision='bf16')")
    p.add_argument("--modes", default="default,autodiff,explicit",
                   help="jaxcnn backprop modes ('default': make_train_step's own default)")
    p.add_argument("--no-flag", action="store_true", help="also time jaxcnn's first mode without the XLA flag")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (one process per row per round)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", default=str(HERE / "results" / "bench_train.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="default", help=argparse.SUPPRESS)
    p.add_argument("--keep-host-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        if args.keep_host_memory and not args.worker.startswith("torch"):
            from jaxcnn.hostmem import keep_freed_memory
            keep_freed_memory()      # before jax starts its threads, as the CLI does
        batch = MODELS[args.models][2]
        print(json.dumps(RUNNERS[args.worker](args.models, batch, args.warmup, args.steps, args.mode)))
        return
    import jax
    import jaxlib
    peak = cpu_peak_gflops()
    print(f"fp32 peak (numpy matmul): {peak:.0f} GFLOP/s", flush=True)
    frameworks, modes = args.frameworks.split(","), args.modes.split(",")
    rows = []
    for name in args.models.split(","):
        configs = configurations(name, frameworks, modes, args.no_flag)
        rounds = []
        for rnd in range(args.repeats):
            got = {}
            for fw, mode, flag in configs:
                r = worker(fw, name, mode, args.warmup, args.steps, flag, args.timeout)
                got[(fw, mode, flag)] = r
                print(json.dumps({"model": name, "round": rnd, "framework": fw, "backprop": mode,
                                  "ynn_flag": flag, **r}), flush=True)
            rounds.append(got)
        rows += summarise(name, rounds)
        print(table([r for r in rows if r["model"] == name], peak), flush=True)
    print("\n" + table(rows, peak))
    out = pathlib.Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"batch": {k: v[2] for k, v in MODELS.items()}, "cpu_count": os.cpu_count(),
                               "jax": jax.__version__, "jaxlib": jaxlib.__version__, "xla_flags": XLA_CPU_FLAGS,
                               "fp32_peak_gflops": peak, "repeats": args.repeats, "steps": args.steps,
                               "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
