"""The notes' reduced-complexity table on Fashion-MNIST, in one command.

``fmnist_cnn`` trained with ``jaxcnn train``, then compressed with ``jaxcnn compress``:
dense fine-tuned control, unstructured global magnitude pruning at 50/80/90/95% (one-shot,
then fine-tuned under the masked optimiser), int8 post-training quantisation (weights only,
and the real int8 x int8 -> int32 path with calibrated activations), int8 QAT, XNOR binary
weights fine-tuned from the float run, and the depthwise-separable variant of the same
network trained from scratch with the same recipe. For each: test accuracy, kernel
parameters (non-zero), bytes on disk of the compressed file, and CPU latency per batch of
128 (median of interleaved rounds, ratios to float32 in the same run).

    python experiments/compress_fmnist.py [--epochs 2] [--finetune-epochs 1] [--rounds 15]

Writes experiments/results/compress/{results.json,table.md} and the runs under
experiments/results/compress/runs/ (metrics.jsonl + config.json + compressed.npz).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "compress")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2, help="training epochs of the float and separable models")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--finetune-steps", type=int, default=None,
                    help="cap on fine-tuning steps per epoch")
    ap.add_argument("--separable-steps", type=int, default=None, help="cap on the separable model's steps per epoch")
    ap.add_argument("--rounds", type=int, default=15, help="latency rounds (interleaved)")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)

    from jaxcnn import cli
    cli.apply_xla_tuning()
    import jax
    import numpy as np

    from jaxcnn import compress as C
    from jaxcnn.combinators import serial
    from jaxcnn.data import batches, load_splits, steps_per_epoch
    from jaxcnn.layers import BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool, Relu
    from jaxcnn.models import Model, create
    from jaxcnn.ops import cross_entropy
    from jaxcnn.train import defaults, evaluate_model, fit, make_optimizer, make_schedule

    runs = os.path.join(args.out, "runs")
    os.makedirs(runs, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    rows = []

    def save():
        with open(results_path, "w") as f:
            json.dump({"epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
                       "finetune_steps_per_epoch": args.finetune_steps, "float_run_step": float_step,
                       "separable_steps_per_epoch": args.separable_steps, "rows": rows,
                       "jax": jax.__version__, "cpu_count": os.cpu_count()}, f, indent=2)

    def records(run):
        with open(os.path.join(run, "metrics.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]

    # ------------------------------------------------------------ the float run
    base = os.path.join(runs, "float")
    if not os.path.exists(os.path.join(base, "checkpoints")):
        t = time.perf_counter()
        assert cli.main(["train", "--model", "fmnist_cnn", "--dataset", "fashion_mnist", "--epochs",
                         str(args.epochs), "--batch-size", "128", "--out", base, "--no-progress"]) == 0
        print(f"float training: {time.perf_counter() - t:.0f}s", file=sys.stderr)
    train, test, _ = load_splits("fashion_mnist", None)
    model = create("fmnist_cnn", num_classes=10)
    source = C.open_run(base)
    params, state, float_step = source.params, source.state, source.step

    def add(name, run, **extra):
        recs = records(run) if run else []
        saved = recs[-1] if recs else {}
        row = {"name": name, "run": os.path.relpath(run, args.out) if run else None, **saved, **extra}
        row.pop("layers", None)
        rows.append(row)
        save()
        print(json.dumps(row), file=sys.stderr)

    def compress_run(name, *flags):
        run = os.path.join(runs, name)
        if os.path.exists(os.path.join(run, "compressed.npz")) and records(run)[-1]["phase"] == "saved":
            return run, None  # finished by an earlier invocation: reused (delete the folder to redo it)
        if os.path.exists(run):
            shutil.rmtree(run)
        t = time.perf_counter()
        cap = ["--steps-per-epoch", str(args.finetune_steps)] if args.finetune_steps else []
        assert cli.main(["compress", "--checkpoint", base, "--out", run, "--no-progress", *cap, *flags]) == 0
        return run, time.perf_counter() - t

    base_bytes = C.save_compressed(os.path.join(runs, "float.npz"), params, state, sparse=False)
    r = evaluate_model(model, params, state, batches(test, 256, seed=0, epoch=0, shuffle=False,
                                                     drop_remainder=False))
    rows.append({"name": "float32", "run": "runs/float", "test_accuracy": r["accuracy"], "bytes": base_bytes,
                 "kernel_params": C.sparsity_report(params)["size"]})
    save()

    ft = str(args.finetune_epochs)
    for amount in (0.0, 0.5, 0.8, 0.9, 0.95):
        run, secs = compress_run(f"prune{int(amount * 100)}", "--prune", str(amount), "--scope", "global",
                                 "--finetune-epochs", ft)
        rec = records(run)
        before = next((x["test_accuracy"] for x in rec if x["phase"] == "prune"), None)
        add(f"pruned {amount:.0%}", run, accuracy_before_finetune=before, seconds=secs,
            sparsity=next(x["sparsity"] for x in rec if x["phase"] == "pruned"))
    run, secs = compress_run("int8_ptq", "--quantize", "int8", "--finetune-epochs", "0")
    rec = records(run)
    add("int8 PTQ", run, int8_path_accuracy=next(x["test_accuracy"] for x in rec if x["phase"] == "int8_inference"),
        seconds=secs)
    run, secs = compress_run("int8_qat", "--quantize", "int8", "--qat", "--finetune-epochs", ft)
    rec = records(run)
    add("int8 QAT", run, int8_path_accuracy=next(x["test_accuracy"] for x in rec if x["phase"] == "int8_inference"),
        seconds=secs)
    run, secs = compress_run("xnor", "--binarize", "xnor", "--finetune-epochs", ft)
    add("XNOR binary weights", run, accuracy_before_finetune=next(
        x["test_accuracy"] for x in records(run) if x["phase"] == "binarize"), seconds=secs)

    # ------------------------------------------------------------ depthwise-separable variant
    def separable(widths=(32, 64), hidden=512, dropout=(0.25, 0.25, 0.5)):
        """fmnist_cnn with every 3x3 conv after the first as depthwise 3x3 (no bias) + pointwise 1x1."""
        items, i, c_in = [], 0, 1
        for block, width in enumerate(widths, 1):
            for _ in range(2):
                i += 1
                if c_in == 1:
                    items += [(f"conv{i}", Conv(width, 3, padding="same"))]
                else:
                    items += [(f"dw{i}", Conv(c_in, 3, padding="same", groups=c_in, use_bias=False)),
                              (f"pw{i}", Conv(width, 1))]
                items += [(f"act{i}", Relu()), (f"bn{i}", BatchNorm(momentum=0.01, eps=1e-3))]
                c_in = width
            items += [(f"pool{block}", MaxPool(2)), (f"drop{block}", Dropout(dropout[block - 1]))]
        items += [("flatten", Flatten()), ("fc1", Dense(hidden)), ("act_fc1", Relu()),
                  ("bn_fc1", BatchNorm(momentum=0.01, eps=1e-3)), ("drop_fc1", Dropout(dropout[-1])),
                  ("fc2", Dense(10))]
        return Model(serial(*items, name="fmnist_cnn_separable"), "fmnist_cnn_separable", (28, 28, 1), 10)

    # the notes' example: one 3x3 conv 16 -> 32 against its separable version
    _, full_p, _ = Conv(32, 3).init(jax.random.PRNGKey(0), (1, 8, 8, 16))
    _, dw_p, _ = Conv(16, 3, groups=16, use_bias=False).init(jax.random.PRNGKey(0), (1, 8, 8, 16))
    _, pw_p, _ = Conv(32, 1).init(jax.random.PRNGKey(0), (1, 8, 8, 16))
    count = lambda t: int(sum(np.size(x) for x in jax.tree.leaves(t)))  # noqa: E731
    notes_example = {"conv3x3_16_32": count(full_p), "separable_16_32": count(dw_p) + count(pw_p)}

    sep = separable()
    steps = steps_per_epoch(len(train), 128)
    if args.separable_steps:
        steps = min(steps, args.separable_steps)
    sep_dir = os.path.join(runs, "separable")
    os.makedirs(sep_dir, exist_ok=True)
    t = time.perf_counter()
    result = fit(sep, train_batches=lambda e, s: batches(train, 128, seed=0, epoch=e, start_step=s),
                 steps_per_epoch=steps, epochs=args.epochs, input_shape=(1, 28, 28, 1),
                 tx=make_optimizer(defaults.OPTIMIZER, make_schedule(defaults.SCHEDULE, defaults.LR, args.epochs * steps),
                                    weight_decay=defaults.WEIGHT_DECAY),
                 loss=cross_entropy, test_batches=lambda: batches(test, 256, seed=0, epoch=0, shuffle=False,
                                                                  drop_remainder=False),
                 out_dir=sep_dir, progress=False)
    sep_params, sep_state = jax.device_get(result.train_state.params), jax.device_get(result.train_state.state)
    sep_bytes = C.save_compressed(os.path.join(sep_dir, "separable.npz"), sep_params, sep_state, sparse=False)
    rows.append({"name": "depthwise-separable", "run": "runs/separable",
                 "test_accuracy": result.history[-1]["test_accuracy"], "bytes": sep_bytes,
                 "kernel_params": C.sparsity_report(sep_params)["size"], "seconds": time.perf_counter() - t,
                 "notes_example": notes_example})
    save()

    # ------------------------------------------------------------ parameters and latency
    def total_params(p):
        return int(sum(np.size(x) for x in jax.tree.leaves(p)))
    for row in rows:
        if row["name"].startswith("pruned"):
            rep = C.sparsity_report(C.load_compressed(os.path.join(args.out, row["run"], "compressed.npz"))[0])
            row["nonzero_kernel_params"] = rep["size"] - rep["zeros"]
    x = np.asarray(next(iter(batches(test, 128, seed=0, epoch=0, shuffle=False)))["image"])
    float_fn = jax.jit(lambda p, s, v: model.apply(p, s, v)[0])
    calib = [b["image"] for b, _ in zip(batches(train, 128, seed=0, epoch=0), range(8))]
    qp = C.calibrate(model, params, state, calib)
    int8_fn = jax.jit(lambda q, p, s, v: C.int8_apply(model, q, p, s, v))
    sep_fn = jax.jit(lambda p, s, v: sep.apply(p, s, v)[0])
    candidates = {"float32": lambda: float_fn(params, state, x), "int8": lambda: int8_fn(qp, params, state, x),
                  "separable": lambda: sep_fn(sep_params, sep_state, x)}
    times = {k: [] for k in candidates}
    for fn in candidates.values():
        jax.block_until_ready(fn())
    for _ in range(args.rounds):
        for k, fn in candidates.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t)
    latency = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for row in rows:
        key = "int8" if row["name"].startswith("int8") else "separable" if row["name"].startswith("depth") \
            else "float32"
        row["latency_ms_b128"] = latency[key]
        row["latency_path"] = key
        row["latency_vs_float32"] = latency[key] / latency["float32"]
    save()

    # ------------------------------------------------------------ table
    lines = ["| network | test accuracy | kernel params (non-zero) | bytes on disk | vs float | "
             "CPU ms / batch 128 (path) |", "|---|---|---|---|---|---|"]
    for row in rows:
        acc = f"{row['test_accuracy']:.2%}"
        if "int8_path_accuracy" in row:
            acc += f" (int8 path {row['int8_path_accuracy']:.2%})"
        nz = row.get("nonzero_kernel_params", row.get("kernel_params", rows[0]["kernel_params"]))
        size = row.get("bytes", 0)
        lines.append(f"| {row['name']} | {acc} | {nz:,} | {size:,} | {base_bytes / max(size, 1):.1f}x smaller | "
                     f"{row['latency_ms_b128']:.1f} ({row['latency_path']}, {row['latency_vs_float32']:.2f}x) |")
    table = "\n".join(lines)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
