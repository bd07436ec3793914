"""Run directories of compressed models (``jaxcnn compress --out DIR``).

A compressed run holds ``config.json`` (the source run's config plus a ``"compressed"``
entry describing what was done), ``metrics.jsonl`` (one record per step of the pipeline)
and :data:`FILE`, the compressed checkpoint of :mod:`.storage`. :func:`open_run` opens a
training run or a compressed one alike (:func:`jaxcnn.train.rundir.open_run`, given
:func:`restore_compressed_run` for the compressed kind).
"""
from __future__ import annotations

import os

from ..train import rundir
from .storage import load_compressed

FILE = "compressed.npz"


def compressed_file(run_dir: str | os.PathLike, config: dict) -> str:
    """The path of a compressed run's checkpoint: the file its config names, which must
    be a plain file name inside ``run_dir`` (a record pointing elsewhere is refused)."""
    name = config[rundir.COMPRESSED].get("file", FILE)
    if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", ".."):
        raise rundir.RunDirError(f"{run_dir}/config.json: the compressed file must be a file name inside the run "
                                 f"directory (like {FILE!r}), got {name!r}")
    path = os.path.join(run_dir, name)
    rundir.check_inside(run_dir, name)
    return path


def restore_compressed_run(run_dir: str | os.PathLike, config: dict, step: int | None = None):
    """``(params, state, step)`` of a compressed run, as the compressed network computes
    (dequantised / binarised weights). ``step`` must be None or the run's own step."""
    info = config[rundir.COMPRESSED]
    if step is not None and step != info.get("step"):
        raise ValueError(f"--step {step}: a compressed run holds one checkpoint (step {info.get('step')})")
    params, state, meta = load_compressed(compressed_file(run_dir, config))
    return params, state, int(meta.get("step", info.get("step", 0)))


def open_run(path: str | os.PathLike, step: int | None = None, *, trusted_model: str | None = None) -> rundir.Run:
    """The training or compressed run at ``path``, opened by
    :func:`jaxcnn.train.rundir.open_run` (the same trust rule for user models)."""
    return rundir.open_run(path, step, trusted_model=trusted_model, restore_compressed=restore_compressed_run)
