"""Where the time of a training epoch goes: `jaxcnn train`'s loop against a plain PyTorch
loop, taken apart.

bench_train.py times one SGD step on a fixed batch; the race (race_fmnist.py) times whole
CLI runs with AdamW and one-cycle, real data and per-epoch evaluation. This script
bridges the two: for the same model and data it times, in ms per step,

  ``step-sgd``       the step on one fixed batch, SGD with momentum (bench_train's step);
  ``step-cli``       the step on one fixed batch, with the CLI's optimiser (AdamW, one-cycle
                     schedule, weight decay on kernels) and loss;
  ``loop-cli``       the CLI's own data path and step: ``jaxcnn.data.batches`` over the real
                     training split, ``Runner.train_chunk`` (``--steps-per-dispatch`` steps
                     per call, the CLI's default), metrics fetched every ``log_every`` steps
                     -- the loop of ``jaxcnn.train.fit`` without evaluation or checkpoints;
                     ``jaxcnn:loop-cli:per-step`` calls the step once per step;
  ``feed``           that data path alone (batches drawn and placed on the device, no step);

(jaxcnn rows keep freed host memory as the CLI does, :mod:`jaxcnn.hostmem`; a
``:glibc-default`` suffix, e.g. ``jaxcnn:loop-cli:glibc-default``, runs without it, and
``torch:loop-cli:kept`` runs PyTorch with it)

and the PyTorch peers ``torch:step-sgd``, ``torch:step-cli`` (AdamW + OneCycleLR, as in
experiments/peers/torch_train.py) and ``torch:loop-cli`` (torch_train.py's loop: a
permutation per epoch, batches indexed out of the in-memory tensor).

Every configuration runs in its own process with the XLA flag the CLI sets; the
configurations run round-robin ``--repeats`` times (interleaved in time, so drift of this
machine's speed hits every row alike). A row's time is wall time over ``--steps`` steps
after ``--warmup`` steps (asynchronous dispatch included, as in the CLI), median over
rounds; ratios to PyTorch are taken within a round.

Run:  python experiments/bench_epoch.py [--model fmnist_cnn] [--dataset fashion_mnist] [--repeats 3]
Writes experiments/results/bench_epoch_<model>.json (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from jaxcnn.config import XLA_CPU_FLAGS, add_xla_cpu_flags  # noqa: E402  (jaxcnn.config imports no jax)

CONFIGS = ("jaxcnn:step-sgd", "jaxcnn:step-cli", "jaxcnn:loop-cli", "jaxcnn:loop-cli:per-step",
           "jaxcnn:loop-cli:glibc-default", "jaxcnn:feed",
           "torch:step-sgd", "torch:step-cli", "torch:loop-cli")
from jaxcnn.train.defaults import EPOCHS, LR, STEPS_PER_DISPATCH, WEIGHT_DECAY  # noqa: E402  (the CLI's defaults)


def _timed_steps(run_one, warmup, steps, finish):
    """Wall ms per step of ``steps`` calls of ``run_one(i)`` after ``warmup`` calls, and the
    process's minor page faults per step; ``finish()`` waits for outstanding work
    (asynchronous dispatch)."""
    for i in range(warmup):
        run_one(i)
    finish()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        run_one(i)
    finish()
    return {"ms_per_step": 1e3 * (time.perf_counter() - t0) / steps,
            "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}


def run_jaxcnn(kind, args, variant=None):
    import functools

    from jaxcnn.hostmem import keep_freed_memory
    if variant != "glibc-default":
        keep_freed_memory()        # as the CLI does, before jax starts its threads

    import jax
    import optax

    from jaxcnn import dispatch
    from jaxcnn.commands.train import build_model
    from jaxcnn.data import batches, load_splits, steps_per_epoch
    from jaxcnn.train import make_optimizer, make_schedule
    from jaxcnn.train.parallel import make_runner
    from jaxcnn.train.state import create_train_state

    train, _, _ = load_splits(args.dataset)
    steps = steps_per_epoch(len(train), args.batch_size)
    model = build_model(args.model, train.num_classes, train.image_shape)
    if kind == "step-sgd":
        tx = optax.sgd(0.01, momentum=0.9)
    else:
        tx = make_optimizer("adamw", make_schedule("onecycle", LR, EPOCHS * steps), weight_decay=WEIGHT_DECAY)
    loss = functools.partial(dispatch.cross_entropy, label_smoothing=0.0)
    per_call = STEPS_PER_DISPATCH if kind == "loop-cli" and variant != "per-step" else 1
    runner = make_runner("none", model, loss, tx, steps_per_dispatch=per_call)
    state = [runner.put_state(jax.device_get(create_train_state(model, tx, jax.random.PRNGKey(0),
                                                                (1,) + tuple(train.image_shape))))]
    key = jax.random.PRNGKey(1)
    feed = batches(train, args.batch_size, seed=0, epoch=0)
    pending = []

    def next_batch():
        b = next(feed)
        return runner.put_batch({"image": b["image"], "label": b["label"]})

    if kind == "feed":
        placed = []

        def run_one(i):
            placed.append(next_batch())

        def finish():
            jax.block_until_ready(placed)
            placed.clear()
        return _timed_steps(run_one, args.warmup, args.steps, finish)

    fixed = next_batch()
    chunk = []          # loop-cli: host batches of the next call, as fit groups them

    def call():
        state[0], metrics = runner.train_chunk(state[0], chunk, key)
        pending.append((metrics, len(chunk)))
        chunk.clear()

    def run_one(i):
        if kind != "loop-cli":
            state[0], metrics = runner.train_step(state[0], fixed, key)
            pending.append((metrics, 1))
        else:
            b = next(feed)
            chunk.append({"image": b["image"], "label": b["label"]})
            if len(chunk) == runner.steps_per_dispatch:
                call()
        if sum(n for _, n in pending) >= args.log_every:   # the loop's periodic fetch
            runner.get_metrics([m for m, _ in pending])
            pending.clear()

    def finish():
        if chunk:
            call()
        runner.get_metrics([m for m, _ in pending])
        pending.clear()
        jax.block_until_ready(state[0])
    return _timed_steps(run_one, args.warmup, args.steps, finish)


def run_torch(kind, args, variant=None):
    if variant == "kept":           # PyTorch with jaxcnn.hostmem's setting, for comparison
        from jaxcnn.hostmem import keep_freed_memory
        keep_freed_memory()
    import torch
    sys.path.insert(0, str(HERE / "peers"))
    from torch_train import arrays, build, optimizer   # the race's PyTorch loop: model, data, optimiser

    torch.manual_seed(0)
    x, y, num_classes, _ = arrays(args.dataset, "train")
    model = build(args.model, num_classes).train()
    steps = -(-len(x) // args.batch_size)
    if kind == "step-sgd":
        opt, sched = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), None
    else:
        opt, sched = optimizer(model, LR, WEIGHT_DECAY, EPOCHS * steps)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    fixed = order[:args.batch_size]

    def run_one(i):
        idx = order[i * args.batch_size:(i + 1) * args.batch_size] if kind == "loop-cli" else fixed
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return _timed_steps(run_one, args.warmup, args.steps, lambda: None)


def worker(config, args):
    env = dict(os.environ)
    add_xla_cpu_flags(env)          # the CLI's flags, with its jaxlib check
    cmd = [sys.executable, __file__, "--worker", config, "--model", args.model, "--dataset", args.dataset,
           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--log-every", str(args.log_every)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fmnist_cnn")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        framework, kind, *variant = args.worker.split(":")
        print(json.dumps((run_torch if framework == "torch" else run_jaxcnn)(kind, args, *variant)))
        return

    configs = args.configs.split(",")
    rounds = []
    for r in range(args.repeats):
        row = {}
        for c in configs:
            row[c] = worker(c, args)
            print(f"round {r + 1} {c}: {row[c]}", flush=True)
        rounds.append(row)

    def ms(c):
        return [rd[c]["ms_per_step"] for rd in rounds if "ms_per_step" in rd.get(c, {})]

    summary = {}
    for c in configs:
        times = ms(c)
        if not times:
            continue
        peer = "torch:" + c.split(":")[1]
        ratios = [rd[peer]["ms_per_step"] / rd[c]["ms_per_step"] for rd in rounds
                  if c.startswith("jaxcnn:") and "ms_per_step" in rd.get(peer, {}) and "ms_per_step" in rd[c]]
        summary[c] = {"ms_per_step": statistics.median(times), "min": min(times), "max": max(times),
                      "page_faults_per_step": statistics.median(rd[c]["page_faults_per_step"] for rd in rounds
                                                                if "ms_per_step" in rd.get(c, {}))}
        if ratios:
            summary[c]["vs_torch"] = statistics.median(ratios)
            summary[c]["vs_torch_range"] = [min(ratios), max(ratios)]
    print(f"\n{args.model} on {args.dataset}, batch {args.batch_size}, {args.steps} steps, "
          f"median of {args.repeats} interleaved rounds")
    print(f"{'configuration':30s} {'ms/step':>9s} {'min-max':>15s} {'vs PyTorch':>16s} {'faults/step':>12s}")
    for c, s in summary.items():
        ratio = f"{s['vs_torch']:.2f}x ({s['vs_torch_range'][0]:.2f}-{s['vs_torch_range'][1]:.2f})" \
            if "vs_torch" in s else ""
        print(f"{c:30s} {s['ms_per_step']:9.1f} {s['min']:7.1f}-{s['max']:<7.1f} {ratio:>16s} "
              f"{s['page_faults_per_step']:12.0f}")
    import jax
    import jaxlib
    import torch
    out = pathlib.Path(args.out or HERE / "results" / f"bench_epoch_{args.model}.json")
    out.write_text(json.dumps({"model": args.model, "dataset": args.dataset, "batch_size": args.batch_size,
                               "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                               "jax": jax.__version__, "jaxlib": jaxlib.__version__, "torch": torch.__version__,
                               "xla_flags": XLA_CPU_FLAGS, "cpu_count": os.cpu_count(),
                               "summary": summary, "rounds": rounds}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
