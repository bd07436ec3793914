"""Measure ``backprop="auto"``'s table on this machine, and keep what was measured.

The package's table (:data:`jaxcnn.dispatch.DEFAULT_TABLE`) was chosen on one 2-core
x86 CPU. :func:`tune` re-measures it for a model on the machine at hand: for each op
the model calls that has more than one backward formulation, the whole train step is
compiled once per candidate (``"autodiff"`` and each of ``dispatch.FORMULATIONS[op]``,
the other ops at their current choice) and timed in interleaved rounds; the fastest
candidate is kept before the next op is tried (greedy, op by op).

:func:`save` writes the result as JSON (``jaxcnn bench MODEL --tune`` writes
:func:`jaxcnn.config.auto_table_path`). Nothing reads it at import: a command that
trains calls :func:`apply_saved` at start-up (``jaxcnn train``, ``jaxcnn bench``), and
a script either does the same or passes ``load(path)`` to ``make_train_step(...,
auto_table=...)``. A table measured under another jaxlib version is refused: XLA's code
generation, and hence the winner, changes between versions. The table is global, not
per shape: tune with the model you train.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable

import jax
import jaxlib
import jax.numpy as jnp
import optax

from .. import config, dispatch
from ..models.base import as_model
from ..ops import cross_entropy
from .state import create_train_state
from .step import make_train_step

FORMAT_VERSION = 1


def ops_called(model, input_shape) -> list[str]:
    """The ``dispatch`` ops ``model``'s training forward calls, in call order."""
    model = as_model(model)
    names: list[str] = []

    def forward(x):
        params, state = model.init(jax.random.PRNGKey(0), x.shape)
        return model.apply(params, state, x, train=True, key=jax.random.PRNGKey(1))
    with dispatch.observe(lambda name, args, kwargs: names.append(name) if name not in names else None):
        jax.eval_shape(forward, jnp.zeros(input_shape, jnp.float32))
    return names


def tune(model, input_shape, num_classes: int, *, steps: int = 5, rounds: int = 3,
         log: Callable[[str], None] = print) -> dict:
    """Choose "auto"'s formulation per op for ``model`` at ``input_shape`` (batch first)
    by timing whole train steps (module docstring). Changes nothing in effect; returns
    ``{"table": {op: choice}, "timings": {op: {choice: median ms/step}}, ...}`` ready for
    :func:`save` (and ``result["table"]`` for ``make_train_step(auto_table=...)``)."""
    tx = optax.sgd(0.01, momentum=0.9)
    train_state = create_train_state(model, tx, jax.random.PRNGKey(0), input_shape)
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), input_shape),
             "label": jax.random.randint(jax.random.PRNGKey(2), input_shape[:1], 0, num_classes)}
    key = jax.random.PRNGKey(3)
    table = dispatch.auto_table()
    timings: dict[str, dict[str, float]] = {}
    for op in [op for op in ops_called(model, input_shape) if op in dispatch.FORMULATIONS]:
        timings[op] = _time_candidates(op, table, model, tx, train_state, batch, key, steps, rounds)
        table[op] = min(timings[op], key=timings[op].get)
        log(f"{op:15s} " + "  ".join(f"{c} {ms:.1f} ms" for c, ms in timings[op].items()) + f"  -> {table[op]}")
    return {"version": FORMAT_VERSION, "jaxlib": jaxlib.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "input_shape": list(input_shape), "table": table, "timings": timings}


def _time_candidates(op, table, model, tx, train_state, batch, key, steps, rounds) -> dict[str, float]:
    """Median ms per step of the train step with each candidate for ``op``, in interleaved rounds."""
    candidates = ["autodiff"] + sorted(dispatch.FORMULATIONS[op])
    compiled = {}
    for choice in candidates:
        step = make_train_step(model, cross_entropy, tx, backprop="auto", auto_table={**table, op: choice})
        compiled[choice] = jax.jit(step).lower(train_state, batch, key).compile()
        jax.block_until_ready(compiled[choice](train_state, batch, key))     # warm-up
    times: dict[str, list[float]] = {choice: [] for choice in candidates}
    for _ in range(rounds):
        for choice in candidates:
            for _ in range(steps):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled[choice](train_state, batch, key)[1]["loss"])
                times[choice].append(time.perf_counter() - t0)
    return {c: 1e3 * statistics.median(t) for c, t in times.items()}


def save(result: dict, path: str | None = None) -> str:
    """Write :func:`tune`'s result as JSON (atomically) to ``path`` (default:
    :func:`jaxcnn.config.auto_table_path`, or ``<cache>/auto_table.json`` when that is
    switched off); returns the path."""
    path = path or config.auto_table_path() or os.path.join(config.cache_dir(), "auto_table.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    config.write_atomic(path, json.dumps(result, indent=1))
    return path


def load(path: str) -> dict[str, str]:
    """The table saved at ``path``, checked: ``ValueError`` naming the file and the
    problem when it is not a table this jaxlib can use (unreadable, not a regular file,
    too large, not JSON, another format or jaxlib version, an unknown formulation)."""
    try:
        saved = json.loads(config.read_regular_file(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"saved auto table {path}: cannot be read ({e})") from None
    usable = isinstance(saved, dict) and saved.get("version") == FORMAT_VERSION and isinstance(saved.get("table"), dict)
    if not usable:
        raise ValueError(f"saved auto table {path}: not a version-{FORMAT_VERSION} table from `jaxcnn bench --tune`")
    if saved.get("jaxlib") != jaxlib.__version__:
        raise ValueError(f"saved auto table {path}: measured with jaxlib {saved.get('jaxlib')}, this is jaxlib "
                         f"{jaxlib.__version__}; run `jaxcnn bench MODEL --tune` again")
    return dispatch.check_table(saved["table"], f"saved auto table {path}")


def apply_saved(environ=os.environ, warn: Callable[[str], None] | None = None) -> str | None:
    """Make the saved table (:func:`jaxcnn.config.auto_table_path`) "auto"'s choice in
    this process; returns its path, or None when there is none. A file that cannot be
    used is not applied and is reported through ``warn(message)`` (the message names the
    file); ``warn=None`` raises the ``ValueError`` instead."""
    path = config.auto_table_path(environ)
    if path is None:
        return None
    if not os.path.lexists(path):
        if environ.get("JAXCNN_AUTO_TABLE"):
            message = f"JAXCNN_AUTO_TABLE={path}: no such file; using the package's auto table"
            if warn is None:
                raise ValueError(message)
            warn(message)
        return None
    try:
        table = load(path)
    except ValueError as e:
        if warn is None:
            raise
        warn(f"{e}; using the package's auto table")
        return None
    dispatch.set_auto_table(table)
    return path
