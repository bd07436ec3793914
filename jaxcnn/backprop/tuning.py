"""Measure ``backprop="auto"``'s table on this machine, and keep what was measured.

The package's table (:data:`jaxcnn.backprop.fast.TABLE`) was chosen on one 2-core x86
CPU. :func:`tune` re-measures it for a model on the machine at hand: for each op the
model calls that has more than one backward formulation, the whole train step is
compiled once per candidate (``"autodiff"`` and each of ``fast.FORMULATIONS[op]``, the
other ops at their current choice) and timed in interleaved rounds; the fastest
candidate is kept before the next op is tried (greedy, op by op).

:func:`save` writes the result as JSON (``jaxcnn bench MODEL --tune`` writes
:func:`default_path`); :func:`apply_saved`, run when :mod:`jaxcnn.backprop.fast` is
imported, makes a saved table the "auto" choice in every later process: the file at
``$JAXCNN_AUTO_TABLE`` if set (``0`` switches saved tables off), else
:func:`default_path` if it exists. A table measured under another jaxlib version is
not applied (with a warning): XLA's code generation, and hence the winner, changes
between versions. The table is global, not per shape: tune with the model you train.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from typing import Callable

FORMAT_VERSION = 1
ENV = "JAXCNN_AUTO_TABLE"
_APPLIED: dict = {"source": "package", "path": None}


def default_path(environ=os.environ) -> str:
    from ..cli import cache_dir       # imports no jax
    return os.path.join(cache_dir(environ), "auto_table.json")


def saved_path(environ=os.environ) -> str | None:
    """The file "auto" reads its table from: ``$JAXCNN_AUTO_TABLE`` if set, else
    :func:`default_path`; None when ``JAXCNN_AUTO_TABLE=0`` switches saved tables off."""
    path = environ.get(ENV)
    if path == "0":
        return None
    return path or default_path(environ)


def source() -> dict:
    """Where the "auto" table in effect came from: ``{"source": "package" | "file", "path": ...}``."""
    return dict(_APPLIED)


def ops_called(model, input_shape) -> list[str]:
    """The ``dispatch`` ops ``model``'s training forward calls, in call order."""
    import jax
    import jax.numpy as jnp

    from ..models.base import as_model
    from .observe import observe
    model = as_model(model)
    names: list[str] = []

    def forward(x):
        params, state = model.init(jax.random.PRNGKey(0), x.shape)
        return model.apply(params, state, x, train=True, key=jax.random.PRNGKey(1))
    with observe(lambda name, args, kwargs: names.append(name) if name not in names else None):
        jax.eval_shape(forward, jnp.zeros(input_shape, jnp.float32))
    return names


def _jaxlib() -> str:
    import jaxlib
    return jaxlib.__version__


