"""``jaxcnn checkpoints RUN``: list a run's checkpoint steps with their status.

Status: ``ok`` (every file matches the checksums written when the step was saved),
``unverified`` (complete, but no checksum file: killed between the save and the checksum,
or an older run), ``damaged`` (with the reason). Damaged steps moved aside by a resume
(``RUN/checkpoints.damaged/``) and unfinished orbax temporaries are listed too. Restoring
(``train --resume``, ``eval``) uses the newest step that is not damaged.
"""
from __future__ import annotations

import json
import os


def register(subparsers) -> None:
    p = subparsers.add_parser("checkpoints", help="list a run's checkpoint steps and whether each is intact")
    p.add_argument("run", help="the run directory (jaxcnn train --out DIR) or its checkpoints/ directory")
    p.add_argument("--json", action="store_true", help="print one JSON object per step")
    p.set_defaults(func=run)


def checkpoints_dir(run_dir: str) -> str:
    """``RUN/checkpoints`` for a run directory; the directory itself if it already is one."""
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"checkpoints: no directory {run_dir}")
    sub = os.path.join(run_dir, "checkpoints")
    return sub if os.path.isdir(sub) else run_dir


def run(args) -> int:
    from ..train.checkpoint import checkpoint_status
    directory = checkpoints_dir(args.run)
    rows = [{"step": s.step, "status": s.status, "detail": s.detail} for s in checkpoint_status(directory)]
    for name in sorted(os.listdir(directory)):
        if not name.isdigit() and ".orbax-checkpoint-tmp" in name:
            rows.append({"step": int(name.split(".")[0]) if name.split(".")[0].isdigit() else None,
                         "status": "incomplete", "detail": f"unfinished save ({name}); ignored"})
    moved = directory.rstrip(os.sep) + ".damaged"
    if os.path.isdir(moved):
        for name in sorted(os.listdir(moved)):
            step = name.split("-")[0]
            rows.append({"step": int(step) if step.isdigit() else None, "status": "moved-aside",
                         "detail": f"damaged; moved to {os.path.join(moved, name)}"})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print(f"no checkpoints in {directory}")
        return 1
    newest = max((r["step"] for r in rows if r["status"] in ("ok", "unverified")), default=None)
    print(f"{'step':>8}  {'status':<11}  detail")
    for r in rows:
        step = "?" if r["step"] is None else r["step"]
        print(f"{step:>8}  {r['status']:<11}  {r['detail']}")
    print(f"restore would use step {newest}" if newest is not None else "no intact checkpoint")
    return 0
