"""Convolution forward + backward: XLA's own (``ops.conv`` under autodiff), the conv
``backprop="auto"`` used before (``kernels.xla.conv``), the oneDNN custom calls
(``kernels.onednn.conv``, auto's choice now) and PyTorch (``conv2d``, channels-last
memory, oneDNN inside), on the layers of the zoo's models.

Each row times the forward and the VJP at a fixed cotangent -- ``y``, ``dx`` and ``dw``
(PyTorch: ``conv2d`` and ``y.backward(dy)``) -- jit-compiled, median of ``--steps`` calls; the four
implementations are timed in interleaved rounds in one process (``--rounds``) and the
median per row reported with the ratio of the oneDNN path to PyTorch.

``--dtype bf16`` times the same in bfloat16 (inputs, kernel and cotangent; jaxcnn's
rows are XLA's bf16 conv, the "fast" one and oneDNN's bf16 (AMX) kernels, PyTorch's
row ``conv2d`` on bfloat16 tensors, as under autocast).
``--prefixes A,B`` compares oneDNN installs: the whole table is run once per prefix per
round, each in its own process (one oneDNN per process), alternating, ``default``
meaning jaxcnn's own dependency (see experiments/_onednn_prefix.py).

Run:  python experiments/bench_conv_onednn.py [--rounds 3] [--steps 10] [--dtype bf16]
      python experiments/bench_conv_onednn.py --prefixes default,/tmp/onednn26p
Writes experiments/results/bench_conv_onednn.json (or --out).
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
from jaxcnn.config import XLA_CPU_FLAGS, add_xla_cpu_flags  # noqa: E402  (imports no jax)

add_xla_cpu_flags(os.environ)  # the CLI's flags, with its jaxlib check, before jax loads

# name -> (NHWC input, HWIO kernel, stride, padding, groups)
LAYERS = {
    "fmnist conv1 1->32 28x28": ((128, 28, 28, 1), (3, 3, 1, 32), 1, 1, 1),
    "fmnist conv2 32->32 28x28": ((128, 28, 28, 32), (3, 3, 32, 32), 1, 1, 1),
    "fmnist conv3 32->64 14x14": ((128, 14, 14, 32), (3, 3, 32, 64), 1, 1, 1),
    "fmnist conv4 64->64 14x14": ((128, 14, 14, 64), (3, 3, 64, 64), 1, 1, 1),
    "lenet5 conv2 6->16 5x5 14x14": ((128, 14, 14, 6), (5, 5, 6, 16), 1, 0, 1),
    "resnet18 64->64 32x32": ((128, 32, 32, 64), (3, 3, 64, 64), 1, 1, 1),
    "resnet18 128->256 /2 16x16": ((128, 16, 16, 128), (3, 3, 128, 256), 2, 1, 1),
    "mobilenet dw 96 16x16": ((128, 16, 16, 96), (3, 3, 1, 96), 1, 1, 96),
    "mobilenet dw 144 /2 16x16": ((128, 16, 16, 144), (3, 3, 1, 144), 2, 1, 144),
    "mobilenet 1x1 96->24 16x16": ((128, 16, 16, 96), (1, 1, 96, 24), 1, 0, 1),
    "unet 16->16 64x64 b16": ((16, 64, 64, 16), (3, 3, 16, 16), 1, 1, 1),
    "unet 64->64 16x16 b16": ((16, 16, 16, 64), (3, 3, 64, 64), 1, 1, 1),
}


def jax_runners(x_shape, w_shape, stride, padding, groups, dtype="f32"):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcnn import ops
    from jaxcnn.kernels import onednn, xla as fast
    rng = np.random.default_rng(0)
    dt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    x = jnp.asarray(rng.standard_normal(x_shape), dt)
    w = jnp.asarray(rng.standard_normal(w_shape) * 0.1, dt)
    out = {}
    for name, conv in (("xla", ops.conv), ("fast", fast.conv), ("onednn", onednn.conv)):
        def forward(x, w, conv=conv):
            return conv(x, w, stride=stride, padding=padding, groups=groups)
        dy = jnp.asarray(rng.standard_normal(jax.eval_shape(forward, x, w).shape), dt)

        def fwd_bwd(x, w, dy, forward=forward):
            y, pull = jax.vjp(forward, x, w)
            return y, *pull(dy)
        fn = jax.jit(fwd_bwd)
        out[name] = lambda fn=fn, dy=dy: jax.block_until_ready(fn(x, w, dy))
    return out


def torch_runner(x_shape, w_shape, stride, padding, groups, dtype="f32"):
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    n, *spatial, c = x_shape
    x = torch.randn(n, c, *spatial).to(dt).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (0.1 * torch.randn(w_shape[-1], w_shape[-2], *w_shape[:-2])).to(dt).requires_grad_()

    def forward():
        return torch.nn.functional.conv2d(x, w, stride=stride, padding=padding, groups=groups)
    dy = torch.randn_like(forward())

    def step():
        x.grad = w.grad = None
        forward().backward(dy)
    return step


def median_ms(fn, steps):
    fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    p.add_argument("--layers", default=None, help="comma-separated substrings of layer names (default: all)")
    p.add_argument("--prefixes", default=None, help="compare oneDNN installs: 'default,/path/prefix,...'")
    p.add_argument("--out", default=str(HERE / "results" / "bench_conv_onednn.json"))
    args = p.parse_args()
    if args.prefixes:
        return compare_prefixes(args)
    import _onednn_prefix
    prefix = _onednn_prefix.apply()
    import jax
    import jaxlib
    import torch  # noqa: F401  (first: its OpenMP reads the environment before onednn.load() sets OMP_WAIT_POLICY)

    from jaxcnn.kernels import onednn
    if not onednn.load():
        sys.exit(f"bench_conv_onednn: {onednn.reason()}")
    rows = []
    layers = {k: v for k, v in LAYERS.items()
              if not args.layers or any(s in k for s in args.layers.split(","))}
    print(f"oneDNN {_onednn_prefix.version()} ({prefix or 'default'}), {args.dtype}", flush=True)
    print(f"{'layer':32s} {'xla ms':>8s} {'fast ms':>8s} {'onednn':>8s} {'torch':>8s} {'onednn/xla':>10s} "
          f"{'vs torch':>8s}")
    for name, spec in layers.items():
        runners = {**jax_runners(*spec, args.dtype), "torch": torch_runner(*spec, args.dtype)}
        rounds = {k: [] for k in runners}
        for _ in range(args.rounds):
            for k, fn in runners.items():
                rounds[k].append(median_ms(fn, args.steps))
        ms = {k: statistics.median(v) for k, v in rounds.items()}
        row = {"layer": name, "spec": spec, **{f"{k}_ms": v for k, v in ms.items()},
               "speedup_vs_xla": ms["xla"] / ms["onednn"], "ratio_vs_torch": ms["torch"] / ms["onednn"]}
        rows.append(row)
        print(f"{name:32s} {ms['xla']:8.2f} {ms['fast']:8.2f} {ms['onednn']:8.2f} {ms['torch']:8.2f} "
              f"{row['speedup_vs_xla']:9.2f}x {row['ratio_vs_torch']:7.2f}x", flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"jax": jax.__version__, "jaxlib": jaxlib.__version__, "cpu_count": os.cpu_count(),
                               "onednn": _onednn_prefix.version(), "prefix": prefix or "default",
                               "dtype": args.dtype, "rounds": args.rounds, "steps": args.steps, "rows": rows},
                              indent=1))
    print("wrote", out)


def compare_prefixes(args):
    """Each prefix's table in its own process, alternating, ``--rounds`` times; the
    median per layer of each prefix's oneDNN row, and the ratio to the first prefix
    taken within each round (same load)."""
    import subprocess
    import tempfile

    import _onednn_prefix
    prefixes = args.prefixes.split(",")
    got = {p: [] for p in prefixes}
    versions = {}
    for rnd in range(args.rounds):
        for prefix in prefixes:
            pfx = None if prefix == "default" else prefix
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                cmd = [sys.executable, __file__, "--rounds", "1", "--steps", str(args.steps), "--dtype", args.dtype,
                       "--out", f.name] + (["--layers", args.layers] if args.layers else [])
                subprocess.run(cmd, check=True, env=_onednn_prefix.env_for(pfx))
                result = json.loads(pathlib.Path(f.name).read_text())
            versions[prefix] = result["onednn"]
            got[prefix].append({r["layer"]: r for r in result["rows"]})
    first = prefixes[0]
    rows = []
    print(f"\n{'layer':32s} " + " ".join(f"{versions[p]:>12s}" for p in prefixes) + "  ratio vs first (range)")
    for layer in got[first][0]:
        row = {"layer": layer}
        for p in prefixes:
            row[f"{versions[p]}_ms"] = statistics.median(r[layer]["onednn_ms"] for r in got[p])
            row[f"{versions[p]}_torch_ms"] = statistics.median(r[layer]["torch_ms"] for r in got[p])
        for p in prefixes[1:]:
            ratios = [a[layer]["onednn_ms"] / b[layer]["onednn_ms"] for a, b in zip(got[first], got[p])]
            row[f"speedup_{versions[p]}_vs_{versions[first]}"] = statistics.median(ratios)
            row[f"speedup_{versions[p]}_range"] = [min(ratios), max(ratios)]
        rows.append(row)
        cells = " ".join(f"{row[f'{versions[p]}_ms']:12.2f}" for p in prefixes)
        extra = " ".join(f"{row[f'speedup_{versions[p]}_vs_{versions[first]}']:.2f}x "
                         f"({row[f'speedup_{versions[p]}_range'][0]:.2f}-{row[f'speedup_{versions[p]}_range'][1]:.2f})"
                         for p in prefixes[1:])
        print(f"{layer:32s} {cells}  {extra}", flush=True)
    out = pathlib.Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"prefixes": prefixes, "versions": versions, "dtype": args.dtype,
                               "rounds": args.rounds, "steps": args.steps, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
