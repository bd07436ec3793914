"""Checkpoints with orbax, verified on restore.

Each checkpoint holds the train state (params, state, opt_state, step) and the data
position (epoch, step within the epoch, seed), so a resumed run sees the same batches
in the same order. ``CheckpointManager`` writes each step to a temporary directory and
renames it when complete, so a crash mid-write never loses the previous checkpoint.

Layout: ``DIR/<step>/train_state`` (orbax PyTree), ``DIR/<step>/data`` (JSON) and
``DIR/<step>/jaxcnn_checksums.json`` (size + sha256 of every file of the step, written by
process 0 once orbax has finalised the step).

Why the checksums: orbax detects a half-written step but not one damaged afterwards
(a truncated data file, a deleted ``_METADATA``, an emptied directory); restoring such a
step fails deep inside tensorstore, or could in principle read wrong bytes. Restoring
therefore verifies a step first and, when the newest is damaged, says so in one line and
falls back to the newest intact step -- never silently. An explicitly requested step is
never replaced by another one. ``jaxcnn checkpoints RUN`` lists every step's status.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import weakref
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from .. import config as settings
from .state import TrainState

MANIFEST = "jaxcnn_checksums.json"
# What an orbax step of ours must hold, checked when a step has no checksum file
# (killed between orbax's commit and our manifest, or written by an older version).
REQUIRED = ("train_state/_METADATA", "train_state/manifest.ocdbt", "data")

# Steps saved by a manager whose checksum file is not written yet (orbax saves in the
# background; the checksum is taken once the step is final).
_PENDING: "weakref.WeakKeyDictionary[ocp.CheckpointManager, list[int]]" = weakref.WeakKeyDictionary()


class CheckpointError(ValueError):
    """No intact checkpoint could be restored (the message lists each step and why)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a directory made read-only, a full disk); the
    message names the step, the directory, the system's reason and the newest complete
    checkpoint, which is intact."""


class StepStatus(NamedTuple):
    step: int
    status: str        # "ok" (checksums match), "unverified" (no checksum file, structure complete), "damaged"
    detail: str        # why it is damaged / unverified ("" when ok)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def checkpoint_manager(directory: str | os.PathLike, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """An orbax manager keeping the last ``max_to_keep`` (>= 1) checkpoints under ``directory``."""
    if not isinstance(max_to_keep, int) or max_to_keep < 1:
        raise ValueError(f"checkpoint_manager: max_to_keep must be an int >= 1 (a run needs at least one "
                         f"checkpoint), got {max_to_keep!r}")
    _quiet_closed_loop_errors()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)
    _PENDING[manager] = []
    return manager


def save(manager: ocp.CheckpointManager, train_state: TrainState, data_position: dict[str, int]) -> None:
    """Save ``train_state`` (host arrays, one copy) at its step together with ``data_position``
    (``{"epoch", "step_in_epoch", "seed"}``). Asynchronous; call :func:`finish` (or
    ``manager.wait_until_finished()``) before relying on it. The checksum file of the
    previous save is written here, once orbax has finished it."""
    step = int(np.asarray(train_state.step))
    write_pending_checksums(manager)
    with _reporting_write_failure(manager, step):
        manager.save(step, args=ocp.args.Composite(train_state=ocp.args.StandardSave(train_state),
                                                   data=ocp.args.JsonSave(dict(data_position))))
    _PENDING.setdefault(manager, []).append(step)


def finish(manager: ocp.CheckpointManager) -> None:
    """Wait for pending saves and write their checksum files (process 0)."""
    write_pending_checksums(manager)


# tensorstore (orbax's writer) reports a failed system call as a ValueError whose text
# carries the errno: "... Failed writing: "PATH": ... [os_error_code='28']" (ENOSPC)
_TENSORSTORE_OS_ERROR = re.compile(r"os_error_code='(\d+)'")
_TENSORSTORE_PATH = re.compile(r'Failed (?:writing|to write)[^"]*"([^"]+)"')


def os_error_in(error: BaseException | None) -> OSError | None:
    """The operating-system failure behind ``error``: an ``OSError`` in its cause/context
    chain, or one rebuilt from a tensorstore error's ``os_error_code`` (a full disk
    surfaces as such a ValueError, not as an OSError); None if there is none."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        code = _TENSORSTORE_OS_ERROR.search(str(error))
        if code:
            path = _TENSORSTORE_PATH.search(str(error))
            errno_ = int(code.group(1))
            return OSError(errno_, os.strerror(errno_), path.group(1) if path else None)
        error = error.__cause__ or error.__context__
    return None


