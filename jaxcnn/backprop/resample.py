"""Explicit backward passes of the resampling ops: ``upsample`` (nearest and linear
modes) and ``max_unpool``, plus the flat-index scatter/gather they and
``adaptive_max_pool_backward`` share.

``upsample`` is separable and linear: along each spatial axis it applies a fixed
(out x in) matrix ``M`` (one-hot rows for the nearest modes, two interpolation weights
per row for the linear modes, four for bicubic, the adaptive averaging matrix for area; :func:`jaxcnn.ops.windows.interpolation_matrix` built from the
forward's own source coordinates), so its backward applies ``M^T`` along each axis.
``max_unpool`` writes input ``i`` to flat position ``indices[i]``; its backward reads
``dy`` back at those positions (a gather).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..ops.checks import check_rank
from ..ops.layout import channels_last
from ..ops.windows import RESIZE_MODES, interpolation_matrix, resize_geometry, resize_kind, spatial_rank


def _to_flat(a, layout):
    """(N, *spatial, C) or (N, C, *spatial) -> (N, C, prod(spatial))."""
    if channels_last(layout):
        a = jnp.moveaxis(a, -1, 1)
    return a.reshape(a.shape[0], a.shape[1], -1)


def _from_flat(a, shape, layout):
    """Inverse of :func:`_to_flat` for a batched array of ``shape``."""
    if channels_last(layout):
        a = a.reshape((shape[0], shape[-1]) + tuple(shape[1:-1]))
        return jnp.moveaxis(a, 1, -1)
    return a.reshape(shape)


def scatter_add_flat(values, indices, shape, layout):
    """Zeros of the batched ``shape`` with ``values[n, .., c]`` added at flat spatial
    position ``indices[n, .., c]`` of plane (n, c) (``values``/``indices`` share a shape)."""
    v, i = _to_flat(values, layout), _to_flat(indices, layout)
    n, c = v.shape[:2]
    total = int(np.prod(shape)) // (n * c)
    out = jnp.zeros((n, c, total), v.dtype)
    out = out.at[jnp.arange(n)[:, None, None], jnp.arange(c)[None, :, None], i].add(v, mode="drop")
    return _from_flat(out, shape, layout)


def gather_flat(source, indices, layout):
    """``source``'s value at flat spatial position ``indices[n, .., c]`` of plane (n, c);
    0 for an index outside the plane."""
    s, i = _to_flat(source, layout), _to_flat(indices, layout)
    got = jnp.take_along_axis(s, i, axis=-1, mode="fill", fill_value=0)
    return _from_flat(got, indices.shape, layout)


def upsample_backward(x, dy, size=None, scale_factor=None, mode: str = "nearest", align_corners=None, *,
                      antialias: bool = False, layout: str = "NHWC"):
    """dL/dx of ``upsample``: ``M^T`` along each spatial axis (``M`` the axis's
    interpolation matrix), i.e. each output's ``dy`` split over the inputs it was
    interpolated from with the same weights (all of it to the source for the nearest
    modes, ``1/len`` of it to each input of an "area" window). ``antialias`` is the
    forward's argument (which refuses True)."""
    x = jnp.asarray(x)
    g = jnp.asarray(dy).astype(x.dtype)
    if antialias:
        raise ValueError(f"upsample_backward: antialias=True is not supported (got antialias={antialias!r})")
    kind = resize_kind(mode) if mode in RESIZE_MODES else mode
    for a, n, _, src in resize_geometry(x, size, scale_factor, mode, align_corners, layout, "upsample_backward"):
        m = interpolation_matrix(src, n, kind)
        g = jnp.moveaxis(jnp.tensordot(jnp.asarray(m.T, g.dtype), g, axes=[[1], [a]]), 0, a)
    return g


def max_unpool_backward(x, indices, dy, kernel_size, stride=None, padding=0, output_size=None, *,
                        layout: str = "NHWC"):
    """dL/dx of ``max_unpool``: ``dy`` read back at each input's flat index (torch's rule;
    an out-of-range index, dropped by the forward, gets 0). With repeated indices every
    input that wrote to a position receives its gradient, as in torch."""
    x = jnp.asarray(x)
    rank = spatial_rank(x, kernel_size, "max_unpool_backward")
    xb, unbatched = check_rank(x, rank, layout, "max_unpool_backward")
    ib = jnp.asarray(indices)
    g = jnp.asarray(dy).astype(xb.dtype)
    if unbatched:
        ib, g = ib[None], g[None]
    gx = gather_flat(g, ib, layout)
    return gx[0] if unbatched else gx
