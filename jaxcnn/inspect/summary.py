"""Model summary: per-layer output shapes, parameter counts and multiply-adds.

Counts follow Keras: ``total_params = trainable_params + non_trainable_params`` where
trainable = params and non-trainable = state (BatchNorm running statistics). A layer
row's ``params`` also includes its state (Keras' "Param #"), ``trainable`` does not.
torchvision's ``sum(p.numel() for p in model.parameters())`` equals ``trainable_params``.
Mult-adds count multiply-accumulates of conv, transposed conv and dense layers (bias
and elementwise work excluded), for the given input shape including its batch size.
A layer applied more than once (shared parameters) has its parameters counted once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..models.base import count
from ._trace import subtree, trace


@dataclass
class Row:
    name: str
    type: str
    output_shape: tuple
    params: int
    trainable: int
    mult_adds: int


@dataclass
class Summary:
    rows: list = field(default_factory=list)
    input_shape: tuple = ()
    output_shape: tuple = ()
    trainable_params: int = 0
    non_trainable_params: int = 0
    mult_adds: int = 0

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def __str__(self) -> str:
        head = ("Layer (type)", "Output Shape", "Param #", "Mult-Adds")
        body = [(f"{r.name} ({r.type})", str(r.output_shape), f"{r.params:,}", f"{r.mult_adds:,}")
                for r in self.rows]
        widths = [max(len(x[i]) for x in [head] + body) for i in range(4)]

        def line(cells):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        rule = "=" * len(line(head))
        out = [rule, line(head), rule] + [line(b) for b in body] + [rule]
        out += [f"Input shape: {self.input_shape}   Output shape: {self.output_shape}",
                f"Total params: {self.total_params:,}",
                f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.non_trainable_params:,}",
                f"Total mult-adds: {self.mult_adds:,}", rule]
        return "\n".join(out)


def layer_mult_adds(rec) -> int:
    """Multiply-accumulates of one recorded call (0 for layers without weights)."""
    kind = rec.meta.get("kind")
    w = rec.params.get("weight") if isinstance(rec.params, dict) else None
    if w is None:
        return 0
    size = math.prod(w.shape)
    if kind == "conv":   # each output element: k_prod * C_in/groups = size / C_out
        c_out = rec.meta["features"]
        return math.prod(rec.out_shape) * size // c_out
    if kind == "conv_transpose":   # each input element scatters k_prod * C_out/groups
        c_in = w.shape[-2] if rec.meta.get("layout", "NHWC") in ("NHWC", "NWC", "NDHWC") else w.shape[0]
        return math.prod(rec.in_shapes[0]) * size // c_in
    if kind == "dense":
        return math.prod(rec.out_shape) * w.shape[0]
    return 0


def summary(model, input_shape) -> Summary:
    """Summarise ``model`` (a zoo Model or a Layer) on ``input_shape`` (with batch axis)."""
    params, state, records, out_shape = trace(model, input_shape)
    result = Summary(input_shape=tuple(input_shape), output_shape=out_shape,
                     trainable_params=count(params), non_trainable_params=count(state))
    seen = set()
    for rec in records:
        name = "/".join(rec.path) or "<root>"
        first = rec.path not in seen
        seen.add(rec.path)
        trainable = count(subtree(params, rec.path)) if first else 0
        fixed = count(subtree(state, rec.path)) if first else 0
        macs = layer_mult_adds(rec)
        result.mult_adds += macs
        result.rows.append(Row(name, rec.meta.get("type", "?"), rec.out_shape, trainable + fixed, trainable, macs))
    return result