class _reporting_write_failure:
    """Turn an OSError from writing ``step`` (raised by orbax directly or from its
    background thread, possibly wrapped) into :class:`CheckpointWriteError`."""

    def __init__(self, manager, step):
        self.manager, self.step = manager, step

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, CheckpointWriteError):
            return False
        cause = os_error_in(error)
        if cause is None:
            return False
        directory = os.fspath(self.manager.directory)
        complete = [s for s in step_dirs(directory) if s != self.step]
        newest = f"step {max(complete)}" if complete else "none"
        failure = CheckpointWriteError(
            f"could not write the checkpoint of step {self.step} to {directory}: "
            f"{cause.strerror or cause} ({getattr(cause, 'filename', None) or directory}); the newest complete "
            f"checkpoint is {newest}. Make the directory writable (or free space) and continue with --resume")
        failure.errno = cause.errno
        raise failure from None


def write_pending_checksums(manager: ocp.CheckpointManager) -> None:
    """Wait for ``manager``'s pending asynchronous saves and write their sha256 manifests;
    a failed write raises :class:`CheckpointWriteError`."""
    pending = _PENDING.get(manager) or []
    if not pending:
        return
    try:
        with _reporting_write_failure(manager, pending[-1]):
            manager.wait_until_finished()
    except CheckpointWriteError:
        pending.clear()    # reported once; the failed step is not retried
        raise
    directory = os.fspath(manager.directory)
    if jax.process_index() == 0:
        for step in pending:
            path = os.path.join(directory, str(step))
            if os.path.isdir(path):  # max_to_keep may already have removed it
                write_checksums(path)
    pending.clear()


_file_digest = settings.file_sha256


