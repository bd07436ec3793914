"""TensorBoard event files for a run, written with tensorboardX's ``SummaryWriter``.

A run directory holds its scalars as TensorBoard event files (``events.out.tfevents.*``)
beside ``metrics.jsonl``, so ``tensorboard --logdir runs`` shows and compares every run
under ``runs/``. Each evaluation record of the fit loop becomes one scalar per metric at
its ``step`` (the update count), under the tags of :data:`TAGS`:

==================== =========================
record key           TensorBoard tag
==================== =========================
``train_loss``       ``loss/train``
``test_loss``        ``loss/test``
``train_accuracy``   ``accuracy/train``
``test_accuracy``    ``accuracy/test``
``lr``               ``learning_rate``
``images_per_sec``   ``throughput/images_per_sec``
``grad_norm``        ``gradient/norm``
==================== =========================

Resuming a run continues the same curves: :func:`open_writer` with
``resume_step=S`` (the restored checkpoint's step) first cuts the run's existing event
files back to step ``S`` (:func:`cut_back`: each file rewritten atomically without the
events after ``S``, as ``metrics.jsonl`` is cut back by
:func:`jaxcnn.train.rundir.truncate_metrics`), then opens a new event file that starts
with tensorboardX's purge marker (a ``SessionLog.START`` event at step ``S + 1``), so a
TensorBoard that had already loaded the old events drops them too. Each redone step
therefore appears once.

Only process 0 of a multi-process run should open a writer (the caller decides).
"""
from __future__ import annotations

import os
import struct
import time
from typing import Any, Mapping

#: how TensorBoard event files are named (tensorboardX and TensorFlow alike)
EVENT_FILE_PREFIX = "events.out.tfevents."

#: metrics.jsonl record key -> TensorBoard scalar tag
TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_accuracy": "accuracy/train",
    "test_accuracy": "accuracy/test",
    "lr": "learning_rate",
    "images_per_sec": "throughput/images_per_sec",
    "grad_norm": "gradient/norm",
}


class TensorBoardWriter:
    """Scalars of one run directory in TensorBoard's event format.

    Args:
        run_dir: the run's output directory (created if missing); the event files go
            directly into it, so the run's name in TensorBoard is the directory's.
        resume_step: the step training restarts from (a restored checkpoint's step), or
            ``None`` for a fresh run. Events at steps after it that an earlier session
            wrote are removed from the run's event files (:func:`cut_back`) and hidden
            from a TensorBoard that already read them (the purge marker).
        flush_secs: how often tensorboardX's background thread flushes (seconds);
            :meth:`write_record` flushes after each record anyway.

    Use as a context manager or call :meth:`close`. Raises ``ImportError`` naming the
    package when tensorboardX is not installed.

    Example::

        with TensorBoardWriter("runs/lenet") as tb:
            tb.write_record({"step": 100, "train_loss": 0.41, "test_accuracy": 0.88})
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume_step: int | None = None, flush_secs: int = 30):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:     # a dependency; only a broken install lands here
            raise ImportError(f"TensorBoard logging needs the tensorboardX package ({e}); "
                              f"pip install tensorboardX, or pass --no-tensorboard") from None
        if resume_step is not None and (not isinstance(resume_step, int) or resume_step < 0):
            raise ValueError(f"TensorBoardWriter: resume_step must be an int >= 0 or None, got {resume_step!r}")
        self.run_dir = os.fspath(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        if resume_step is not None:
            cut_back(self.run_dir, resume_step)
        purge = None if resume_step is None else resume_step + 1
        # tensorboardX names the file by the second and the host only: a session opened
        # within the same second as the last one would overwrite its file. The suffix keeps
        # names unique and in the order written (TensorBoard reads a directory's files
        # sorted by name).
        suffix = f".{time.time_ns():020d}.{os.getpid()}"
        self._writer = SummaryWriter(logdir=self.run_dir, purge_step=purge, flush_secs=flush_secs,
                                     filename_suffix=suffix)
        self._closed = False

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar ``value`` under ``tag`` at ``step``; a non-finite value is written
        too (TensorBoard shows NaN), a ``None`` one is skipped."""
        if self._closed:
            raise ValueError(f"TensorBoardWriter for {self.run_dir} is closed")
        if value is None:
            return
        self._writer.add_scalar(tag, float(value), global_step=int(step))

    def write_record(self, record: Mapping[str, Any]) -> int:
        """Every key of :data:`TAGS` present in ``record`` (a ``metrics.jsonl`` record with
        its ``step``) as a scalar at ``record["step"]``, then flush. Returns how many
        scalars were written. Raises ``ValueError`` when ``record`` has no ``step``."""
        if "step" not in record:
            raise ValueError(f"TensorBoardWriter.write_record: the record has no 'step': {sorted(record)}")
        written = 0
        for key, tag in TAGS.items():
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.scalar(tag, value, record["step"])
                written += 1
        self.flush()
        return written

    def flush(self) -> None:
        """Write the queued events to disk now."""
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file; later calls do nothing."""
        if not self._closed:
            self._writer.close()
            self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_writer(run_dir: str | os.PathLike, *, resume_step: int | None = None,
                enabled: bool = True) -> TensorBoardWriter | None:
    """A :class:`TensorBoardWriter` for ``run_dir``, or ``None`` when ``enabled`` is false
    (``jaxcnn train --no-tensorboard``). ``resume_step`` as for the class."""
    if not enabled:
        return None
    return TensorBoardWriter(run_dir, resume_step=resume_step)


def event_files(run_dir: str | os.PathLike) -> list[str]:
    """The TensorBoard event files directly in ``run_dir``, sorted by name (= written order)."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        return []
    return sorted(os.path.join(run_dir, n) for n in os.listdir(run_dir) if n.startswith(EVENT_FILE_PREFIX))


