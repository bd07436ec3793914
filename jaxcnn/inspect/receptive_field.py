"""Receptive fields per layer (the seeds' 002 recurrence, dilation included).

For each spatial dim, with ``n`` the map size, ``j`` the jump (input pixels between
adjacent units), ``r`` the receptive field and ``start`` the centre of the first unit's
field in input coordinates (pixel ``p`` spans ``[p, p+1]``, so the input starts at 0.5),
a window layer with kernel ``k``, stride ``s``, dilation ``d``, left padding ``p``
(effective kernel ``k' = d(k-1)+1``) gives::

    j_out = j * s      r_out = r + (k' - 1) * j      start_out = start + ((k' - 1)/2 - p) * j

Pointwise layers (BN, activations, dropout) keep all four; merges (add/concat) take the
largest field among their inputs; flatten, dense, global/adaptive pooling and
upsampling are marked ``global`` (every output sees the whole input, or the recurrence
does not apply) and later rows inherit that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ops.layout import channels_last
from ..ops.shapes import ntuple, resolve_conv_padding
from ._trace import trace


@dataclass
class RFRow:
    name: str
    type: str
    size: tuple          # map size per spatial dim
    start: tuple
    jump: tuple
    rf: tuple | None     # None: global (the whole input)

    @property
    def is_global(self) -> bool:
        return self.rf is None


@dataclass
class RFTable:
    rows: list

    def __getitem__(self, name):
        """The row of layer ``name``; for a layer applied several times, its last call."""
        for r in reversed(self.rows):
            if r.name == name:
                return r
        raise KeyError(f"no layer {name!r}; layers: {[r.name for r in self.rows]}")

    def __str__(self):
        lines = [f"{'layer':32s} {'type':16s} {'size':>12s} {'start':>10s} {'jump':>8s} {'rf':>8s}"]
        for r in self.rows:
            show = (lambda t: "x".join(f"{v:g}" for v in t))
            lines.append(f"{r.name:32s} {r.type:16s} {show(r.size):>12s} {show(r.start):>10s} "
                         f"{show(r.jump):>8s} {'global' if r.rf is None else show(r.rf):>8s}")
        return "\n".join(lines)


def _spatial(shape, layout):
    return tuple(shape[1:-1]) if channels_last(layout) else tuple(shape[2:])


def _window_step(info, rec, out_size):
    size, start, jump, rf = info
    meta, rank = rec.meta, len(size)
    kernel = ntuple(meta["kernel_size"], rank, "kernel_size", "receptive_field")
    stride = ntuple(meta.get("stride") or meta["kernel_size"], rank, "stride", "receptive_field")
    dilation = ntuple(meta.get("dilation", 1), rank, "dilation", "receptive_field")
    pads = resolve_conv_padding(meta.get("padding", 0), kernel, stride, dilation, size, "receptive_field")
    eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    new_start = tuple(st + ((e - 1) / 2 - lo) * j for st, e, (lo, _), j in zip(start, eff, pads, jump))
    new_jump = tuple(j * s for j, s in zip(jump, stride))
    new_rf = None if rf is None else tuple(r + (e - 1) * j for r, e, j in zip(rf, eff, jump))
    return out_size, new_start, new_jump, new_rf


def receptive_field(model, input_shape, layout: str = "NHWC") -> RFTable:
    """Per-layer map size, start, jump and receptive field for ``input_shape`` (with batch)."""
    _, _, records, _ = trace(model, input_shape)
    size0 = _spatial(tuple(input_shape), layout)
    first = (size0, (0.5,) * len(size0), (1,) * len(size0), (1,) * len(size0))
    rows = [RFRow("input", "Input", *first)]
    infos, last = {}, first
    for rec in records:
        ins = [infos.get(id(x), last) for x in rec.inputs]
        out_size = _spatial(rec.out_shape, layout) if len(rec.out_shape) == len(input_shape) else ()
        mode, kind = rec.meta.get("rf"), rec.meta.get("kind")
        if kind in ("conv", "pool") and ins[0][3] is not None and len(out_size) == len(size0):
            info = _window_step(ins[0], rec, out_size)
        elif mode == "pointwise":
            info = (out_size,) + ins[0][1:]
        elif mode == "merge" and all(i[3] is not None for i in ins):
            widest = max(ins, key=lambda i: math.prod(i[3]))
            info = (out_size,) + widest[1:]
        else:
            info = (out_size, ins[0][1], ins[0][2], None)
        infos[id(rec.output)] = info
        last = info
        rows.append(RFRow("/".join(rec.path) or "<root>", rec.meta.get("type", "?"), *info))
    return RFTable(rows)


def region(model, input_shape, layer: str, index, layout: str = "NHWC"):
    """The input region seen by output unit ``index`` (spatial indices) of ``layer``.

    Returns per spatial dim ``(lo, hi)``: pixel indices ``lo <= p < hi``, clipped to the
    input; the unclipped window (which may reach into padding) is ``region_unclipped``.
    """
    row = receptive_field(model, input_shape, layout)[layer]
    if row.rf is None:
        return tuple((0, n) for n in _spatial(tuple(input_shape), layout))
    return tuple((max(lo, 0), min(hi, n)) for (lo, hi), n in
                 zip(region_unclipped(row, index), _spatial(tuple(input_shape), layout)))


def region_unclipped(row: RFRow, index) -> tuple:
    """Pixel ranges ``[lo, hi)`` whose centres lie inside the unit's receptive field."""
    index = ntuple(index, len(row.size), "index", "region")
    out = []
    for i, st, j, r in zip(index, row.start, row.jump, row.rf):
        centre = st + i * j
        lo = math.ceil(centre - r / 2 - 0.5)
        out.append((lo, lo + int(r)))
    return tuple(out)
