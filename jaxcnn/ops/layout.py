"""Channel layout handling shared by all ops.

``layout="NHWC"`` (default) means channels-last for every spatial rank (NWC, NHWC,
NDHWC); ``layout="NCHW"`` means channels-first (NCW, NCHW, NCDHW), exactly torch's.
The explicit rank-specific spellings are accepted too.
"""
from __future__ import annotations

_CHANNELS_LAST = {"NHWC", "NWC", "NDHWC", "channels_last"}
_CHANNELS_FIRST = {"NCHW", "NCW", "NCDHW", "channels_first"}


def channels_last(layout: str, op: str = "op") -> bool:
    """True for a channels-last layout, False for channels-first; ValueError otherwise."""
    if layout in _CHANNELS_LAST:
        return True
    if layout in _CHANNELS_FIRST:
        return False
    raise ValueError(f"{op}: layout must be 'NHWC' (channels-last) or 'NCHW' (channels-first), got {layout!r}")


def dimension_numbers(rank: int, layout: str, op: str = "op") -> tuple[str, str, str]:
    """lax.conv_general_dilated dimension numbers for ``rank`` spatial dims.

    Channels-last data uses kernels ``(*kernel, I, O)`` (flax); channels-first data uses
    torch's ``(O, I, *kernel)``.
    """
    sp = "DHW"[3 - rank:] if rank <= 3 else None
    if sp is None:
        raise ValueError(f"{op}: only 1-, 2- and 3-D convolutions are supported, got {rank} spatial dims")
    if channels_last(layout, op):
        return ("N" + sp + "C", sp + "IO", "N" + sp + "C")
    return ("NC" + sp, "OI" + sp, "NC" + sp)


def channel_axis(ndim: int, layout: str, op: str = "op") -> int:
    """The channel axis of a batched array of rank ``ndim`` in ``layout`` (last for
    channels-last, 1 otherwise); ``ValueError`` for an unknown layout."""
    return ndim - 1 if channels_last(layout, op) else 1


def spatial_axes(ndim: int, layout: str, op: str = "op") -> tuple[int, ...]:
    """Axes of the spatial dimensions of a batched array of rank ``ndim``."""
    if channels_last(layout, op):
        return tuple(range(1, ndim - 1))
    return tuple(range(2, ndim))
