"""Int8 inference against float32, in jaxcnn and in PyTorch (CPU, one batch of 128).

Rows per model (fmnist_cnn, cifar_resnet18; randomly initialised, calibrated on 8
random batches -- the speed of a product does not depend on the values):

* jaxcnn float32 -- ``model.apply`` in eval mode with the plain ops (what ``jaxcnn
  eval`` runs) and under ``backprop_mode("auto")`` (oneDNN float32 convolutions);
* jaxcnn int8 -- ``compress.int8_apply`` compiled as ``jaxcnn eval`` compiles it
  (``jaxcnn.config.int8_compiler_options``): oneDNN's fused int8 calls (rescale, bias,
  ReLU, per-channel affine and the next layer's quantisation inside the VNNI / AMX
  kernels), the unfused oneDNN path (``fused=False``: int8 x int8 -> int32, the float glue
  in XLA), and the unfused path with lax's integer ops (before oneDNN; timed once);
* PyTorch float32 (``model.eval()`` under ``torch.inference_mode``) and PyTorch int8:
  ``torch.ao.quantization`` FX graph mode, the ``x86`` backend's default qconfig
  (per-channel weights, histogram-observed activations), same batch.

Each model's rows run in their own subprocess, round-robin ``--repeats`` times; a
configuration's time is the median over ``--steps`` calls, the figure the median over
rounds (the lax int8 row: the first round only). Ratios are to jaxcnn's float32 (plain ops) and to PyTorch's int8.

Run:  python experiments/bench_int8.py [--models fmnist_cnn,cifar_resnet18] [--repeats 3]
Writes experiments/results/bench_int8.json (``--out`` to change).
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
from jaxcnn.config import add_xla_cpu_flags  # noqa: E402  (jaxcnn.config imports no jax)

SHAPES = {"fmnist_cnn": (28, 28, 1), "cifar_resnet18": (32, 32, 3), "lenet5": (28, 28, 1)}
BATCH = 128


def _median_ms(fn, steps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def run_jax(name, steps, with_lax):
    import jax
    import numpy as np

    from jaxcnn import compress, models
    from jaxcnn.compress import int8 as int8_path
    from jaxcnn.config import int8_compiler_options
    from jaxcnn.dispatch import backprop_mode
    model = models.create(name)
    params, state = model.init(jax.random.PRNGKey(0), (1, *SHAPES[name]))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *SHAPES[name])).astype(np.float32)
    calib = [rng.standard_normal((BATCH, *SHAPES[name])).astype(np.float32) for _ in range(8)]
    q = compress.calibrate(model, params, state, calib)

    def forward(p, s, v):
        return model.apply(p, s, v)[0]

    def forward_auto(p, s, v):
        with backprop_mode("auto"):
            return model.apply(p, s, v)[0]
    plain = jax.jit(forward)
    auto = jax.jit(forward_auto)
    # compiled as `jaxcnn eval` compiles an int8 run (jaxcnn.config.int8_compiler_options)
    options = int8_compiler_options() or None
    int8 = jax.jit(lambda q_, p, s, v: compress.int8_apply(model, q_, p, s, v), compiler_options=options)
    unfused = jax.jit(lambda q_, p, s, v: compress.int8_apply(model, q_, p, s, v, fused=False),
                      compiler_options=options)
    out = {"jaxcnn float32": _median_ms(lambda: plain(params, state, x).block_until_ready(), steps),
           "jaxcnn float32 (auto: oneDNN)": _median_ms(lambda: auto(params, state, x).block_until_ready(), steps),
           "jaxcnn int8 (oneDNN)": _median_ms(lambda: int8(q, params, state, x).block_until_ready(), steps),
           "jaxcnn int8 (oneDNN, unfused)": _median_ms(lambda: unfused(q, params, state, x).block_until_ready(),
                                                       steps)}
    if not with_lax:
        return out
    onednn_logits = np.asarray(unfused(q, params, state, x))
    # the path before oneDNN: lax's integer convolution / dot (same integers)
    int8_path.onednn_int8.conv_applies = lambda *a, **k: False
    int8_path.onednn_int8.matmul_applies = lambda *a, **k: False
    lax_int8 = jax.jit(lambda q_, p, s, v: compress.int8_apply(model, q_, p, s, v, fused=False),
                       compiler_options=options)
    # seconds per call for cifar_resnet18: one call after the compile
    out["jaxcnn int8 (lax)"] = _median_ms(lambda: lax_int8(q, params, state, x).block_until_ready(), 1, warmup=1)
    lax_logits = np.asarray(lax_int8(q, params, state, x))   # the same integers; float glue may round apart
    assert np.allclose(onednn_logits, lax_logits, rtol=1e-5, atol=1e-5 * np.abs(lax_logits).max()), \
        "int8 paths disagree"
    return out


def run_torch(name, steps):
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    sys.path.insert(0, str(HERE))
    from peers.torch_models import MODELS as TORCH
    torch.set_num_threads(os.cpu_count() or 1)
    torch.backends.quantized.engine = "x86"
    build, shape = TORCH[name]
    model = build(num_classes=10).eval()
    x = torch.randn(BATCH, *shape)
    with torch.inference_mode():
        out = {"torch float32": _median_ms(lambda: model(x), steps)}
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), example_inputs=(x,))
    with torch.inference_mode():
        for _ in range(8):
            prepared(torch.randn(BATCH, *shape))
    quantized = convert_fx(prepared)
    with torch.inference_mode():
        out["torch int8 (x86)"] = _median_ms(lambda: quantized(x), steps)
    return out


def child(args):
    result = {}
    result.update(run_jax(args.child, args.steps, args.with_lax))
    result.update(run_torch(args.child, args.steps))
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fmnist_cnn,cifar_resnet18")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_int8.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--with-lax", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    env = dict(os.environ)
    add_xla_cpu_flags(env)
    rounds: dict[str, list[dict]] = {m: [] for m in args.models.split(",")}
    for r in range(args.repeats):
        for name in rounds:
            # the lax integer path (53 s per cifar_resnet18 call) is timed in the first round only
            lax = ["--with-lax"] if r == 0 else []
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps), *lax],
                                  capture_output=True, text=True, env=env, check=False)
            if proc.returncode:
                sys.exit(f"{name}: child failed:\n{proc.stderr[-3000:]}")
            rounds[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in rounds[name][-1].items()),
                  flush=True)
    report = {"batch": BATCH, "repeats": args.repeats, "steps": args.steps, "models": {}}
    lines = ["| model | configuration | ms / batch 128 | vs jaxcnn float32 | vs torch int8 |", "|---|---|---|---|---|"]
    for name, runs in rounds.items():
        med = {k: statistics.median(run[k] for run in runs if k in run) for k in runs[0]}
        report["models"][name] = {"median_ms": med, "rounds": runs}
        for k, v in med.items():
            lines.append(f"| {name} | {k} | {v:.1f} | {med['jaxcnn float32'] / v:.2f}x | "
                         f"{med['torch int8 (x86)'] / v:.2f}x |")
    table = "\n".join(lines)
    report["table"] = table
    pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
