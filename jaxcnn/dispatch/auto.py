"""``backprop="auto"``'s table: per op, which formulation its backward pass uses.

``FORMULATIONS[op][name]`` is a function with ``jaxcnn.ops.<op>``'s signature and
values whose backward pass is one formulation: ``"fast"`` (:mod:`jaxcnn.kernels.xla`:
a non-overlapping max-pool's backward as torch's scan over strided taps, non-overlapping average pooling as a reshaped sum, fused BatchNorm backward, a narrow-input conv's shifted
forward, depthwise convs as shifted multiply-adds, a strided transposed conv as matmul
+ overlap-add), ``"onednn"`` (a convolution or a training BatchNorm on oneDNN's kernels,
:mod:`jaxcnn.kernels.onednn`; for ``"conv_relu"`` -- not an op but a Conv layer and the
ReLU after it, see :func:`jaxcnn.dispatch.conv_relu` -- with the bias and ReLU fused, and
likewise ``"conv_sigmoid"``; for
``"conv_bn_eval"`` -- a Conv, the BatchNorm after it and an optional ReLU in evaluation,
:func:`jaxcnn.dispatch.conv_bn_eval` -- the BatchNorm folded into the weights too) or ``"explicit"`` (the custom_vjp twins of
:mod:`jaxcnn.backprop.twins`). An op a table does not list (or lists as
``"autodiff"``) uses XLA's autodiff.

:data:`DEFAULT_TABLE` was chosen by measurement on a 2-core x86 CPU
(experiments/bench_train.py, docs/performance.md). The table in effect is a context
variable, read when a step is traced: :func:`set_auto_table` changes it for the process
(the command applies a table saved by ``jaxcnn bench --tune`` this way, at start-up),
:func:`auto_choices` for a block (``make_train_step(auto_table=...)`` traces in one).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Mapping

from ..backprop import twins
from ..kernels import onednn, xla

FORMULATIONS: dict[str, dict[str, Callable]] = {
    # non-overlapping windows: torch's scan over the taps (<= 16), else the arg-max;
    # other geometries: the tap-by-tap twin
    "max_pool": {"fast": xla.max_pool_with(twins.max_pool), "explicit": twins.max_pool},
    # training mode on oneDNN's primitives where they apply (channels last on CPU, no pmap
    # axis): bfloat16 both passes, float32 the backward after "fast"'s forward; else "fast"
    "batch_norm": {"onednn": onednn.batch_norm, "fast": xla.batch_norm, "explicit": twins.batch_norm},
    # oneDNN's kernels where they apply (float32 channels-last on CPU), else "fast"
    "conv": {"onednn": onednn.conv, "fast": xla.conv, "explicit": twins.conv},
    # a Conv layer followed by a ReLU layer in a ``serial`` (``dispatch.conv_relu``): bias
    # and ReLU as oneDNN post-ops where oneDNN applies, else relu(onednn.conv(...))
    "conv_relu": {"onednn": onednn.conv_relu},
    # a Conv layer followed by a sigmoid layer (LeNet-5): as "conv_relu", with oneDNN's
    # logistic post-op (``dispatch.conv_sigmoid``)
    "conv_sigmoid": {"onednn": onednn.conv_sigmoid},
    # in evaluation (train=False), a Conv, the BatchNorm after it and optionally a ReLU
    # (``dispatch.conv_bn_eval``): the BatchNorm folded into the weight and bias, then as
    # "conv_relu" (bias and ReLU as post-ops where oneDNN applies, else the conv plus bias)
    "conv_bn_eval": {"onednn": onednn.conv_bn_eval},
    "conv_transpose": {"fast": xla.conv_transpose, "explicit": twins.conv_transpose},
    "dense": {"explicit": twins.dense},
    "dropout": {"explicit": twins.dropout},
    # non-overlapping windows as a reshaped sum; other geometries: the op (autodiff)
    "avg_pool": {"fast": xla.avg_pool, "explicit": twins.avg_pool},
}

# measured choices (docs/performance.md); every other op: autodiff
DEFAULT_TABLE: dict[str, str] = {
    "max_pool": "fast",
    "avg_pool": "fast",
    "batch_norm": "onednn",
    "conv": "onednn",
    "conv_relu": "onednn",
    "conv_sigmoid": "onednn",
    "conv_transpose": "fast",
}


def check_table(table: Mapping[str, str], source: str = "auto table") -> dict[str, str]:
    """``table`` as a dict if every entry names a known op and formulation (or
    ``"autodiff"``), else ``ValueError`` naming ``source``, the entry and the choices."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{source}: expected a mapping of op -> formulation, got {type(table).__name__}")
    for op, choice in table.items():
        if op not in FORMULATIONS or (choice != "autodiff" and choice not in FORMULATIONS[op]):
            known = {k: sorted(v) + ["autodiff"] for k, v in FORMULATIONS.items()}
            raise ValueError(f"{source}: no formulation {choice!r} for op {op!r}; known: {known}")
    return dict(table)


_TABLE: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("jaxcnn_auto_table",
                                                                         default=dict(DEFAULT_TABLE))


def auto_table() -> dict[str, str]:
    """The table in effect: ``{op: formulation name}`` for every op in :data:`FORMULATIONS`
    (``"autodiff"`` where none is chosen)."""
    table = _TABLE.get()
    return {op: table.get(op, "autodiff") for op in FORMULATIONS}


def set_auto_table(table: Mapping[str, str]) -> dict[str, str]:
    """Make ``table``'s entries (op -> formulation or ``"autodiff"``; unlisted ops keep
    their choice) "auto"'s choice from now on in this context; returns the previous table."""
    previous = _TABLE.get()
    _TABLE.set({**previous, **check_table(table)})
    return dict(previous)


@contextlib.contextmanager
def auto_choices(table: Mapping[str, str] | None):
    """Trace the enclosed block with ``table``'s entries over the table in effect
    (``None``: unchanged)."""
    if table is None:
        yield
        return
    token = _TABLE.set({**_TABLE.get(), **check_table(table)})
    try:
        yield
    finally:
        _TABLE.reset(token)


def resolve(op: str) -> Callable | None:
    """The function "auto" calls for ``op`` now, or None for autodiff."""
    choice = _TABLE.get().get(op, "autodiff")
    return None if choice == "autodiff" else FORMULATIONS[op][choice]
