"""Train-step images/s on the default accelerator: jaxcnn (fp32, bf16) against PyTorch
CUDA (fp32, bf16 autocast) where PyTorch sees a GPU. One run, one table.

Each row times a full train step -- forward, cross-entropy, backward, SGD-momentum
update, as ``experiments/bench_train.py`` does on CPU -- with the batch already on the
device, after ``--warmup`` steps, as the median of ``--steps`` steps. jaxcnn's step is
``make_train_step`` with its default ``backprop="auto"`` (on a GPU its oneDNN calls are
never lowered: XLA's convolutions take their place) jitted with the train state
donated; ``bf16`` computes in bfloat16 with float32 parameters (``--precision bf16``).
PyTorch: ``torch.backends.cudnn.benchmark = True``, bf16 rows under
``torch.autocast("cuda", torch.bfloat16)``; fp32 rows use each framework's default
(both let cuDNN / XLA use TF32 for float32 convolutions on Ampere and newer; see
docs/performance.md).

On a machine without a GPU (jax's default backend is the CPU) it says so and exits 0;
``--allow-cpu`` runs the jax rows on the CPU anyway (a smoke test of the script).

Run:  python experiments/bench_gpu.py [--models lenet5,fmnist_cnn,...] [--steps 20]
Writes experiments/results/bench_gpu.json (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
# jax and PyTorch share the GPU in this process: no up-front grab of 75% of its memory
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# name -> (jaxcnn create kwargs, NHWC input, batch); PyTorch peers in peers/torch_models.py
MODELS = {
    "lenet5": ({}, (28, 28, 1), 256),
    "fmnist_cnn": ({}, (28, 28, 1), 256),
    "cifar_resnet18": ({}, (32, 32, 3), 256),
    "mobilenet_v2": ({}, (32, 32, 3), 256),
    "unet": ({"base": 16, "depth": 3, "input_shape": (64, 64, 1), "num_classes": 2}, (64, 64, 1), 32),
    "resnet50": ({}, (224, 224, 3), 64),                   # PyTorch row where torchvision is installed
}


def _labels_shape(name, batch, shape):
    return (batch, *shape[:2]) if name == "unet" else (batch,)


def _median_time(step, sync, warmup, steps):
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_jaxcnn(name, precision, warmup, steps):
    import jax
    import optax
    from jaxcnn import models
    from jaxcnn.train import create_train_state, make_train_step
    kwargs, shape, batch = MODELS[name]
    model = models.create(name, **{"num_classes": 10, **kwargs})
    tx = optax.sgd(0.01, momentum=0.9)

    def loss(logits, labels):   # mean cross-entropy (per pixel for unet)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    device = jax.devices()[0]
    ts = jax.device_put(create_train_state(model, tx, jax.random.PRNGKey(2), (batch, *shape)), device)
    data = jax.device_put({"image": jax.random.normal(jax.random.PRNGKey(0), (batch, *shape)),
                           "label": jax.random.randint(jax.random.PRNGKey(1), _labels_shape(name, batch, shape),
                                                       0, model.num_classes)}, device)
    key = jax.random.PRNGKey(4)
    t0 = time.perf_counter()
    compiled = jax.jit(make_train_step(model, loss, tx, precision=precision), donate_argnums=0).lower(
        ts, data, key).compile()
    compile_s = time.perf_counter() - t0
    carry = {"ts": ts, "loss": None}

    def step():
        carry["ts"], metrics = compiled(carry["ts"], data, key)
        carry["loss"] = metrics["loss"]

    median = _median_time(step, lambda: carry["loss"].block_until_ready(), warmup, steps)
    return {"step_ms": 1e3 * median, "images_per_sec": batch / median, "compile_s": compile_s,
            "final_loss": float(carry["loss"])}


def _torch_model(name):
    if name == "resnet50":
        import torchvision   # optional: not a dependency of jaxcnn
        return torchvision.models.resnet50(num_classes=10), (3, 224, 224)
    from peers.torch_models import MODELS as TORCH
    build, shape = TORCH[name]
    return build(10), shape


def run_torch(name, precision, warmup, steps):
    import contextlib
    import torch
    torch.backends.cudnn.benchmark = True
    _, _, batch = MODELS[name]
    model, shape = _torch_model(name)
    model = model.cuda().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape, device="cuda")
    y = torch.randint(0, 2 if name == "unet" else 10, _labels_shape(name, batch, shape[1:]), device="cuda")

    def autocast():
        return torch.autocast("cuda", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    out = {}

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        out["loss"] = loss

    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    median = _median_time(step, torch.cuda.synchronize, warmup, steps)
    return {"step_ms": 1e3 * median, "images_per_sec": batch / median, "first_step_s": first,
            "final_loss": float(out["loss"])}


def torch_cuda():
    """``(available, why not)``: PyTorch with a CUDA device, else the reason."""
    try:
        import torch
    except ImportError:
        return False, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return False, f"PyTorch {torch.__version__} sees no CUDA device"
    return True, f"PyTorch {torch.__version__}, {torch.cuda.get_device_name(0)}"


def table(rows):
    lines = [f"{'model':15s} {'batch':>5s} {'framework':8s} {'precision':9s} {'ms/step':>9s} {'images/s':>10s} "
             f"{'vs torch':>9s} {'compile s':>9s}"]
    torch_ips = {(r["model"], r["precision"]): r["images_per_sec"] for r in rows
                 if r["framework"] == "torch" and "images_per_sec" in r}
    for r in rows:
        head = f"{r['model']:15s} {r['batch']:5d} {r['framework']:8s} {r['precision']:9s}"
        if "images_per_sec" not in r:
            lines.append(f"{head} {r['error']}")
            continue
        ref = torch_ips.get((r["model"], r["precision"]))
        ratio = f"{r['images_per_sec'] / ref:8.2f}x" if ref and r["framework"] != "torch" else f"{'':9s}"
        comp = f"{r['compile_s']:9.1f}" if "compile_s" in r else ""
        lines.append(f"{head} {r['step_ms']:9.2f} {r['images_per_sec']:10.0f} {ratio} {comp}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=None, help="one batch size for every model (default: per model)")
    p.add_argument("--no-torch", action="store_true", help="jaxcnn rows only")
    p.add_argument("--allow-cpu", action="store_true", help="run the jax rows even when there is no GPU")
    p.add_argument("--out", default=str(HERE / "results" / "bench_gpu.json"))
    args = p.parse_args(argv)
    names, precisions = args.models.split(","), args.precisions.split(",")
    for name in names:
        if name not in MODELS:
            p.error(f"--models: unknown model {name!r}; expected some of {', '.join(MODELS)}")
    for precision in precisions:
        if precision not in ("fp32", "bf16"):
            p.error(f"--precisions: expected fp32 and/or bf16, got {precision!r}")
    if args.steps < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
        p.error(f"need --steps >= 1, --warmup >= 0, --batch >= 1; got {args.steps}, {args.warmup}, {args.batch}")
    if args.batch:
        for name in names:
            MODELS[name] = (*MODELS[name][:2], args.batch)

    import jax
    backend = jax.default_backend()
    if backend == "cpu" and not args.allow_cpu:
        print(f"no GPU: jax {jax.__version__}'s default backend is the CPU ({jax.device_count()} device(s)); "
              f"nothing to measure (install jax[cuda12] on a machine with an NVIDIA GPU, or pass --allow-cpu)")
        return 0
    device = jax.devices()[0]
    use_torch, torch_note = (False, "--no-torch") if args.no_torch else torch_cuda()
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}, {jax.device_count()} device(s)); "
          f"torch: {torch_note}", flush=True)

    rows = []
    for name in names:
        batch = MODELS[name][2]
        for precision in precisions:
            runners = [("jaxcnn", run_jaxcnn)] + ([("torch", run_torch)] if use_torch else [])
            for framework, runner in runners:
                row = {"model": name, "batch": batch, "framework": framework, "precision": precision}
                try:
                    row.update(runner(name, precision, args.warmup, args.steps))
                except Exception as e:  # noqa: BLE001 -- one failed row (OOM, no torchvision) keeps the table
                    row["error"] = f"error: {type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n" + table(rows))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"jax": jax.__version__, "platform": device.platform, "device_kind": device.device_kind,
                               "torch": torch_note, "warmup": args.warmup, "steps": args.steps, "rows": rows},
                              indent=1))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
