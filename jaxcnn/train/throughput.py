"""Evaluation with its throughput: :func:`evaluate_model`'s loss and accuracy plus the
images per second of the evaluation pass, compile excluded -- so a float run and its
compressed copy can be compared (``jaxcnn eval`` prints ``images_per_sec=``).

Every distinct batch shape (a short last batch is one more) is compiled before the
clock starts; the timed pass then runs the compiled step over every batch, already on
the device, and waits for the last result. Only real examples are counted (the data
layer's padding masked out)."""
from __future__ import annotations

import time
from typing import Callable, Iterable

import jax
import numpy as np

from .metrics import finish_eval
from .parallel import pad_batch
from .state import TrainState
from .step import make_eval_step

Batch = dict


def timed_evaluate(step: Callable, train_state, test_batches: Iterable[Batch]) -> dict[str, float]:
    """Run the (jit-ed) ``step(train_state, batch) -> sums`` over ``test_batches`` and return
    ``finish_eval``'s loss/accuracy/count plus ``images_per_sec`` (real examples over the
    wall time of the pass, compile excluded) and ``compile_s``."""
    batches = [jax.device_put(pad_batch(b, 1)) for b in test_batches]
    t0 = time.perf_counter()
    seen = set()
    for b in batches:                       # compile (and warm) each shape outside the clock
        key = tuple((k, v.shape, v.dtype) for k, v in sorted(b.items()))
        if key not in seen:
            seen.add(key)
            jax.block_until_ready(step(train_state, b))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sums = [step(train_state, b) for b in batches]
    jax.block_until_ready(sums)
    seconds = time.perf_counter() - t0
    host = jax.device_get(sums)
    result = finish_eval({k: sum(float(s[k]) for s in host) for k in ("loss_sum", "correct", "count")})
    return {**result, "images_per_sec": result["count"] / seconds if seconds > 0 else float("inf"),
            "eval_seconds": seconds, "compile_s": compile_s}


def evaluate_model_throughput(model, params, state, test_batches: Iterable[Batch], *, precision: str = "fp32",
                              forward=None, compiler_options: dict | None = None,
                              backprop: str | None = None) -> dict[str, float]:
    """:func:`jaxcnn.train.evaluate_model`'s result (loss, accuracy, count) plus
    ``images_per_sec`` of the evaluation pass (compile excluded), ``eval_seconds`` and
    ``compile_s``. ``forward`` and ``backprop``: see :func:`jaxcnn.train.make_eval_step`;
    ``compiler_options``: XLA options of the evaluation program (``jax.jit``'s)."""
    step = jax.jit(make_eval_step(model, precision=precision, forward=forward, backprop=backprop),
                   compiler_options=compiler_options or None)
    ts = TrainState(params=params, state=state, opt_state=None, step=np.zeros((), np.int32))
    return timed_evaluate(step, ts, test_batches)
