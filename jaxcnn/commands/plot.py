"""``jaxcnn plot RUN_DIR [--out DIR]``: training curves from ``metrics.jsonl`` and, when the
run has a checkpoint, the first conv layer's filters, as PNGs."""
from __future__ import annotations

import os

from .errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="PNG training curves (and first-layer filters) of a run directory")
    p.add_argument("run_dir", help="the directory given to `jaxcnn train --out`")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: RUN_DIR/plots)")
    p.set_defaults(func=run)


def _first_conv(params, path=()):
    """Path and weight of the first 4-D ``weight`` in the params tree (insertion order)."""
    if isinstance(params, dict):
        w = params.get("weight")
        if w is not None and getattr(w, "ndim", 0) == 4:
            return path, w
        for k, v in params.items():
            found = _first_conv(v, path + (k,))
            if found:
                return found
    return None


def run(args) -> int:
    from .. import plot
    run_dir = os.path.abspath(args.run_dir)
    if not os.path.isdir(run_dir):
        raise UsageError(f"no run directory {run_dir}")
    if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        raise UsageError(f"no metrics.jsonl in {run_dir}: pass the directory given to `jaxcnn train --out`")
    from ..train import rundir
    saved = rundir.read_config(run_dir)
    if saved is not None and rundir.is_compressed(saved):
        source = saved[rundir.COMPRESSED].get("source") or "the run it was made from"
        raise UsageError(f"{run_dir} is a compressed run: its metrics.jsonl records the compression steps, not "
                         f"training curves; plot {source} instead (`jaxcnn eval --checkpoint {run_dir}` reports "
                         f"the compressed model)")
    out = args.out or os.path.join(run_dir, "plots")
    written = [plot.save(plot.training_curves(run_dir), os.path.join(out, "training_curves.png"))]
    if os.path.isdir(os.path.join(run_dir, "checkpoints")):
        from ..train import restore_params
        params, _, step = restore_params(os.path.join(run_dir, "checkpoints"))
        found = _first_conv(params)
        if found:
            path, w = found
            name = "/".join(path)
            written.append(plot.save(plot.filter_grid(w, title=f"{name} filters (step {step})"),
                                     os.path.join(out, f"filters_{name.replace('/', '_')}.png")))
    for w in written:
        print(w)
    return 0
