"""``jaxcnn export RUN --out FILE``: a run's model as a serialized ``jax.export``
artifact for serving (:func:`jaxcnn.interop.export.export_inference`).

The artifact takes float32 ``(B, H, W, C)`` images with pixels in [0, 1] (any batch
size unless ``--batch-size`` fixes one), applies the run's normalisation and the model
in eval mode at the run's precision, and returns float32 logits. It runs with plain jax::

    exported = jax.export.deserialize(open(FILE, "rb").read())
    logits = exported.call(images)

``--platform cpu,cuda,tpu`` lowers for several platforms at once (no such device needed
here). Where this machine's platform is among them, the written file is read back,
deserialized and checked against the library's logits on random images before the
command reports success. ``--out`` is never overwritten unless ``--overwrite``.
"""
from __future__ import annotations

import json
import os
import sys

from . import HelpFormatter
from .errors import UsageError
from .runs import add_trust_flag

# max |exported - library| / max(1, max |library|) accepted by the read-back check
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
CHECK_EXAMPLES = 8


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a run's model as a jax.export artifact for serving",
                              formatter_class=HelpFormatter)
    p.add_argument("run", metavar="RUN", help="the run directory (jaxcnn train --out or jaxcnn compress --out)")
    p.add_argument("--out", required=True, metavar="FILE", help="the artifact file to write")
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint step, exactly (default: the newest intact one)")
    p.add_argument("--platform", default="cpu",
                   help="comma-separated platforms to lower for: cpu, cuda, rocm, tpu (default: cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="fix the artifact's batch size (default: any batch size)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_trust_flag(p)
    p.set_defaults(func=run)


def parse_platforms(text: str) -> tuple[str, ...]:
    """``"cpu,cuda"`` -> ``("cpu", "cuda")``; a :class:`UsageError` naming an unknown or
    repeated one."""
    from ..interop.export import PLATFORMS
    names = tuple(t.strip().lower() for t in text.split(","))
    for name in names:
        if name not in PLATFORMS:
            hint = " (jax calls NVIDIA GPUs 'cuda')" if name == "gpu" else ""
            raise UsageError(f"--platform must be a comma-separated list of {', '.join(PLATFORMS)}, got "
                             f"{name!r} in {text!r}{hint}")
    if len(set(names)) != len(names):
        raise UsageError(f"--platform names a platform twice: {text!r}")
    return names


def check_out(path: str, overwrite: bool) -> None:
    """Refuse ``--out`` before any work: an existing file (unless ``overwrite``), a
    directory, or a missing parent directory."""
    if os.path.isdir(path):
        raise UsageError(f"--out {path} is a directory; expected a file name")
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"--out {path} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"--out {path}: directory {parent} does not exist")


def load(path: str, step: int | None, trusted_model: str | None = None):
    """The run to export: ``(run_dir, config, model, params, state, step)``, opened by
    :func:`jaxcnn.train.rundir.open_run` (the trust rule for user models included)."""
    from .runs import open_run
    return open_run(path, step, trusted_model)


def _field(config: dict, name: str, run_dir: str):
    if name not in config:
        raise UsageError(f"{run_dir}/config.json has no {name!r}: cannot tell the model's input; "
                         f"export a run written by `jaxcnn train` or `jaxcnn compress`")
    return config[name]


def run(args) -> int:
    if args.step is not None and args.step < 0:
        raise UsageError(f"--step must be >= 0, got {args.step}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (or omitted for any batch size), got {args.batch_size}")
    platforms = parse_platforms(args.platform)
    check_out(args.out, args.overwrite)

    import jax
    import numpy as np

    from ..interop.export import export_inference, inference_function, write_artifact

    run_dir, config, model, params, state, step = load(args.run, args.step, args.model)
    image_shape = tuple(_field(config, "image_shape", run_dir))
    norm = _field(config, "normalization", run_dir)
    precision = config.get("precision", "fp32")
    exported = export_inference(model, params, state, image_shape=image_shape,
                                normalization=(norm["mean"], norm["std"]), platforms=platforms,
                                batch_size=args.batch_size, precision=precision)
    size = write_artifact(exported, args.out, overwrite=args.overwrite)

    here = jax.default_backend()
    checked = None
    # jax calls a CUDA or ROCm backend "gpu"
    if any(p in platforms for p in {"gpu": ("cuda", "rocm")}.get(here, (here,))):   # read the file back and run it as a server would
        with open(args.out, "rb") as f:
            loaded = jax.export.deserialize(bytearray(f.read()))
        n = args.batch_size or CHECK_EXAMPLES
        images = np.random.default_rng(0).random((n,) + image_shape, dtype=np.float32)
        got = np.asarray(loaded.call(images))
        want = np.asarray(jax.jit(inference_function(model, params, state, normalization=(norm["mean"], norm["std"]),
                                                     precision=precision))(images))
        checked = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
        if not checked <= TOLERANCE[precision] * max(1.0, float(np.max(np.abs(want)))):
            os.replace(args.out, args.out + ".failed")
            print(f"jaxcnn export: error: the exported model's logits differ from the library's on {here} "
                  f"(max |diff| {checked:.3g}, shapes {got.shape} vs {want.shape}); the artifact was moved to "
                  f"{args.out}.failed", file=sys.stderr)
            return 1

    out_shape = "(" + ", ".join(str(d) for d in exported.out_avals[0].shape) + ")"
    in_shape = "(" + ", ".join(str(d) for d in exported.in_avals[0].shape) + ")"
    record = {"run": run_dir, "step": step, "model": config["model"], "out": os.path.abspath(args.out),
              "bytes": size, "platforms": list(platforms), "input_shape": in_shape, "output_shape": out_shape,
              "precision": precision, "checked_on": here if checked is not None else None,
              "max_abs_diff": checked}
    if args.json:
        print(json.dumps(record))
    else:
        check = (f"; checked on {here}: max |logit - library| = {checked:.2g}" if checked is not None
                 else f"; not run here ({here} is not among the platforms)")
        print(f"exported {config['model']} step {step} for {','.join(platforms)}: images {in_shape} float32 in "
              f"[0, 1] -> logits {out_shape}, {size:,} bytes -> {args.out}{check}")
    sys.stdout.flush()
    return 0
