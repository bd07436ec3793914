"""Training-step throughput: jaxcnn vs flax.linen vs PyTorch (torch==2.13.0, CPU), one run.

For each model (lenet5, fmnist_cnn, cifar_resnet18) at batch 128 it times a full SGD
(momentum) train step -- forward, cross-entropy, backward, update -- and reports
images/s and ratios to PyTorch. Each JAX framework runs in its own subprocess twice:
with default XLA flags and with ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``
(the flag must be set before jax is imported), so the flag's effect is measured, not assumed.

Run:  python experiments/bench_train.py [--models lenet5,fmnist_cnn] [--steps 10]
Writes experiments/results/bench_train.json.
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
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


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


def run_torch(name, batch, warmup, steps):
    import torch
    sys.path.insert(0, str(HERE))
    from peers.torch_models import MODELS
    torch.set_num_threads(os.cpu_count() or 1)
    build, shape = MODELS[name]
    model = build(10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return _time(step, warmup, steps, batch)


def run_flax(name, batch, warmup, steps):
    import jax
    import jax.numpy as jnp
    import optax
    sys.path.insert(0, str(HERE))
    from peers.flax_models import MODELS
    build, shape = MODELS[name]
    model, tx = build(10), optax.sgd(0.01, momentum=0.9)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, *shape))
    y = jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 10)
    variables = model.init({"params": jax.random.PRNGKey(2), "dropout": jax.random.PRNGKey(3)}, x, train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, stats, opt_state, key):
        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                      rngs={"dropout": key}, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd
        (loss, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), upd.get("batch_stats", {}), opt_state, loss

    carry = [params, stats, opt_state]
    key = jax.random.PRNGKey(4)

    def step():
        carry[0], carry[1], carry[2], loss = train_step(*carry, key)
        loss.block_until_ready()
    return _time(step, warmup, steps, batch)


def run_jaxcnn(name, batch, warmup, steps):
    import jax
    import optax
    from jaxcnn import models
    from jaxcnn.ops import cross_entropy
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step
    sys.path.insert(0, str(HERE))
    from peers.flax_models import MODELS
    shape = MODELS[name][1]
    model, tx = models.create(name, num_classes=10), optax.sgd(0.01, momentum=0.9)
    ts = create_train_state(model, tx, jax.random.PRNGKey(2), (batch, *shape))
    batch_data = {"image": jax.random.normal(jax.random.PRNGKey(0), (batch, *shape)),
                  "label": jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 10)}
    train_step = jax.jit(make_train_step(model, cross_entropy, tx))
    carry = [ts]
    key = jax.random.PRNGKey(4)

    def step():
        carry[0], metrics = train_step(carry[0], batch_data, key)
        metrics["loss"].block_until_ready()
    return _time(step, warmup, steps, batch)


RUNNERS = {"torch": run_torch, "flax": run_flax, "jaxcnn": run_jaxcnn}


def worker(framework, name, batch, warmup, steps, flag):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + (" " + YNN_FLAG if flag else "")).strip()
    cmd = [sys.executable, __file__, "--worker", framework, "--models", name, "--batch", str(batch),
           "--warmup", str(warmup), "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5,fmnist_cnn,cifar_resnet18")
    p.add_argument("--frameworks", default="torch,flax,jaxcnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(RUNNERS[args.worker](args.models, args.batch, args.warmup, args.steps)))
        return
    rows = []
    for name in args.models.split(","):
        for fw in args.frameworks.split(","):
            for flag in ([False] if fw == "torch" else [False, True]):
                r = worker(fw, name, args.batch, args.warmup, args.steps, flag)
                r.update(model=name, framework=fw, ynn_flag=flag)
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"\n{'model':16s} {'framework':10s} {'ynn flag':8s} {'ms/step':>9s} {'img/s':>9s} {'vs torch':>9s}")
    for name in args.models.split(","):
        base = next((r for r in rows if r["model"] == name and r["framework"] == "torch" and "step_ms" in r), None)
        for r in (r for r in rows if r["model"] == name):
            if "step_ms" not in r:
                print(f"{name:16s} {r['framework']:10s} {str(r['ynn_flag']):8s} error: {r['error']}")
                continue
            ratio = r["images_per_sec"] / base["images_per_sec"] if base else float("nan")
            r["ratio_vs_torch"] = ratio
            print(f"{name:16s} {r['framework']:10s} {str(r['ynn_flag']):8s} {r['step_ms']:9.1f} "
                  f"{r['images_per_sec']:9.0f} {ratio:9.2f}x")
    out = HERE / "results" / "bench_train.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
