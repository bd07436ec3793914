"""Opening a saved run for the commands that read one (``eval``, ``explain``,
``compress``, ``plot``): one place that finds the run directory, rebuilds its model
and data from ``config.json`` and restores its parameters (orbax checkpoints, or the
compressed checkpoint of a ``jaxcnn compress`` run)."""
from __future__ import annotations

import os
from typing import Any, NamedTuple

from .errors import UsageError


class SavedRun(NamedTuple):
    run_dir: str
    config: dict[str, Any]
    model: Any
    params: Any
    state: Any
    step: int


def run_directory(path: str | os.PathLike) -> str:
    """The run directory for ``path`` (the directory itself or its ``checkpoints/``);
    a :class:`UsageError` if it holds no ``config.json``."""
    run_dir = os.path.abspath(path)
    if os.path.basename(run_dir) == "checkpoints":
        run_dir = os.path.dirname(run_dir)
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        raise UsageError(f"no config.json in {run_dir}: pass the directory given to `jaxcnn train --out` "
                         f"(or `jaxcnn compress --out`)")
    return run_dir


def open_run(path: str | os.PathLike, step: int | None = None) -> SavedRun:
    """The run at ``path`` with its model rebuilt (zoo name or factory, the run's model
    options) and the parameters of checkpoint ``step`` (default: the newest intact)."""
    from ..compress import load_run
    from ..models import create
    run_dir = run_directory(path)
    config, params, state, found = load_run(run_dir, step)
    model = create(config["model"], num_classes=config["num_classes"], **dict(config.get("model_option", [])))
    return SavedRun(run_dir, config, model, params, state, found)


def splits(config: dict[str, Any], dataset: str | None = None, data_dir=None):
    """``(train, test)`` of the run's dataset (or ``dataset``), normalised with the run's
    own training statistics."""
    from ..data import load_splits
    norm = config["normalization"]
    train, test, _ = load_splits(dataset or config["dataset"], data_dir or config.get("data_dir"),
                                 normalization=(norm["mean"], norm["std"]))
    return train, test
