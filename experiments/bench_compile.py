"""How long a model's first training step takes to build: trace, lower and compile.

For the single step (``jax.jit(make_train_step(...))``) and the multi-step program the CLI
runs (``make_multi_step``, ``--steps-per-dispatch`` steps per call, default
``jaxcnn.train.defaults.STEPS_PER_DISPATCH``), each in a fresh process with the CLI's XLA
flags and freed host memory kept, and no persistent compilation cache (every figure is
a cold compile). ``--repeats`` processes per program, interleaved; the figure is the
median. Issue 22's goal: mobilenet_v2 (batch 128, 32x32) under 5 s.

Run:  python experiments/bench_compile.py [--model mobilenet_v2] [--repeats 3]
Writes experiments/results/bench_compile.json (``--out`` to change).
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
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from bench_train import MODELS  # noqa: E402  (bench_train imports no jax at import)
from jaxcnn.config import add_xla_cpu_flags  # noqa: E402
from jaxcnn.train.defaults import STEPS_PER_DISPATCH  # noqa: E402

PHASES = ("trace_s", "lower_s", "compile_s", "total_s")


def worker(name: str, program: str, per_call: int) -> dict:
    from jaxcnn.hostmem import keep_freed_memory
    keep_freed_memory()                       # before jax starts its threads, as the CLI does
    import jax
    import jax.numpy as jnp
    import optax
    from jaxcnn import models
    from jaxcnn.ops import cross_entropy
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_multi_step, make_train_step
    kwargs, shape, batch = MODELS[name]
    model = models.create(name, **{"num_classes": 10, **kwargs})
    tx = optax.sgd(0.01, momentum=0.9)
    ts = create_train_state(model, tx, jax.random.PRNGKey(0), (batch, *shape))
    step = make_train_step(model, cross_entropy, tx)
    key = jax.random.PRNGKey(1)
    if program == "single":
        fn = jax.jit(step, donate_argnums=0)
        args = (ts, {"image": jnp.zeros((batch, *shape)), "label": jnp.zeros((batch,), jnp.int32)}, key)
    else:
        fn = jax.jit(make_multi_step(step), donate_argnums=0)
        args = (ts, {"image": jnp.zeros((per_call, batch, *shape)),
                     "label": jnp.zeros((per_call, batch), jnp.int32)}, jnp.int32(per_call), key)
    t0 = time.perf_counter()
    traced = fn.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    lowered.compile()
    t3 = time.perf_counter()
    return {"trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": t3 - t2, "total_s": t3 - t0}


def run_child(name: str, program: str, per_call: int, timeout: float) -> dict:
    env = dict(os.environ)
    add_xla_cpu_flags(env)
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"     # a cold compile, never one read from a cache
    cmd = [sys.executable, __file__, "--worker", program, "--model", name, "--steps-per-dispatch", str(per_call)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout}s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v2", choices=sorted(MODELS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps-per-dispatch", type=int, default=STEPS_PER_DISPATCH)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", default=str(HERE / "results" / "bench_compile.json"))
    p.add_argument("--worker", choices=("single", "multi"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.worker, args.steps_per_dispatch)))
        return
    runs = {"single": [], "multi": []}
    for r in range(args.repeats):
        for program in runs:
            result = run_child(args.model, program, args.steps_per_dispatch, args.timeout)
            runs[program].append(result)
            print(f"round {r + 1} {program}: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)
    rows = []
    print(f"{'program':8} " + " ".join(f"{k:>10}" for k in PHASES) + "   total min-max")
    for program, results in runs.items():
        good = [x for x in results if "error" not in x]
        if not good:
            print(f"{program:8} failed: {results[0]['error']}")
            continue
        row = {"program": program, **{k: statistics.median(x[k] for x in good) for k in PHASES},
               "total_min_s": min(x["total_s"] for x in good), "total_max_s": max(x["total_s"] for x in good)}
        rows.append(row)
        print(f"{program:8} " + " ".join(f"{row[k]:10.2f}" for k in PHASES) +
              f"   {row['total_min_s']:.2f}-{row['total_max_s']:.2f}")
    import jax
    pathlib.Path(args.out).write_text(json.dumps(
        {"model": args.model, "batch": MODELS[args.model][2], "steps_per_dispatch": args.steps_per_dispatch,
         "repeats": args.repeats, "jax": jax.__version__, "cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
