"""Run directories of compressed models (``jaxcnn compress --out DIR``).

A compressed run holds ``config.json`` (the source run's config plus a ``"compressed"``
entry describing what was done), ``metrics.jsonl`` (one record per step of the pipeline)
and :data:`FILE`, the compressed checkpoint of :mod:`.storage`. ``jaxcnn eval`` reads it
through :func:`restore_compressed_run`, other runs through orbax.
"""
from __future__ import annotations

import json
import os
from typing import Any

from .storage import load_compressed

FILE = "compressed.npz"


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run_dir/config.json``, or a FileNotFoundError naming the directory."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json in {run_dir}: pass a directory written by `jaxcnn train --out` "
                                f"or `jaxcnn compress --out`")
    with open(path) as f:
        return json.load(f)


def is_compressed(config: dict) -> bool:
    """Whether a run's ``config`` describes a ``jaxcnn compress`` output."""
    return bool(config.get("compressed"))


def restore_compressed_run(run_dir: str | os.PathLike, config: dict, step: int | None = None):
    """``(params, state, step)`` of a compressed run, as the compressed network computes
    (dequantised / binarised weights). ``step`` must be None or the run's own step."""
    info = config["compressed"]
    if step is not None and step != info.get("step"):
        raise ValueError(f"--step {step}: a compressed run holds one checkpoint (step {info.get('step')})")
    params, state, meta = load_compressed(os.path.join(run_dir, info.get("file", FILE)))
    return params, state, int(meta.get("step", info.get("step", 0)))


def load_run(run_dir: str | os.PathLike, step: int | None = None):
    """``(config, params, state, step)`` of a training run (orbax) or a compressed run."""
    config = read_config(run_dir)
    if is_compressed(config):
        return (config, *restore_compressed_run(run_dir, config, step))
    from ..train import restore_params
    params, state, found = restore_params(os.path.join(run_dir, "checkpoints"), step)
    return config, params, state, found