def _files(step_dir: str) -> list[str]:
    out = []
    for root, _, names in os.walk(step_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_checksums(step_dir: str | os.PathLike) -> None:
    """Write ``MANIFEST`` (size and sha256 of every file) into a finished step directory, atomically."""
    step_dir = os.fspath(step_dir)
    files = {rel: {"size": os.path.getsize(os.path.join(step_dir, rel)),
                   "sha256": _file_digest(os.path.join(step_dir, rel))} for rel in _files(step_dir)}
    tmp = os.path.join(step_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format": 1, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(step_dir, MANIFEST))


def step_dirs(directory: str | os.PathLike) -> list[int]:
    """The steps under ``directory`` (finished orbax step directories, ascending)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory)
                  if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def verify_step(directory: str | os.PathLike, step: int) -> StepStatus:
    """Check step ``step`` of ``directory`` against its checksum file (or, without one,
    for the files every step holds). Reads every byte of the step."""
    step_dir = os.path.join(os.fspath(directory), str(step))
    if not os.path.isdir(step_dir):
        return StepStatus(step, "damaged", "step directory missing")
    manifest = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(manifest):
        missing = [r for r in REQUIRED if not os.path.exists(os.path.join(step_dir, r))]
        if missing:
            return StepStatus(step, "damaged", f"missing {', '.join(missing)}")
        return StepStatus(step, "unverified", "no checksum file")
    try:
        with open(manifest) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError) as e:
        return StepStatus(step, "damaged", f"unreadable {MANIFEST} ({type(e).__name__})")
    for rel, want in sorted(files.items()):
        path = os.path.join(step_dir, rel)
        if not os.path.exists(path):
            return StepStatus(step, "damaged", f"missing {rel}")
        size = os.path.getsize(path)
        if size != want["size"]:
            return StepStatus(step, "damaged", f"{rel} is {size} bytes, was {want['size']}")
        if _file_digest(path) != want["sha256"]:
            return StepStatus(step, "damaged", f"{rel} checksum mismatch")
    return StepStatus(step, "ok", "")


def checkpoint_status(directory: str | os.PathLike) -> list[StepStatus]:
    """Every step under ``directory`` with its status (see :func:`verify_step`), ascending."""
    return [verify_step(directory, s) for s in step_dirs(directory)]


def quarantine(directory: str | os.PathLike, step: int) -> str:
    """Move a damaged step out of ``directory`` (to ``<directory>.damaged/<step>-<time>``),
    so orbax neither lists it nor refuses to save that step again. Never deletes."""
    directory = os.path.abspath(os.fspath(directory))
    dest_root = directory.rstrip(os.sep) + ".damaged"
    os.makedirs(dest_root, exist_ok=True)
    dest = os.path.join(dest_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(os.path.join(directory, str(step)), dest)
    return dest


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def _restore_one(directory: str, step: int, args) -> Any:
    # A Checkpointer on the one step directory: a manager would scan (and log about)
    # every other step, damaged ones included.
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        return checkpointer.restore(os.path.join(directory, str(step)), args=args)


def _quiet_closed_loop_errors() -> None:
    """After tensorstore fails a read or a write (a full disk), its callbacks may still fire
    into an asyncio loop orbax has closed; each reaches ``sys.unraisablehook`` and would
    print a 'RuntimeError: Event loop is closed' traceback from a background thread. They
    carry no information (the failure is reported as one line), so they are dropped; every
    other error still reaches the previous hooks. Installed once, by the first manager or
    failed restore of the process."""
    import threading
    if getattr(sys.unraisablehook, "_jaxcnn", False):
        return
    prev_unraisable, prev_thread = sys.unraisablehook, threading.excepthook

    def closed_loop(exc) -> bool:
        return isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)

    def unraisable(info):
        if not closed_loop(info.exc_value):
            prev_unraisable(info)

    def thread(args):
        if not closed_loop(args.exc_value):
            prev_thread(args)

    unraisable._jaxcnn = True
    sys.unraisablehook, threading.excepthook = unraisable, thread


def restore_intact(directory: str | os.PathLike, args_for: Callable[[], Any], step: int | None = None, *,
                   move_damaged: bool = False, warn: Callable[[str], None] = _warn) -> tuple[Any, int]:
    """Restore ``step`` (default: the newest intact step) of ``directory`` with orbax
    ``args_for()``; returns ``(restored, step)``.

    Each candidate is verified and then restored; a damaged one (bad checksum, missing
    files, or orbax failing to read it) is reported through ``warn`` in one line and the
    next older step is tried. With an explicit ``step`` there is no fallback: a damaged
    step raises :class:`CheckpointError`. ``move_damaged`` moves skipped steps aside
    (:func:`quarantine`) so a resumed run can save those steps again.
    """
    directory = os.path.abspath(os.fspath(directory))
    steps = step_dirs(directory)
    if not steps:
        raise FileNotFoundError(f"no checkpoint found in {directory}")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; it has steps "
                                f"{', '.join(map(str, steps))}")
    candidates = [step] if step is not None else steps[::-1]
    problems = []
    for s in candidates:
        status = verify_step(directory, s)
        if status.status != "damaged":
            try:
                return _restore_one(directory, s, args_for()), s
            except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many types for unreadable data
                _quiet_closed_loop_errors()
                status = StepStatus(s, "damaged", f"orbax could not read it ({_one_line(e)})")
        problems.append(status)
        if step is not None:
            break
        older = [c for c in candidates if c < s]
        where = f"falling back to step {older[0]}" if older else "no older step left"
        warn(f"checkpoint step {s} in {directory} is damaged ({status.detail}); {where}")
        if move_damaged and jax.process_index() == 0:
            dest = quarantine(directory, s)
            warn(f"moved the damaged step {s} to {dest}")
    detail = "; ".join(f"step {p.step}: {p.detail}" for p in problems)
    raise CheckpointError(f"no intact checkpoint in {directory} ({detail})")


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    """The newest step ``manager`` holds, or ``None`` when it holds none."""
    return manager.latest_step()


def _host_target(target):
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), target)


def _state_args(target):
    return ocp.args.Composite(train_state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore())


def restore(manager: ocp.CheckpointManager, target: TrainState, step: int | None = None
            ) -> tuple[TrainState, dict[str, Any]]:
    """Restore ``(train_state, data_position)`` at ``step`` (default: the newest intact
    step, see :func:`restore_intact`) into the structure of ``target`` (a host train state
    or its ``jax.eval_shape``)."""
    target = _host_target(target)
    out, _ = restore_intact(manager.directory, lambda: _state_args(target), step)
    return out["train_state"], dict(out["data"])


def restore_train_state(directory: str | os.PathLike, target: TrainState, *, move_damaged: bool = False,
                        warn: Callable[[str], None] = _warn) -> tuple[TrainState, dict[str, Any], int]:
    """``(train_state, data_position, step)`` from the newest intact step of ``directory``
    (for resuming; damaged newer steps are reported and, with ``move_damaged``, moved aside)."""
    target = _host_target(target)
    out, step = restore_intact(directory, lambda: _state_args(target), move_damaged=move_damaged, warn=warn)
    return out["train_state"], dict(out["data"]), step


def restore_params(directory: str | os.PathLike, step: int | None = None, *,
                   warn: Callable[[str], None] = _warn) -> tuple[Any, Any, int]:
    """``(params, state, step)`` of a checkpoint, without knowing the optimizer (for
    evaluation): ``step`` exactly, or the newest intact step."""
    out, step = restore_intact(directory, lambda: ocp.args.Composite(train_state=ocp.args.StandardRestore()),
                               step, warn=warn)
    tree = out["train_state"]
    return tree["params"], tree["state"], step
