"""End to end: `jaxcnn train` against the same run as a plain PyTorch loop.

Runs, one after the other in fresh processes (never concurrently: they share the CPU),
``jaxcnn train --model MODEL --dataset DATASET --epochs E --batch-size 128`` (the CLI's
defaults otherwise: AdamW, one-cycle; a fresh compilation cache, so the compile is paid
and counted) and
``experiments/peers/torch_train.py`` with the same model, data, optimiser, schedule and
batch. Reports for each: process wall time (start to exit: imports, data, compile,
training, evaluations, checkpoints), the training loop's own time, the last epoch's
images/s and the final test accuracy. ``--order torch,jaxcnn`` swaps who goes first.

Run:  python experiments/race_fmnist.py [--epochs 15] [--model fmnist_cnn]
Writes experiments/results/race_<model>_<dataset>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def run_jaxcnn(args, work):
    out = work / "run"
    env = {**os.environ, "JAXCNN_CACHE_DIR": str(work / "cache")}
    cmd = [str(pathlib.Path(sys.executable).with_name("jaxcnn")), "train", "--model", args.model, "--dataset",
           args.dataset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--out", str(out),
           "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"jaxcnn train failed ({proc.returncode}): {proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = records[-1]
    return {"process_wall_s": wall, "loop_wall_s": last.get("wall_s"), "test_accuracy": last["test_accuracy"],
            "last_epoch_images_per_sec": last.get("images_per_sec"), "epochs": len(records),
            "per_epoch": records, "command": " ".join(cmd[1:])}


def run_torch(args, work):
    out = work / "torch.json"
    cmd = [sys.executable, str(HERE / "peers" / "torch_train.py"), "--model", args.model, "--dataset",
           args.dataset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"torch_train.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    return {"process_wall_s": wall, "loop_wall_s": result["wall_s"], "test_accuracy": result["test_accuracy"],
            "last_epoch_images_per_sec": result["per_epoch"][-1]["images_per_sec"], "epochs": result["epochs"],
            "per_epoch": result["per_epoch"], "threads": result["threads"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fmnist_cnn")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--order", default="jaxcnn,torch")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    runners = {"jaxcnn": run_jaxcnn, "torch": run_torch}
    results = {}
    work = pathlib.Path(tempfile.mkdtemp(prefix="race-"))
    try:
        for name in args.order.split(","):
            print(f"running {name} ...", flush=True)
            results[name] = runners[name](args, work)
            r = results[name]
            print(f"{name}: process wall {r['process_wall_s']:.1f} s, loop {r['loop_wall_s']:.1f} s, "
                  f"last epoch {r['last_epoch_images_per_sec']:.0f} img/s, test accuracy "
                  f"{r['test_accuracy']:.4f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = results["torch"]["process_wall_s"] / results["jaxcnn"]["process_wall_s"]
    print(f"jaxcnn wall time vs PyTorch: {ratio:.2f}x as fast (above 1: jaxcnn finishes first)")
    out = pathlib.Path(args.out or HERE / "results" / f"race_{args.model}_{args.dataset}.json")
    out.write_text(json.dumps({"model": args.model, "dataset": args.dataset, "epochs": args.epochs,
                               "order": args.order, "cpu_count": os.cpu_count(),
                               "speed_ratio_vs_torch": ratio, **results}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
