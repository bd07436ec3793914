"""Input validation shared by the ops: every failure names the op, what was expected
and what was given, instead of surfacing as an XLA trace or an empty/NaN result."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .layout import channels_last
from .shapes import describe


def as_float_array(x, op: str, name: str = "input"):
    """Return ``x`` as a JAX array of a floating dtype (integers and bools are promoted).

    Integer data is promoted to the default float dtype (float32, or float64 under
    ``jax_enable_x64``) so the seeds' integer examples can be written literally.
    """
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        x = np.asarray(x)
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
    dtype = jnp.dtype(x.dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{op}: {name} must be real-valued, got dtype {dtype}")
    if not jnp.issubdtype(dtype, jnp.floating):
        x = jnp.asarray(x, dtype=jax.dtypes.canonicalize_dtype(jnp.float64))
    return jnp.asarray(x)


def common_float(op: str, *arrays):
    """Cast arrays (None passes through) to one floating dtype, the promotion of all."""
    present = [a for a in arrays if a is not None]
    dtype = jnp.result_type(*present)
    return [None if a is None else a.astype(dtype) for a in arrays]


def check_rank(x, rank: int, layout: str, op: str, allow_unbatched: bool = True):
    """Return ``(x_batched, unbatched)``; raise if ``x`` is not (N,)+spatial+channel."""
    want = rank + 2
    if x.ndim == want:
        return x, False
    if allow_unbatched and x.ndim == want - 1:
        return x[None], True
    spatial = "DHW"[3 - rank:] if 1 <= rank <= 3 else "?" * rank
    form = f"(N, {', '.join(spatial)}, C)" if channels_last(layout, op) else f"(N, C, {', '.join(spatial)})"
    raise ValueError(f"{op}: expected a {rank}-D input of rank {want} {form} with layout={layout!r} "
                     f"(or rank {want - 1} without the batch axis), got shape {describe(x.shape)}")


def check_channels(x, expected: int, layout: str, op: str, what: str = "input channels"):
    """Check the channel axis holds ``expected`` channels; hint at a layout mix-up."""
    last = channels_last(layout, op)
    actual = x.shape[-1] if last else x.shape[1]
    if actual == expected:
        return
    hint = ""
    other = x.shape[1] if last else x.shape[-1]
    if other == expected:
        guess = "NCHW (channels-first)" if last else "NHWC (channels-last)"
        hint = (f"; the input looks like {guess} -- pass layout={'NCHW' if last else 'NHWC'!r}"
                f" or transpose it")
    axis = "last" if last else "1"
    raise ValueError(f"{op}: expected {expected} {what} on axis {axis} for layout={layout!r}, got {actual} "
                     f"(input shape {describe(x.shape)}){hint}")


def check_groups(c_in: int, c_out: int, groups: int, op: str):
    """Raise ``ValueError`` naming ``op`` unless ``groups`` is a positive int dividing both
    ``c_in`` and ``c_out``."""
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if c_in % groups or c_out % groups:
        raise ValueError(f"{op}: groups={groups} must divide both the input channels ({c_in}) and the "
                         f"output channels ({c_out})")


def check_window_fits(sizes, pads, eff_kernel, op: str, shape):
    """The (dilated) kernel must fit inside the padded input in every spatial dim."""
    for dim, (size, (lo, hi), e) in enumerate(zip(sizes, pads, eff_kernel)):
        if size + lo + hi < e:
            raise ValueError(f"{op}: kernel of effective size {e} in spatial dim {dim} is larger than the "
                             f"padded input size {size + lo + hi} (input {size} + padding {lo}+{hi}; "
                             f"input shape {describe(shape)})")


def check_output_positive(out_sizes, op: str, shape):
    """Raise ``ValueError`` naming ``op`` and the input ``shape`` when any output size is <= 0."""
    if any(o <= 0 for o in out_sizes):
        raise ValueError(f"{op}: the output would have zero size {describe(out_sizes)} for input shape "
                         f"{describe(shape)}; use a smaller kernel/stride or more padding")
