"""The `jaxcnn train` run written as a plain PyTorch loop (the peer of the CLI end to end).

Same model (experiments/peers/torch_models.py, BatchNorm momentum/eps set to jaxcnn's
fmnist_cnn: torch momentum 0.01, eps 1e-3), same data (``jaxcnn.data.load_dataset``,
pixels / 255 then normalised with the train split's mean/std, as the CLI does), same
optimiser and schedule as the CLI defaults: AdamW (weight decay on kernels only) with
optax's cosine one-cycle (= torch OneCycleLR, pct_start 0.3, div 25, final div 1e4),
batch 128, reshuffled every epoch, last partial batch kept. Reports wall time (data in
memory to last evaluation), images/s of each epoch, and test accuracy per epoch.

Run:  python experiments/peers/torch_train.py --model fmnist_cnn --dataset fashion_mnist --epochs 15
Writes experiments/results/torch_train_<model>.json (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent))


def build(name, num_classes):
    from peers.torch_models import MODELS
    model = MODELS[name][0](num_classes)
    if name == "fmnist_cnn":     # jaxcnn's fmnist_cnn uses Keras' BN momentum 0.99 / eps 1e-3
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.momentum, m.eps = 0.01, 1e-3
    return model


def arrays(dataset, split, norm=None):
    from jaxcnn.data import load_dataset
    ds = load_dataset(dataset, split)
    x = ds.images.astype(np.float32)
    if ds.images.dtype == np.uint8:
        x /= 255.0
    if norm is None:
        norm = (x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2)))
    x = (x - norm[0]) / norm[1]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(
        ds.labels.astype(np.int64)), ds.num_classes, norm


def optimizer(model, lr, weight_decay, total_steps):
    """The CLI's optimiser in PyTorch: AdamW with weight decay on kernels only, stepped by
    OneCycleLR (= optax's cosine one-cycle). Returns ``(optimizer, scheduler)``."""
    decay = [q for q in model.parameters() if q.ndim >= 2]
    no_decay = [q for q in model.parameters() if q.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total_steps, pct_start=0.3,
                                                anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
                                                cycle_momentum=False)
    return opt, sched


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fmnist_cnn")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--limit", type=int, default=0, help="use only the first N training examples (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    x, y, num_classes, norm = arrays(args.dataset, "train")
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    xt, yt, _, _ = arrays(args.dataset, "test", norm)
    model = build(args.model, num_classes)
    steps_per_epoch = -(-len(x) // args.batch_size)
    opt, sched = optimizer(model, args.lr, args.weight_decay, args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    epochs = []
    t_start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
        train_s = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum())
                          for i in range(0, len(xt), 1000))
        epochs.append({"epoch": epoch + 1, "train_s": train_s, "images_per_sec": len(x) / train_s,
                       "loss": float(loss), "test_accuracy": correct / len(xt)})
        print(json.dumps(epochs[-1]), flush=True)
    wall = time.perf_counter() - t_start
    result = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size,
              "train_examples": len(x), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "wall_s": wall, "test_accuracy": epochs[-1]["test_accuracy"], "per_epoch": epochs}
    out = pathlib.Path(args.out or HERE.parent / "results" / f"torch_train_{args.model}.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"wall {wall:.1f} s, test accuracy {result['test_accuracy']:.4f}; wrote {out}")


if __name__ == "__main__":
    main()
