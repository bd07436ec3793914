"""Metrics on the host: averaging fetched per-step metrics, finishing eval sums, and the
``metrics.jsonl`` writer (one JSON object per evaluation, written by process 0)."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import numpy as np


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or gradient norm); the run stopped and
    saved nothing after it."""

    def __init__(self, step: int, value: float, last_checkpoint: int | None = None, directory: str | None = None,
                 what: str = "loss"):
        self.step, self.value, self.last_checkpoint, self.what = step, value, last_checkpoint, what
        where = (f"; the last good checkpoint (step {last_checkpoint}) is kept in {directory}"
                 if last_checkpoint is not None else "; no checkpoint was saved")
        super().__init__(f"non-finite training {what} ({value}) at step {step}: stopped, nothing saved after it"
                         f"{where}. Try a lower learning rate, --clip-norm or --precision fp32.")


def check_finite(step_metrics: Sequence[dict[str, Any]], first_step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first step (1-based update count) whose
    loss or gradient norm is not finite; ``step_metrics[i]`` belongs to update ``first_step + i``.
    (A NaN gradient can come with a finite loss, e.g. through ``max(nan, 0)``, and would
    poison the parameters just the same.)"""
    for i, m in enumerate(step_metrics):
        for what, key in (("loss", "loss"), ("gradient norm", "grad_norm")):
            if key in m and not math.isfinite(float(m[key])):
                raise NonFiniteLossError(first_step + i, float(m[key]), what=what)


def mean_metrics(step_metrics: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Average a list of per-step metric dicts (host arrays) key by key."""
    if not step_metrics:
        return {}
    return {k: float(np.mean([np.asarray(m[k]) for m in step_metrics])) for k in step_metrics[0]}


def finish_eval(sums: dict[str, Any]) -> dict[str, float]:
    """``{"loss", "accuracy", "count"}`` from summed eval-step outputs."""
    count = float(sums["count"])
    if count == 0:
        raise ValueError("evaluation saw no examples")
    return {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count, "count": count}


class MetricsWriter:
    """Appends one JSON object per line to ``path`` (no-op when ``path`` is None)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = path
        if path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one JSON line (nothing when the writer has no path)."""
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, one dict per non-empty line."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
