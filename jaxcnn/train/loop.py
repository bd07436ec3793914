"""The training loop: a straight line from setup to the last checkpoint.

``fit`` consumes batches ``{"image": (B, H, W, C) float32, "label": (B,) int32}`` from
``train_batches(epoch, start_step)`` (this process's share of the global batches of
``epoch`` from batch ``start_step`` on; deterministic in (seed, epoch), so a resumed
run sees the same order, e.g. ``jaxcnn.data.batches``), runs the pure step under ``jax.jit``, ``jax.pmap`` or
``jax.jit`` over a mesh (``parallel``), fetches metrics to the host only every
``log_every`` steps and at evaluations, evaluates on ``test_batches()``, writes
``metrics.jsonl`` and saves an orbax checkpoint (with the data position) at every
evaluation. A non-finite loss stops the run before anything else is saved.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import jax
import numpy as np
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .metrics import MetricsWriter, NonFiniteLossError, check_finite, finish_eval, mean_metrics
from .parallel import make_runner, pad_batch
from .state import TrainState, create_train_state
from .step import make_eval_step

Batch = dict[str, np.ndarray]


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


def evaluate_model(model, params, state, test_batches: Iterable[Batch], *, precision: str = "fp32"
                   ) -> dict[str, float]:
    """Loss and accuracy of ``model`` with ``params``/``state`` on one device."""
    step = jax.jit(make_eval_step(model, precision=precision))
    ts = TrainState(params=params, state=state, opt_state=None, step=np.zeros((), np.int32))
    sums = jax.device_get([step(ts, pad_batch(b, 1)) for b in test_batches])
    return finish_eval({k: sum(float(s[k]) for s in sums) for k in ("loss_sum", "correct", "count")})


def fit(model, *, train_batches: Callable[[int, int], Iterable[Batch]], steps_per_epoch: int, epochs: int,
        input_shape: tuple[int, ...], tx, loss: Callable, test_batches: Callable[[], Iterable[Batch]] | None = None,
        seed: int = 0, parallel: str = "none", backprop: str = "autodiff", precision: str = "fp32",
        out_dir: str | os.PathLike | None = None, resume: bool = False, eval_every: int = 0, log_every: int = 50,
        keep_checkpoints: int = 3, config: dict[str, Any] | None = None, progress: bool = True,
        augment: Callable | None = None, devices=None) -> FitResult:
    """Train ``model`` for ``epochs`` epochs of ``steps_per_epoch`` steps.

    ``augment(key, images)``: optional on-device augmentation inside the train step.
    ``input_shape``: the model's input shape with a batch axis (NHWC), for ``init``.
    ``eval_every``: evaluate, log and checkpoint every that many steps (0: at the end of
    every epoch); the end of training always does. ``resume``: continue from the latest
    checkpoint in ``out_dir`` (same data order, same result as an uninterrupted run).
    With several processes every process calls ``fit`` with its own batches; process 0
    writes ``metrics.jsonl``/``config.json``, prints one line per evaluation and shows the
    progress bar unless ``progress`` is False.
    """
    # ------------------------------------------------------------------ setup
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"need steps_per_epoch >= 1 and epochs >= 1, got {steps_per_epoch} and {epochs}")
    primary = jax.process_index() == 0
    runner = make_runner(parallel, model, loss, tx, backprop=backprop, precision=precision, augment=augment,
                         devices=devices)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    host_state = jax.device_get(create_train_state(model, tx, init_key, input_shape))

    manager = writer = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        manager = ckpt.checkpoint_manager(os.path.join(out_dir, "checkpoints"), max_to_keep=keep_checkpoints)
        writer = MetricsWriter(os.path.join(out_dir, "metrics.jsonl") if primary else None)
        if config is not None and primary:
            with open(os.path.join(out_dir, "config.json"), "w") as f:
                json.dump(config, f, indent=2, sort_keys=True)

    start_epoch, start_in_epoch = 0, 0
    last_saved = None
    if resume:
        if manager is None:
            raise ValueError("resume=True needs out_dir (where the checkpoints are)")
        if manager.latest_step() is not None:
            host_state, position = ckpt.restore(manager, host_state)
            if position["seed"] != seed:
                raise ValueError(f"checkpoint in {out_dir} was written with seed {position['seed']}, "
                                 f"this run has seed {seed}; the data order would differ")
            start_epoch, start_in_epoch = position["epoch"], position["step_in_epoch"]
            last_saved = int(host_state.step)
    step = int(host_state.step)
    train_state = runner.put_state(host_state)
    total_steps = epochs * steps_per_epoch
    images_per_step = None
    history: list[dict[str, Any]] = []

    bar = tqdm(total=total_steps, initial=step, unit="step", disable=not (progress and primary), dynamic_ncols=True)
    pending: list[Any] = []        # device metrics not yet fetched
    window: list[dict] = []        # fetched metrics since the last evaluation
    fetched_step = step            # metrics up to this step are on the host
    train_time, window_images = 0.0, 0
    t_run = t_mark = time.perf_counter()
    first_step = True

    def fetch():
        nonlocal pending, fetched_step, t_mark, train_time, window_images
        host = runner.get_metrics(pending)  # blocks until those steps ran
        now = time.perf_counter()
        train_time += now - t_mark
        window_images += len(pending) * images_per_step
        t_mark = now
        try:
            check_finite(host, fetched_step + 1)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(e.step, e.value, last_saved, manager.directory if manager is not None else None,
                                     what=e.what) from None
        bar.update(len(host))
        fetched_step += len(host)
        pending = []
        window.extend(host)
        recent = mean_metrics(host)
        bar.set_postfix(loss=f"{recent['loss']:.4f}", acc=f"{recent['accuracy']:.3f}",
                        img_s=f"{window_images / max(train_time, 1e-9):.0f}")

    # ------------------------------------------------------------------ train
    try:
        for epoch in range(start_epoch, epochs):
            seen = start_in_epoch
            for batch in itertools.islice(train_batches(epoch, start_in_epoch), steps_per_epoch - start_in_epoch):
                if images_per_step is None:
                    images_per_step = len(batch["label"]) * jax.process_count()
                batch = {"image": batch["image"], "label": batch["label"]}  # training uses full batches
                train_state, metrics = runner.train_step(train_state, runner.put_batch(batch), step_key)
                pending.append(metrics)
                step, seen = step + 1, seen + 1
                if first_step:  # compilation happens here: keep it out of images/s
                    fetch()
                    train_time, window_images, first_step = 0.0, 0, False
                epoch_done = seen == steps_per_epoch
                due = (eval_every and step % eval_every == 0) or (not eval_every and epoch_done) or \
                    (epoch_done and epoch == epochs - 1)
                if pending and (due or len(pending) >= log_every):
                    fetch()
                if not due:
                    continue

                # -------------------------------------------------- evaluate + save
                t_eval = time.perf_counter()
                train_avg = mean_metrics(window)
                record = {"epoch": round(step / steps_per_epoch, 4), "step": step,
                          "train_loss": train_avg["loss"], "train_accuracy": train_avg["accuracy"]}
                if test_batches is not None:
                    test = evaluate(runner, train_state, test_batches())
                    record.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
                record.update(images_per_sec=window_images / max(train_time, 1e-9),
                              wall_s=time.perf_counter() - t_run)
                history.append(record)
                if writer is not None:
                    writer.write(record)
                if primary:  # one line per evaluation, with or without the progress bar
                    bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in record.items()))
                if manager is not None:
                    position = {"epoch": epoch + 1 if epoch_done else epoch,
                                "step_in_epoch": 0 if epoch_done else seen, "seed": seed}
                    ckpt.save(manager, runner.get_state(train_state), position)
                    last_saved = step
                window, train_time, window_images = [], 0.0, 0
                t_mark += time.perf_counter() - t_eval  # evaluation time is not training time
            if seen != steps_per_epoch:
                raise ValueError(f"train_batches({epoch}, start_step) yielded {seen} batches, expected steps_per_epoch="
                                 f"{steps_per_epoch}")
            start_in_epoch = 0
        if pending:
            fetch()
    finally:
        bar.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return FitResult(train_state=runner.get_state(train_state), history=history, last_checkpoint=last_saved)