def _records(path: str):
    """The serialized events of one event file (TFRecord framing: 8-byte length, its
    masked CRC-32C, the data, its masked CRC-32C). Reading stops at a torn or corrupt
    record (a session killed mid-write): what follows it cannot be trusted."""
    from tensorboardX.record_writer import masked_crc32c
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,), (header_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != header_crc:
                return
            data, crc = f.read(length), f.read(4)
            if len(data) < length or len(crc) < 4 or masked_crc32c(data) != struct.unpack("<I", crc)[0]:
                return
            yield data


def cut_back(run_dir: str | os.PathLike, step: int) -> int:
    """Remove from the event files in ``run_dir`` every event after ``step`` (scalars and
    session markers; each file's version header is kept), rewriting each changed file
    atomically through tensorboardX's ``RecordWriter``; a torn tail is dropped as well.
    Returns how many events were removed. Files of other writers are left alone when
    nothing in them is past ``step``."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import RecordWriter
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"cut_back: step must be an int >= 0, got {step!r}")
    removed = 0
    for path in event_files(run_dir):
        kept, dropped, size = [], 0, 0
        for data in _records(path):
            size += 16 + len(data)
            event = Event.FromString(data)
            if event.step > step and not event.HasField("file_version"):
                dropped += 1
            else:
                kept.append(data)
        torn = size != os.path.getsize(path)
        if not dropped and not torn:
            continue
        tmp = f"{path}.tmp-{os.getpid()}"
        writer = RecordWriter(tmp)
        for data in kept:
            writer.write(data)
        writer.flush()
        writer.close()
        os.replace(tmp, path)
        removed += dropped
    return removed


def read_scalars(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard shows them (purged events left out),
    read with tensorboard's ``EventAccumulator`` (the ``tensorboard`` package, installed
    with ``jaxcnn[test]`` or on its own). Steps are in the order written."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as e:
        raise ImportError(f"reading TensorBoard events needs the tensorboard package ({e})") from None
    import logging
    log = logging.getLogger("tensorboard")
    level = log.level
    log.setLevel(logging.ERROR)      # its "out of order event.step ... purging" note on resumed runs
    try:
        acc = EventAccumulator(os.fspath(run_dir), size_guidance={"scalars": 0}, purge_orphaned_data=True)
        acc.Reload()
    finally:
        log.setLevel(level)
    return {tag: [(int(e.step), float(e.value)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
