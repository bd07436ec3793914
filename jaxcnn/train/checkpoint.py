"""Checkpoints with orbax: the train state (params, state, opt_state, step) and the data
position (epoch, step within the epoch, seed), so a resumed run sees the same batches
in the same order. ``CheckpointManager`` writes each step to a temporary directory and
renames it when complete, so a crash mid-write never loses the previous checkpoint.

Layout: ``DIR/<step>/train_state`` (orbax PyTree) and ``DIR/<step>/data`` (JSON).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from .state import TrainState


def checkpoint_manager(directory: str | os.PathLike, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """An orbax manager keeping the last ``max_to_keep`` checkpoints under ``directory``."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, train_state: TrainState, data_position: dict[str, int]) -> None:
    """Save ``train_state`` (host arrays, one copy) at its step together with ``data_position``
    (``{"epoch", "step_in_epoch", "seed"}``). Asynchronous; call ``manager.wait_until_finished()``
    before relying on it."""
    step = int(np.asarray(train_state.step))
    manager.save(step, args=ocp.args.Composite(train_state=ocp.args.StandardSave(train_state),
                                               data=ocp.args.JsonSave(dict(data_position))))


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    return manager.latest_step()


def restore(manager: ocp.CheckpointManager, target: TrainState, step: int | None = None
            ) -> tuple[TrainState, dict[str, Any]]:
    """Restore ``(train_state, data_position)`` at ``step`` (default: the latest) into the
    structure of ``target`` (a host train state or its ``jax.eval_shape``)."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint found in {manager.directory}")
    target = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), target)
    out = manager.restore(step, args=ocp.args.Composite(train_state=ocp.args.StandardRestore(target),
                                                        data=ocp.args.JsonRestore()))
    return out["train_state"], dict(out["data"])


def restore_params(directory: str | os.PathLike, step: int | None = None) -> tuple[Any, Any, int]:
    """``(params, state, step)`` of a checkpoint, without knowing the optimizer (for evaluation)."""
    manager = checkpoint_manager(directory)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint found in {os.path.abspath(directory)}")
        out = manager.restore(step, args=ocp.args.Composite(train_state=ocp.args.StandardRestore()))
    finally:
        manager.close()
    tree = out["train_state"]
    return tree["params"], tree["state"], step