def tune(model, input_shape, num_classes: int, *, steps: int = 5, rounds: int = 3,
         log: Callable[[str], None] = print) -> dict:
    """Choose "auto"'s formulation per op for ``model`` at ``input_shape`` (batch first)
    by timing whole train steps (module docstring). Applies the winners (as
    :func:`jaxcnn.backprop.fast.use`) and returns ``{"table": {op: choice}, "timings":
    {op: {choice: median ms/step}}, ...}`` ready for :func:`save`."""
    import jax
    import optax

    from ..train.state import create_train_state
    from . import fast
    tx = optax.sgd(0.01, momentum=0.9)
    train_state = create_train_state(model, tx, jax.random.PRNGKey(0), input_shape)
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), input_shape),
             "label": jax.random.randint(jax.random.PRNGKey(2), input_shape[:1], 0, num_classes)}
    key = jax.random.PRNGKey(3)
    table = {op: _choice_in_effect(op) for op in fast.FORMULATIONS}
    before = dict(table)
    timings: dict[str, dict[str, float]] = {}
    tunable = [op for op in ops_called(model, input_shape) if op in fast.FORMULATIONS]
    try:
        _tune_each(tunable, table, timings, model, tx, train_state, batch, key, steps, rounds, log)
    except BaseException:
        fast.use(before)             # leave "auto" as it was
        raise
    fast.use(table)
    return {"version": FORMAT_VERSION, "jaxlib": _jaxlib(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "input_shape": list(input_shape), "table": table, "timings": timings}


def _choice_in_effect(op: str) -> str:
    from . import fast
    from .dispatch import _AUTO
    for name, fn in fast.FORMULATIONS[op].items():
        if _AUTO.get(op) is fn:
            return name
    return "autodiff"


def _tune_each(tunable, table, timings, model, tx, train_state, batch, key, steps, rounds, log):
    import jax

    from ..ops import cross_entropy
    from ..train.step import make_train_step
    from . import fast
    for op in tunable:
        candidates = ["autodiff"] + sorted(fast.FORMULATIONS[op])
        compiled = {}
        for choice in candidates:
            fast.use({**table, op: choice})          # read when the step is traced, i.e. here
            compiled[choice] = jax.jit(make_train_step(model, cross_entropy, tx, backprop="auto")).lower(
                train_state, batch, key).compile()
            jax.block_until_ready(compiled[choice](train_state, batch, key))     # warm-up
        times = {choice: [] for choice in candidates}
        for _ in range(rounds):
            for choice in candidates:
                for _ in range(steps):
                    t0 = time.perf_counter()
                    jax.block_until_ready(compiled[choice](train_state, batch, key)[1]["loss"])
                    times[choice].append(time.perf_counter() - t0)
        timings[op] = {c: 1e3 * statistics.median(t) for c, t in times.items()}
        table[op] = min(timings[op], key=timings[op].get)
        log(f"{op:15s} " + "  ".join(f"{c} {ms:.1f} ms" for c, ms in timings[op].items()) + f"  -> {table[op]}")


def save(result: dict, path: str | None = None) -> str:
    """Write :func:`tune`'s result as JSON (atomically) to ``path`` (default:
    :func:`default_path`); returns the path."""
    path = path or default_path()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)
    return path


def load(path: str) -> dict[str, str]:
    """The table saved at ``path``, checked: ``ValueError`` naming the file and the
    problem when it is not a table this package can use."""
    from . import fast
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"saved auto table {path}: cannot be read ({e})") from None
    usable = isinstance(saved, dict) and saved.get("version") == FORMAT_VERSION and isinstance(saved.get("table"), dict)
    if not usable:
        raise ValueError(f"saved auto table {path}: not a version-{FORMAT_VERSION} table from `jaxcnn bench --tune`")
    if saved.get("jaxlib") != _jaxlib():
        raise ValueError(f"saved auto table {path}: measured with jaxlib {saved.get('jaxlib')}, this is jaxlib "
                         f"{_jaxlib()}; run `jaxcnn bench MODEL --tune` again")
    table = saved["table"]
    for op, choice in table.items():
        if op not in fast.FORMULATIONS or (choice != "autodiff" and choice not in fast.FORMULATIONS[op]):
            raise ValueError(f"saved auto table {path}: no formulation {choice!r} for op {op!r}")
    return table


def apply_saved(environ=os.environ) -> str | None:
    """Make the saved table (module docstring) "auto"'s choice; returns its path, or None
    when none applies. A file that cannot be used is reported by a warning, not applied."""
    from . import fast
    path = saved_path(environ)
    if path is None:
        return None
    if not os.path.exists(path):
        if environ.get(ENV):
            warnings.warn(f"{ENV}={path}: no such file; using the package's auto table", stacklevel=2)
        return None
    try:
        table = load(path)
    except ValueError as e:
        warnings.warn(f"{e}; using the package's auto table", stacklevel=2)
        return None
    fast.use(table)
    _APPLIED.update(source="file", path=path)
    return path
