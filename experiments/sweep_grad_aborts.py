"""Sweep random conv / conv_transpose gradient configurations for process aborts.

XLA can kill the Python process with a fatal CHECK on some convolution gradients (see
tests/test_conv_transpose_abort.py). This script draws ``--count`` random configurations
(1-3 spatial dims, groups, dilation, stride, padding, output_padding, both layouts,
float32/float64, both backprop modes ``autodiff`` and ``explicit``), runs them in
subprocess batches of ``--batch`` and, when a batch dies, re-runs its configurations
one per subprocess to name the culprit. Each configuration computes the input and
weight gradients of ``sum(y**2)``; under x64 the autodiff and explicit gradients are
also compared (max relative difference reported).

Writes ``experiments/results/sweep_grad_aborts.json``: counts, aborts (configs + rc),
other failures, and the worst autodiff/explicit disagreement.

The known aborting configuration (:data:`KNOWN`) is swept too, first.

Run:  python experiments/sweep_grad_aborts.py [--count 600] [--batch 50] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

WORKER = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from jaxcnn import dispatch
from jaxcnn.dispatch import backprop_mode
for line in sys.stdin:
    c = json.loads(line)
    dtype = np.float64 if c["dtype"] == "float64" else np.float32
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal(c["x"]).astype(dtype); w = rng.standard_normal(c["w"]).astype(dtype)
    op = getattr(dispatch, c["op"])
    grads = {}
    for mode in ("autodiff", "explicit"):
        def f(x, w):
            with backprop_mode(mode):
                return jnp.sum(op(x, w, **c["kw"]) ** 2)
        gx, gw = jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)
        grads[mode] = (np.asarray(gx), np.asarray(gw))
    rel = max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-30))
              for a, b in zip(grads["autodiff"], grads["explicit"]))
    print(json.dumps({"id": c["id"], "rel": rel}), flush=True)
'''


def random_config(rng: random.Random, i: int) -> dict | None:
    """One random grouped/dilated/strided conv or conv_transpose (None if it does not fit)."""
    rank = rng.randint(1, 3)
    op = rng.choice(["conv", "conv_transpose"])
    layout = rng.choice(["NHWC", "NCHW"])
    groups = rng.choice([1, 1, 2, 3])
    ci, co = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    if rng.random() < 0.15:  # depthwise
        ci = co = groups
    k = [rng.randint(1, 4) for _ in range(rank)]
    s = [rng.randint(1, 3) for _ in range(rank)]
    d = [rng.randint(1, 3) for _ in range(rank)]
    p = [rng.randint(0, d_ * (k_ - 1)) for k_, d_ in zip(k, d)]
    n = [rng.randint(1, 7) for _ in range(rank)]
    kw = dict(stride=s, padding=p, dilation=d, groups=groups, layout=layout)
    eff = [d_ * (k_ - 1) + 1 for k_, d_ in zip(k, d)]
    if op == "conv":
        if any(n_ + 2 * p_ < e for n_, p_, e in zip(n, p, eff)):
            return None
        wshape = (k + [ci // groups, co]) if layout == "NHWC" else ([co, ci // groups] + k)
    else:
        kw["output_padding"] = [rng.randint(0, max(s_, d_) - 1) for s_, d_ in zip(s, d)]
        out = [(n_ - 1) * s_ - 2 * p_ + d_ * (k_ - 1) + o + 1
               for n_, s_, p_, d_, k_, o in zip(n, s, p, d, k, kw["output_padding"])]
        if any(o <= 0 for o in out):
            return None
        wshape = (k + [ci, co // groups]) if layout == "NHWC" else ([ci, co // groups] + k)
    b = rng.randint(1, 2)
    xshape = ([b] + n + [ci]) if layout == "NHWC" else ([b, ci] + n)
    return {"id": i, "op": op, "x": xshape, "w": wshape, "kw": kw,
            "dtype": rng.choice(["float32", "float64"]), "seed": i}


# The configuration that aborted the process before conv_transpose inserted its stride
# zeros with lax.pad (issue: "Process aborts in XLA"); always swept, first, as a canary
# that the harness catches an abort.
KNOWN = {"id": -1, "op": "conv_transpose", "x": [2, 4, 4, 3, 3], "w": [4, 2, 4, 4, 2], "dtype": "float64", "seed": 0,
         "kw": {"stride": [1, 2, 3], "padding": [0, 3, 0], "output_padding": [0, 0, 1], "dilation": [1, 1, 2],
                "groups": 2, "layout": "NCHW"}}


def run_batch(configs: list[dict], timeout: float) -> tuple[int, dict[int, float], str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
        r = subprocess.run([sys.executable, "-c", WORKER], input="".join(json.dumps(c) + "\n" for c in configs),
                           capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE.parent)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), ""
    done = {}
    for line in out.splitlines():
        rec = json.loads(line)
        done[rec["id"]] = rec["rel"]
    return rc, done, err[-2000:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "sweep_grad_aborts.json"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    configs, i = [KNOWN], 0
    while len(configs) < args.count + 1:
        c = random_config(rng, i)
        i += 1
        if c is not None:
            configs.append(c)
    t0 = time.perf_counter()
    results: dict[int, float] = {}
    aborts, failures = [], []
    for start in range(0, len(configs), args.batch):
        chunk = configs[start:start + args.batch]
        rc, done, err = run_batch(chunk, timeout=60 + 10 * len(chunk))
        results.update(done)
        if rc != 0:  # the batch died: run the rest one per process to name the culprit(s)
            for c in chunk:
                if c["id"] in done:
                    continue
                rc1, done1, err1 = run_batch([c], timeout=120)
                results.update(done1)
                if rc1 != 0:
                    entry = {"config": c, "rc": rc1, "stderr_tail": err1[-600:]}
                    (aborts if rc1 in (-6, 134, -11) else failures).append(entry)
        print(f"{min(start + args.batch, len(configs))}/{len(configs)} configs, {len(aborts)} aborts, "
              f"{len(failures)} other failures ({time.perf_counter() - t0:.0f}s)", flush=True)
    worst = max(results.items(), key=lambda kv: kv[1]) if results else (None, 0.0)
    summary = {"configs": len(configs), "completed": len(results), "aborts": aborts, "failures": failures,
               "by_op": {op: sum(c["op"] == op for c in configs) for op in ("conv", "conv_transpose")},
               "by_rank": {r: sum(len(c["kw"]["stride"]) == r for c in configs) for r in (1, 2, 3)},
               "worst_autodiff_vs_explicit_rel": worst[1], "worst_config_id": worst[0],
               "seconds": round(time.perf_counter() - t0, 1), "seed": args.seed}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{summary['completed']}/{summary['configs']} gradient configs completed; "
          f"{len(aborts)} process aborts; {len(failures)} other failures; worst autodiff-vs-explicit relative "
          f"difference {worst[1]:.2e} -> {args.out}")
    return 1 if aborts or failures else 0


if __name__ == "__main__":
    sys.exit(main())
