"""Grad-CAM and occlusion on ResNet-18: jaxcnn vs pytorch-grad-cam 1.5.7 and Captum 0.9,
same weights (``interop.to_torch``), same CPU, one run, reported as ratios.

    .venv/bin/python experiments/bench_explain.py [--batch 32] [--size 224] [--reps 3]

* Grad-CAM: a batch of ``--batch`` images at ``--size``, layer ``layer4``, upsampled output
  (what ``GradCAM(...)(input_tensor, targets)`` returns); jaxcnn under ``jax.jit``, timed
  after one compile call (compile time reported separately); median of ``--reps``.
* Occlusion: ``--occ-batch`` images at ``--occ-size``, window ``--window``, stride
  ``--stride`` over all channels; jaxcnn evaluates all windows vectorised (``vmap`` via
  ``lax.map``), Captum with its default ``perturbations_per_eval=1`` and with the same
  number of windows per pass as jaxcnn.

Writes ``experiments/results/explain/bench_explain.json``. The torch ResNet-18 is the
torchvision layout written in plain torch (tests/_explain_torch.py), since torchvision's
C extension does not load in this environment.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from _explain_torch import grad_cam_module, nchw, resnet18_pair  # noqa: E402

from jaxcnn import inspect  # noqa: E402


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--occ-batch", type=int, default=4)
    ap.add_argument("--occ-size", type=int, default=112)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "explain", "bench_explain.json"))
    args = ap.parse_args()

    import torch
    gc = grad_cam_module()
    from captum.attr import Occlusion
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, params, state, net = resnet18_pair(num_classes=1000, size=args.size)
    result = {"device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "jax": jax.__version__, "torch": torch.__version__}

    # --- Grad-CAM -------------------------------------------------------------------------
    x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, args.size, args.size, 3))
    targets = np.arange(args.batch) % 1000
    f = jax.jit(lambda p, s, x, t: inspect.grad_cam(model, p, s, x, "layer4", t, upsample=True))
    t0 = time.perf_counter()
    ours = np.asarray(f(params, state, x, jnp.asarray(targets)))
    compile_s = time.perf_counter() - t0
    jax_s = timed(lambda: f(params, state, x, jnp.asarray(targets)).block_until_ready(), args.reps)
    cam = gc.GradCAM(model=net, target_layers=[net.layer4])
    tg = [ClassifierOutputTarget(int(t)) for t in targets]
    xt = nchw(x)
    ref = cam(input_tensor=xt, targets=tg)
    torch_s = timed(lambda: cam(input_tensor=xt, targets=tg), args.reps)
    result["gradcam"] = {"batch": args.batch, "size": args.size, "layer": "layer4", "jaxcnn_s": jax_s,
                         "jaxcnn_first_call_s": compile_s, "pytorch_grad_cam_s": torch_s,
                         "speedup": torch_s / jax_s, "max_abs_diff": float(np.max(np.abs(ours - ref)))}
    print(json.dumps(result["gradcam"]), flush=True)

    # --- Occlusion -------------------------------------------------------------------------
    model, params, state, net = resnet18_pair(num_classes=1000, size=args.occ_size)
    xo = jax.random.normal(jax.random.PRNGKey(1), (args.occ_batch, args.occ_size, args.occ_size, 3))
    to = np.arange(args.occ_batch)
    w, s = (args.window, args.window), (args.stride, args.stride)
    n_windows = len(inspect.attribution.occlusion_masks(args.occ_size, args.occ_size, w, s))
    g = jax.jit(lambda p, st, x, t: inspect.occlusion(model, p, st, x, t, w, s, windows_per_pass=n_windows))
    t0 = time.perf_counter()
    ours = np.asarray(g(params, state, xo, jnp.asarray(to)))
    occ_compile = time.perf_counter() - t0
    occ_jax = timed(lambda: g(params, state, xo, jnp.asarray(to)).block_until_ready(), 1)
    occ = Occlusion(net)
    xt, tt = nchw(xo), torch.from_numpy(to)
    captum = {}
    for ppe in (1, n_windows):
        with torch.no_grad():
            t0 = time.perf_counter()
            ref = occ.attribute(xt, sliding_window_shapes=(3,) + w, strides=(3,) + s, baselines=0.0, target=tt,
                                perturbations_per_eval=ppe)
            captum[ppe] = time.perf_counter() - t0
    diff = float(np.max(np.abs(ours - ref.numpy().transpose(0, 2, 3, 1))))
    result["occlusion"] = {"batch": args.occ_batch, "size": args.occ_size, "window": args.window,
                           "stride": args.stride, "windows": n_windows, "jaxcnn_s": occ_jax,
                           "jaxcnn_first_call_s": occ_compile, "captum_ppe1_s": captum[1],
                           f"captum_ppe{n_windows}_s": captum[n_windows],
                           "speedup_vs_captum_default": captum[1] / occ_jax,
                           "speedup_vs_captum_same_batching": captum[n_windows] / occ_jax,
                           "max_abs_diff": diff}
    print(json.dumps(result["occlusion"]), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
