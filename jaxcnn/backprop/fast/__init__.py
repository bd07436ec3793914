"""Faster backward formulations and the table that ``backprop="auto"`` dispatches on.

``FORMULATIONS[op][name]`` is a function with ``jaxcnn.ops.<op>``'s signature and
values whose backward pass is one formulation: ``"fast"`` (this package: arg-max
max-pool backward, fused BatchNorm backward, a narrow-input conv's shifted forward,
a strided transposed conv as matmul + overlap-add), ``"onednn"`` (a convolution on
oneDNN's kernels, :mod:`jaxcnn.backprop.onednn`) or ``"explicit"`` (the custom_vjp twins
of :mod:`jaxcnn.backprop.twins`). ``TABLE`` names the one "auto" uses per op; an op it
does not list (or lists as ``"autodiff"``) uses XLA's autodiff. The table was chosen
by measurement on a 2-core x86 CPU (experiments/bench_train.py, docs/performance.md);
:func:`use` swaps entries, e.g. to measure another choice; a table saved by
``jaxcnn bench MODEL --tune`` replaces this one when the package is imported
(:mod:`jaxcnn.backprop.tuning`).
"""
from __future__ import annotations

from .. import dispatch, twins
from .batch_norm import batch_norm
from .conv import conv, narrow  # noqa: F401
from .conv_transpose import conv_transpose, overlap_add  # noqa: F401
from .max_pool import max_pool, max_pool_with, non_overlapping  # noqa: F401
from .. import onednn  # noqa: E402  (imports .conv above)

FORMULATIONS = {
    # non-overlapping windows from the arg-max; other geometries: the tap-by-tap twin
    "max_pool": {"fast": max_pool_with(twins.max_pool), "explicit": twins.max_pool},
    "batch_norm": {"fast": batch_norm, "explicit": twins.batch_norm},
    # oneDNN's kernels where they apply (float32 channels-last on CPU), else "fast"
    "conv": {"onednn": onednn.conv, "fast": conv, "explicit": twins.conv},
    "conv_transpose": {"fast": conv_transpose, "explicit": twins.conv_transpose},
    "dense": {"explicit": twins.dense},
    "dropout": {"explicit": twins.dropout},
    "avg_pool": {"explicit": twins.avg_pool},
}

# measured choices (docs/performance.md); everything else: autodiff
TABLE = {
    "max_pool": "fast",
    "batch_norm": "fast",
    "conv": "onednn",
    "conv_transpose": "fast",
}


def use(table: dict[str, str]) -> None:
    """Register ``table``'s choices (op -> formulation name or "autodiff") for "auto"."""
    for op, choice in table.items():
        if choice == "autodiff":
            dispatch._AUTO.pop(op, None)
            continue
        if op not in FORMULATIONS or choice not in FORMULATIONS[op]:
            known = {k: sorted(v) + ["autodiff"] for k, v in FORMULATIONS.items()}
            raise ValueError(f"backprop.fast.use: no formulation {choice!r} for op {op!r}; known: {known}")
        dispatch.register_auto(op, FORMULATIONS[op][choice])


use(TABLE)
# a table measured on this machine by `jaxcnn bench MODEL --tune` (jaxcnn.backprop.tuning)
from .. import tuning  # noqa: E402  (needs FORMULATIONS and use above)

tuning.apply_saved()
