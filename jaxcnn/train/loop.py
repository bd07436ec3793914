"""The training loop: a straight line from setup to the last checkpoint.

``fit`` consumes batches ``{"image": (B, H, W, C) float32, "label": (B,) int32}`` from
``train_batches(epoch, start_step)`` (this process's share of the global batches of
``epoch`` from batch ``start_step`` on; deterministic in (seed, epoch), so a resumed
run sees the same order, e.g. ``jaxcnn.data.batches``), runs the pure step under ``jax.jit``, ``jax.pmap`` or
``jax.jit`` over a mesh (``parallel``), fetches metrics to the host only every
``log_every`` steps and at evaluations, evaluates on ``test_batches()``, writes
``metrics.jsonl`` and saves an orbax checkpoint (with the data position) at every
evaluation. A non-finite loss stops the run before anything else is saved.

The run directory follows :mod:`jaxcnn.train.rundir`: a directory that already holds
checkpoints or metrics is only continued with ``resume=True``; resuming restores the
newest *intact* checkpoint (a damaged newer one is reported in one line and moved aside,
see :mod:`jaxcnn.train.checkpoint`) and cuts ``metrics.jsonl`` back to the restored step.
SIGTERM / SIGINT during ``fit`` finish the current call of the step program (up to
``steps_per_dispatch`` steps), evaluate, write the metrics
record, save a checkpoint and raise :class:`Interrupted`; a second signal ends the
process at once (status 128 + signal number). In a multi-process run a signal to any
one process stops them all at the same step (the save is collective): the processes
combine their signals where they next synchronise anyway (an evaluation, or every
``log_every`` steps), all save there and exit with the signal's status.
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import jax
import numpy as np
from tqdm.auto import tqdm

from ..dispatch import DEFAULT_MODE
from . import checkpoint as ckpt
from . import rundir
from .defaults import STEPS_PER_DISPATCH
from .metrics import MetricsWriter, NonFiniteLossError, check_finite, finish_eval, mean_metrics
from .tensorboard import open_writer
from .parallel import make_runner, pad_batch
from .state import TrainState, create_train_state
from .step import make_eval_step

Batch = dict[str, np.ndarray]


class Interrupted(Exception):
    """``fit`` stopped on SIGTERM/SIGINT after saving a checkpoint at ``step``."""

    def __init__(self, signum: int, step: int, directory: str | None):
        self.signum, self.step, self.directory = signum, step, directory
        name = signal.Signals(signum).name
        where = f"checkpoint saved at step {step} in {directory}; continue with --resume" if directory else \
            f"stopped after step {step} (no out_dir, nothing saved)"
        super().__init__(f"{name}: {where}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _StopOnSignal:
    """While active (main thread only), the first SIGTERM/SIGINT sets ``signum`` for the
    loop to stop at the next step boundary; a second one exits immediately."""

    def __init__(self, last_saved: Callable[[], Any]):
        self.signum = None
        self.last_saved = last_saved
        self.previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            print(f"{signal.Signals(signum).name} again: exiting now without saving (last checkpoint: step "
                  f"{self.last_saved()})", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum  # the loop saves after the current call and raises Interrupted

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
        return False


def _agreed_signal(local_signum: int | None) -> int | None:
    """The stop signal any process of a multi-process run received (None: none did).
    A collective: every process must call it at the same step."""
    from jax.experimental import multihost_utils
    signals = np.asarray(multihost_utils.process_allgather(np.int32(local_signum or 0)))
    received = [int(v) for v in signals.ravel() if v]
    return received[0] if received else None


@dataclass
class FitResult:
    train_state: TrainState          # host (numpy) copy of the final state
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl records
    last_checkpoint: int | None = None


def evaluate(runner, train_state, test_batches: Iterable[Batch]) -> dict[str, float]:
    """Loss and accuracy of a placed ``train_state`` over ``test_batches`` (padded and masked)."""
    sums = [runner.eval_step(train_state, runner.put_batch(pad_batch(b, runner.batch_multiple)))
            for b in test_batches]
    host = runner.get_metrics(sums)
    return finish_eval({k: sum(float(s[k]) for s in host) for k in ("loss_sum", "correct", "count")})


def evaluate_model(model, params, state, test_batches: Iterable[Batch], *, precision: str = "fp32",
                   backprop: str | None = None) -> dict[str, float]:
    """Loss and accuracy of ``model`` with ``params``/``state`` on one device
    (``backprop``: see :func:`jaxcnn.train.make_eval_step`)."""
    step = jax.jit(make_eval_step(model, precision=precision, backprop=backprop))
    ts = TrainState(params=params, state=state, opt_state=None, step=np.zeros((), np.int32))
    sums = jax.device_get([step(ts, pad_batch(b, 1)) for b in test_batches])
    return finish_eval({k: sum(float(s[k]) for s in sums) for k in ("loss_sum", "correct", "count")})


def _check_out_dir(out_dir, resume: bool) -> None:
    """Refuse to start a new run where one already is (before anything is built)."""
    if not resume and any(os.path.exists(os.path.join(out_dir, n)) for n in (rundir.METRICS, rundir.CHECKPOINTS)):
        raise rundir.RunDirError(f"out_dir {out_dir} already holds a run (checkpoints or metrics); resume it with "
                                 f"resume=True or use another directory")
    if os.path.isdir(out_dir):
        rundir.check_inside(out_dir, rundir.CONFIG, rundir.METRICS, rundir.CHECKPOINTS)


class _RunFiles:
    """The run directory's side of ``fit``: config.json written once, the checkpoint
    restored on resume (and metrics.jsonl cut back to it), each evaluation's record
    appended and each checkpoint saved. Without a directory every method does nothing."""

    def __init__(self, host_state, manager=None, writer=None, start_epoch=0, start_in_epoch=0, last_saved=None,
                 board=None):
        self.host_state, self.manager, self.writer, self.board = host_state, manager, writer, board
        self.start_epoch, self.start_in_epoch, self.last_saved = start_epoch, start_in_epoch, last_saved

    @classmethod
    def open(cls, out_dir, *, resume: bool, config, primary: bool, keep: int, host_state, seed: int,
             tensorboard: bool = True) -> "_RunFiles":
        os.makedirs(out_dir, exist_ok=True)
        ckpt_dir = os.path.join(out_dir, rundir.CHECKPOINTS)
        if config is not None and primary and rundir.read_config(out_dir) is None:
            rundir.write_config(out_dir, config)
        files = cls(host_state)
        if resume and ckpt.step_dirs(ckpt_dir):
            # the newest intact step; damaged newer ones are reported and moved aside
            # (before the manager lists the steps), so they can be saved again
            files.host_state, position, _ = ckpt.restore_train_state(ckpt_dir, host_state, move_damaged=primary)
            if position["seed"] != seed:
                raise ValueError(f"checkpoint in {out_dir} was written with seed {position['seed']}, "
                                 f"this run has seed {seed}; the data order would differ")
            files.start_epoch, files.start_in_epoch = position["epoch"], position["step_in_epoch"]
            files.last_saved = int(files.host_state.step)
        if resume and primary:
            # records after the restored step describe training that is redone now
            rundir.truncate_metrics(os.path.join(out_dir, rundir.METRICS), files.last_saved or 0)
        files.manager = ckpt.checkpoint_manager(ckpt_dir, max_to_keep=keep)
        files.writer = MetricsWriter(os.path.join(out_dir, rundir.METRICS) if primary else None)
        # the same scalars for TensorBoard; on resume its files are cut back as metrics.jsonl is
        files.board = open_writer(out_dir, resume_step=(files.last_saved or 0) if resume else None,
                                  enabled=tensorboard and primary)
        return files

    def log(self, record: dict, bar) -> None:
        """Append ``record`` to metrics.jsonl and print it as one line (``bar``: process 0's)."""
        if self.writer is not None:
            self.writer.write(record)
        if self.board is not None:
            self.board.write_record(record)
        if bar is not None:  # one line per evaluation, with or without the progress bar
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def save(self, host_state, step: int, position: dict) -> None:
        """Checkpoint ``host_state`` at ``step`` with its data position (asynchronous)."""
        if self.manager is not None:
            ckpt.save(self.manager, host_state, position)
            self.last_saved = step

    def close(self, failed: bool) -> None:
        """Wait for the last save and write its checksums; while already failing, a second
        error from cleaning up is not the one to report."""
        if self.board is not None:
            self.board.close()
        if self.manager is None:
            return
        try:
            ckpt.finish(self.manager)
            self.manager.close()
        except Exception:
            if not failed:
                raise


class _Meter:
    """Metrics between evaluations: device metrics fetched every ``log_every`` steps (the
    only host syncs of the loop), checked finite, shown on the progress bar, and the
    training time and images that make ``images_per_sec`` (compile and evaluation excluded)."""

    def __init__(self, runner, files: _RunFiles, step: int, bar):
        self.runner, self.files, self.bar = runner, files, bar
        self.pending: list[tuple[Any, int]] = []  # (device metrics, steps) of calls not yet fetched
        self.window: list[dict] = []        # fetched metrics since the last evaluation
        self.fetched_step = step            # metrics up to this step are on the host
        self.images_per_step = None
        self.first_step = True
        self.train_time, self.window_images = 0.0, 0
        self.t_run = self.t_mark = time.perf_counter()

    def add(self, metrics, steps: int) -> None:
        """Keep one call's device ``metrics`` (of ``steps`` steps) to fetch later."""
        self.pending.append((metrics, steps))

    def pending_steps(self) -> int:
        return sum(n for _, n in self.pending)

    def fetch(self) -> None:
        host = self.runner.get_metrics([m for m, _ in self.pending])  # blocks until those steps ran
        if self.runner.steps_per_dispatch > 1:   # stacked (K,) per call: its first n are the steps run
            host = [{k: v[i] for k, v in m.items()} for m, (_, n) in zip(host, self.pending) for i in range(n)]
        now = time.perf_counter()
        self.train_time += now - self.t_mark
        self.window_images += len(host) * self.images_per_step
        self.t_mark = now
        try:
            check_finite(host, self.fetched_step + 1)
        except NonFiniteLossError as e:
            manager = self.files.manager
            raise NonFiniteLossError(e.step, e.value, self.files.last_saved,
                                     manager.directory if manager is not None else None, what=e.what) from None
        self.bar.update(len(host))
        self.fetched_step += len(host)
        self.pending = []
        self.window.extend(host)
        recent = mean_metrics(host)
        self.bar.set_postfix(loss=f"{recent['loss']:.4f}", acc=f"{recent['accuracy']:.3f}",
                             img_s=f"{self.images_per_sec():.0f}")

    def images_per_sec(self) -> float:
        return self.window_images / max(self.train_time, 1e-9)

    def record(self, step: int, steps_per_epoch: int, learning_rate=None) -> dict:
        """The evaluation record's training part: the window's mean loss, accuracy and
        gradient norm, and the learning rate of the last update."""
        train_avg = mean_metrics(self.window)
        record = {"epoch": round(step / steps_per_epoch, 4), "step": step,
                  "train_loss": train_avg["loss"], "train_accuracy": train_avg["accuracy"]}
        if "grad_norm" in train_avg:
            record["grad_norm"] = train_avg["grad_norm"]
        if learning_rate is not None:   # the rate the last update used (optax counts from 0)
            record["lr"] = float(learning_rate(max(step - 1, 0)) if callable(learning_rate) else learning_rate)
        return record

    def exclude_compile(self) -> None:
        """After the first step (which compiled): its time and images do not count."""
        self.train_time, self.window_images, self.first_step = 0.0, 0, False

    def start_window(self, paused_s: float = 0.0) -> None:
        """Begin the next window; ``paused_s`` (an evaluation) is not counted as training."""
        self.window, self.train_time, self.window_images = [], 0.0, 0
        self.t_mark += paused_s


def _stop_decision(stop: _StopOnSignal, due: bool, pending: int, log_every: int) -> int | None:
    """The signal to stop on at this step, if any. With several processes every process
    must stop at the same step (the save is collective): the local signals are combined
    where all processes arrive alike (an evaluation or a metrics fetch; every process
    groups its steps into the same calls)."""
    if jax.process_count() == 1:
        return stop.signum
    if due or pending >= log_every:
        return _agreed_signal(stop.signum)
    return None


def fit(model, *, train_batches: Callable[[int, int], Iterable[Batch]], steps_per_epoch: int, epochs: int,
        input_shape: tuple[int, ...], tx, loss: Callable, test_batches: Callable[[], Iterable[Batch]] | None = None,
        seed: int = 0, parallel: str = "none", backprop: str = DEFAULT_MODE, precision: str = "fp32",
        out_dir: str | os.PathLike | None = None, resume: bool = False, eval_every: int = 0, log_every: int = 50,
        keep_checkpoints: int = 3, config: dict[str, Any] | None = None, progress: bool = True,
        augment: Callable | None = None, devices=None, auto_table: dict[str, str] | None = None,
        tensorboard: bool = True, learning_rate: Callable[[int], Any] | float | None = None,
        steps_per_dispatch: int = STEPS_PER_DISPATCH) -> FitResult:
    """Train ``model`` for ``epochs`` epochs of ``steps_per_epoch`` steps.

    ``augment(key, images)``: optional on-device augmentation inside the train step.
    ``backprop`` and ``auto_table``: as :func:`jaxcnn.train.make_train_step`.
    ``input_shape``: the model's input shape with a batch axis (NHWC), for ``init``.
    ``eval_every``: evaluate, log and checkpoint every that many steps (0: at the end of
    every epoch); the end of training always does. ``resume``: continue from the newest
    intact checkpoint in ``out_dir`` (same data order, same result as an uninterrupted
    run); without it, an ``out_dir`` that already holds checkpoints or metrics is refused
    (:class:`jaxcnn.train.rundir.RunDirError`). ``config`` is written to ``config.json``
    unless the directory already has one (it is the run's identity, written once).
    With several processes every process calls ``fit`` with its own batches; process 0
    writes ``metrics.jsonl``/``config.json``, prints one line per evaluation and shows the
    progress bar unless ``progress`` is False (or stderr is not a terminal).

    ``tensorboard``: process 0 also writes each evaluation record's scalars as TensorBoard
    event files into ``out_dir`` (:mod:`jaxcnn.train.tensorboard`), cut back to the
    restored step on resume. ``learning_rate`` (the optimiser's schedule, or a float) adds
    ``lr``, the rate of the last update, to every record; ``grad_norm`` (the mean global
    gradient norm since the last record) is recorded either way.

    ``steps_per_dispatch``: up to that many steps run as one call of one compiled program
    (:func:`jaxcnn.train.step.make_multi_step`); a call never runs past an evaluation or
    an epoch's end, and a stop signal takes effect after the current call. The steps and
    their numbers do not depend on it beyond float rounding (the same step program runs
    each step: with the same value the result does not depend on how steps were grouped).
    1 calls the plain step once per step.

    On CPU, call :func:`jaxcnn.hostmem.keep_freed_memory` before the script's first jax
    computation, as the ``jaxcnn`` command does: without it glibc maps and page-faults
    XLA's per-step temporaries anew every step (fmnist_cnn: ~20% of the step).
    """
    # ------------------------------------------------------------------ setup
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"need steps_per_epoch >= 1 and epochs >= 1, got {steps_per_epoch} and {epochs}")
    if not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
        raise ValueError(f"fit: keep_checkpoints must be an int >= 1, got {keep_checkpoints!r}")
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoints are)")
    if out_dir is not None:
        _check_out_dir(out_dir, resume)
    primary = jax.process_index() == 0
    runner = make_runner(parallel, model, loss, tx, backprop=backprop, precision=precision, augment=augment,
                         devices=devices, auto_table=auto_table, steps_per_dispatch=steps_per_dispatch)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    host_state = jax.device_get(create_train_state(model, tx, init_key, input_shape))
    files = _RunFiles.open(out_dir, resume=resume, config=config, primary=primary, keep=keep_checkpoints,
                           host_state=host_state, seed=seed, tensorboard=tensorboard) \
        if out_dir is not None else _RunFiles(host_state)
    step = int(files.host_state.step)
    train_state = runner.put_state(files.host_state)
    total_steps = epochs * steps_per_epoch
    history: list[dict[str, Any]] = []
    # disable=None: tqdm draws no bar when stderr is not a terminal (no carriage-return
    # lines in a redirected log); the per-evaluation lines are printed either way
    meter = _Meter(runner, files, step, tqdm(total=total_steps, initial=step, unit="step",
                                             disable=None if progress and primary else True, dynamic_ncols=True))
    start_epoch, start_in_epoch = files.start_epoch, files.start_in_epoch
    failed = False

    # ------------------------------------------------------------------ train
    stop = _StopOnSignal(lambda: files.last_saved)
    try:
        stop.__enter__()
        for epoch in range(start_epoch, epochs):
            seen, chunk = start_in_epoch, []
            for batch in itertools.islice(train_batches(epoch, start_in_epoch), steps_per_epoch - start_in_epoch):
                if meter.images_per_step is None:
                    meter.images_per_step = len(batch["label"]) * jax.process_count()
                chunk.append({"image": batch["image"], "label": batch["label"]})  # training uses full batches
                epoch_done = seen + len(chunk) == steps_per_epoch
                due = (eval_every and (step + len(chunk)) % eval_every == 0) or (not eval_every and epoch_done) or \
                    (epoch_done and epoch == epochs - 1)
                if len(chunk) < runner.steps_per_dispatch and not epoch_done and not due:
                    continue   # a call runs up to steps_per_dispatch steps, never past an evaluation
                train_state, metrics = runner.train_chunk(train_state, chunk, step_key)
                meter.add(metrics, len(chunk))
                step, seen, chunk = step + len(chunk), seen + len(chunk), []
                if meter.first_step:  # compilation happens here: keep it out of images/s
                    meter.fetch()
                    meter.exclude_compile()
                stopping = _stop_decision(stop, due, meter.pending_steps(), log_every)
                due = due or stopping is not None
                if meter.pending and (due or meter.pending_steps() >= log_every):
                    meter.fetch()
                if not due:
                    continue

                # -------------------------------------------------- evaluate + save
                t_eval = time.perf_counter()
                record = meter.record(step, steps_per_epoch, learning_rate)
                if test_batches is not None:
                    test = evaluate(runner, train_state, test_batches())
                    record.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
                record.update(images_per_sec=meter.images_per_sec(), wall_s=time.perf_counter() - meter.t_run)
                if stopping is not None:
                    record["stopped_by"] = signal.Signals(stopping).name
                history.append(record)
                files.log(record, meter.bar if primary else None)
                files.save(runner.get_state(train_state) if files.manager is not None else None, step,
                           {"epoch": epoch + 1 if epoch_done else epoch,
                            "step_in_epoch": 0 if epoch_done else seen, "seed": seed})
                meter.start_window(paused_s=time.perf_counter() - t_eval)  # evaluation is not training time
                if stopping is not None:
                    raise Interrupted(stopping, step, out_dir if files.manager is not None else None)
            if seen != steps_per_epoch:
                raise ValueError(f"train_batches({epoch}, start_step) yielded {seen} batches, expected steps_per_epoch="
                                 f"{steps_per_epoch}")
            start_in_epoch = 0
        if meter.pending:
            meter.fetch()
    except (Interrupted, NonFiniteLossError):
        raise  # every process stops here alike: the saves can be finished
    except BaseException:
        failed = True
        # With several processes a failure here is usually a lost peer; orbax's pending
        # save would wait at a cross-process barrier until jax's heartbeat timeout
        # (minutes). The checkpoints already committed are complete on disk.
        if jax.process_count() > 1 or isinstance(sys.exc_info()[1], ckpt.CheckpointWriteError):
            files.manager = None   # nothing more can be written there; orbax's writer may be wedged
        raise
    finally:
        stop.__exit__()
        meter.bar.close()
        files.close(failed)
    return FitResult(train_state=runner.get_state(train_state), history=history, last_checkpoint=files.last_saved)
