"""Opening a saved run for the commands that read one (``eval``, ``explain``,
``compress``, ``plot``): :func:`jaxcnn.compress.open_run` -- i.e.
:func:`jaxcnn.train.rundir.open_run`, the one reader of run directories -- and the
run's data, normalised as it was trained."""
from __future__ import annotations

import os
from typing import Any


def add_trust_flag(parser) -> None:
    """``--model``: the user code a run was trained with, named again to allow running it."""
    parser.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                        help="a run whose model is your own code ('pkg.mod:function' or 'file.py:function') is "
                             "loaded only when you name that same code here")


def open_run(path: str | os.PathLike, step: int | None = None, trusted_model: str | None = None):
    """The run at ``path`` (:class:`jaxcnn.train.rundir.Run`: run_dir, config, model,
    params, state, step) with the parameters of checkpoint ``step`` (default: newest intact)."""
    from ..compress import open_run as open_any_run
    return open_any_run(path, step, trusted_model=trusted_model)


def splits(config: dict[str, Any], dataset: str | None = None, data_dir=None):
    """``(train, test)`` of the run's dataset (or ``dataset``), normalised with the run's
    own training statistics."""
    from ..data import load_splits
    norm = config["normalization"]
    train, test, _ = load_splits(dataset or config["dataset"], data_dir or config.get("data_dir"),
                                 normalization=(norm["mean"], norm["std"]))
    return train, test
