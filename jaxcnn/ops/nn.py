"""Dense, flatten, batch norm, dropout, upsampling, channel shuffle and losses."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import random
from .checks import as_float_array
from .layout import channel_axis, channels_last
from .shapes import describe
from .windows import (RESIZE_MODES, broadcast_to_axis, interpolation_matrix, linear_taps, resize_geometry,
                      resize_kind)


def dense(x, w, b=None):
    """``x @ w + b`` with ``w`` of shape ``(in_features, out_features)`` (flax's convention)."""
    x = as_float_array(x, "dense")
    if w.ndim != 2:
        raise ValueError(f"dense: weight must be 2-D (in_features, out_features), got shape {describe(w.shape)}")
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"dense: expected {w.shape[0]} input features on the last axis, got {x.shape[-1]} "
                         f"(input shape {describe(x.shape)}, weight {describe(w.shape)})")
    y = x @ w
    return y if b is None else y + b


def flatten(x, start_dim: int = 1, end_dim: int = -1):
    """torch.flatten: merge axes ``start_dim..end_dim`` into one. A 0-d input becomes
    shape ``(1,)`` (torch's rule; ``start_dim``/``end_dim`` must then be 0 or -1)."""
    if x.ndim == 0:
        if start_dim not in (0, -1) or end_dim not in (0, -1):
            raise ValueError(f"flatten: start_dim and end_dim must be 0 or -1 for a 0-d input, "
                             f"got {start_dim} and {end_dim}")
        return jnp.reshape(x, (1,))
    start = start_dim % x.ndim
    end = end_dim % x.ndim
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} is after end_dim {end_dim} for rank {x.ndim}")
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:]) if x.size else \
        x.reshape(x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:])


def batch_norm(x, running_mean, running_var, weight=None, bias=None, *, train: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, axis_name=None, layout: str = "NHWC"):
    """Batch normalisation, pure: returns ``(y, new_running_mean, new_running_var)``.

    torch semantics: in training the batch mean and biased variance normalise, and the
    running statistics move by ``momentum`` towards the batch mean and the UNBIASED
    variance; in evaluation the running statistics normalise and are returned unchanged.
    ``axis_name`` averages the batch statistics over that mapped axis (pmap/shard_map),
    giving the statistics of the global batch. An empty input (a batch of 0) is returned
    as it is, with the running statistics unchanged (torch's no-op).
    """
    op = "batch_norm"
    x = as_float_array(x, op)
    if x.ndim < 2:
        raise ValueError(f"{op}: expected an input of rank >= 2 (N, ..., C), got shape {describe(x.shape)}")
    ch = channel_axis(x.ndim, layout, op)
    c = x.shape[ch]
    for name, arr in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                      ("bias", bias)):
        if arr is not None and tuple(arr.shape) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},) for {c} channels on axis {ch}, "
                             f"got {describe(arr.shape)} (input shape {describe(x.shape)}, layout={layout!r})")
    if x.size == 0:
        return x, running_mean, running_var
    reduce_axes = tuple(a for a in range(x.ndim) if a != ch)
    bshape = [1] * x.ndim
    bshape[ch] = c
    if train:
        # Two passes (mean, then mean squared deviation): E[x^2] - E[x]^2 cancels
        # catastrophically in float32 when |mean| >> std.
        mean = jnp.mean(x, axis=reduce_axes)
        count = np.prod([x.shape[a] for a in reduce_axes])
        if axis_name is not None:
            mean = lax.pmean(mean, axis_name)
            count = count * lax.psum(1, axis_name)
        var = jnp.mean(jnp.square(x - mean.reshape(bshape)), axis=reduce_axes)
        if axis_name is not None:
            var = lax.pmean(var, axis_name)
        if count <= 1 if isinstance(count, (int, np.integer)) else False:
            raise ValueError(f"{op}: training needs more than one value per channel, got input shape "
                             f"{describe(x.shape)}")
        if running_mean is not None:
            unbiased = var * count / (count - 1)
            new_mean = (1 - momentum) * running_mean + momentum * lax.stop_gradient(mean)
            new_var = (1 - momentum) * running_var + momentum * lax.stop_gradient(unbiased)
        else:
            new_mean, new_var = running_mean, running_var
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: evaluation mode needs running_mean and running_var")
        mean, var = running_mean, running_var
        new_mean, new_var = running_mean, running_var
    y = (x - mean.reshape(bshape)) * lax.rsqrt(var.reshape(bshape) + eps)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    return y, new_mean, new_var


def _check_rate(rate, op):
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{op}: rate must be in [0, 1], got {rate}")


KEEP_BITS = 16


def keep_mask(key, keep_prob: float, shape) -> jax.Array:
    """Boolean dropout mask, True with probability ``keep_prob`` rounded to a multiple of
    ``2**-16``.

    Each 32-bit threefry draw gives two 16-bit uniforms: on XLA:CPU the draws are the
    cost of dropout (threefry is ~6 ns per 32-bit value here), and a 2**-16 grid is far
    finer than any dropout rate needs. Measured: fmnist_cnn's train step (3 dropout
    layers, batch 128) spent 23 ms of 243 in dropout with one draw per element.
    """
    threshold = round(keep_prob * (1 << KEEP_BITS))
    if threshold >= 1 << KEEP_BITS:   # keep everything (not representable in 16 bits)
        return jnp.ones(shape, bool)
    size = int(np.prod(shape, dtype=np.int64))
    words = random.bits(key, ((size + 1) // 2,))   # jax.random.bits' words, one fused pass
    # each word's low half, then its high half (a bitcast: the bytes' order on every
    # little-endian backend; the same mask as stacking `w & 0xFFFF, w >> 16`). With the
    # stack, XLA:CPU fused it, the straight-line hash and the select into one slow loop
    # (7.5 ms for a (128, 14, 14, 32) dropout); as a bitcast 0.8 ms (2.98 ms with
    # jax.random.bits and the stack, before both)
    halves = lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:size].reshape(shape)
    return halves < jnp.uint16(threshold)


def dropout(key, x, rate: float, *, train: bool):
    """Inverted dropout: zero each element with probability ``rate`` and scale the rest by
    ``1/(1-rate)`` when ``train``; identity otherwise. ``key`` is required when training.
    ``rate=1`` zeros everything in training (gradient 0), as torch does."""
    _check_rate(rate, "dropout")
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError("dropout: train=True needs a PRNG key (pass key=...)")
    if rate == 1.0:
        return jnp.zeros_like(x)
    keep = keep_mask(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def spatial_dropout(key, x, rate: float, *, train: bool, layout: str = "NHWC"):
    """Channel dropout (torch's Dropout2d): zero whole feature maps per example
    (``rate=1`` zeros everything in training)."""
    _check_rate(rate, "spatial_dropout")
    if not train or rate == 0.0:
        return x
    if key is None:
        raise ValueError("spatial_dropout: train=True needs a PRNG key (pass key=...)")
    if rate == 1.0:
        return jnp.zeros_like(x)
    shape = [1] * x.ndim
    shape[0] = x.shape[0]
    shape[channel_axis(x.ndim, layout, "spatial_dropout")] = x.shape[channel_axis(x.ndim, layout)]
    keep = keep_mask(key, 1.0 - rate, tuple(shape))
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def upsample(x, size=None, scale_factor=None, mode: str = "nearest", align_corners=None, *,
             antialias: bool = False, layout: str = "NHWC"):
    """Resize spatial axes like ``torch.nn.functional.interpolate``.

    ``mode``: "nearest" (torch's legacy ``floor(dst * scale)`` rule), "nearest-exact"
    (``floor((dst + 0.5) * scale)``), "linear"/"bilinear"/"trilinear" (separable linear
    interpolation), "bicubic" (separable cubic convolution, ``A = -0.75``, border taps
    clamped; any spatial rank, torch's only for 2-D) or "area" (adaptive average pooling
    to the output size); exactly one of ``size`` and ``scale_factor`` (the output size is
    ``floor(in * scale_factor)``, and the coordinates use ``1 / scale_factor``, torch's
    ``recompute_scale_factor=False``). ``align_corners`` applies to the linear and bicubic
    modes. ``antialias=True`` is refused (ValueError). The source coordinates are
    :func:`jaxcnn.ops.windows.resize_geometry`'s (shared with the explicit backward).
    """
    op = "upsample"
    x = as_float_array(x, op)
    if antialias:
        raise ValueError(f"{op}: antialias=True is not supported (got antialias={antialias!r}); "
                         f"resize without it or low-pass filter first")
    y = x
    kind = resize_kind(mode) if mode in RESIZE_MODES else mode
    for a, n, o, src in resize_geometry(x, size, scale_factor, mode, align_corners, layout, op):
        if kind in ("nearest", "nearest-exact"):
            y = jnp.take(y, jnp.asarray(src), axis=a)
        elif kind == "linear":
            lo, hi, frac = linear_taps(src, n)
            frac = broadcast_to_axis(frac, y.ndim, a, y.dtype)
            y = jnp.take(y, jnp.asarray(lo), axis=a) * (1 - frac) + jnp.take(y, jnp.asarray(hi), axis=a) * frac
        else:   # cubic, area: the axis's (out x in) matrix
            m = jnp.asarray(interpolation_matrix(src, n, kind), y.dtype)
            y = jnp.moveaxis(jnp.tensordot(m, y, axes=[[1], [a]]), 0, a)
    return y


def channel_shuffle(x, groups: int, *, layout: str = "NHWC"):
    """ShuffleNet's channel shuffle: view channels as (groups, C/groups), transpose, flatten."""
    ch = channel_axis(x.ndim, layout, "channel_shuffle")
    c = x.shape[ch]
    if groups < 1 or c % groups:
        raise ValueError(f"channel_shuffle: groups={groups} must divide the channel count {c}")
    shape = x.shape[:ch] + (groups, c // groups) + x.shape[ch + 1:]
    y = jnp.swapaxes(x.reshape(shape), ch, ch + 1)
    return y.reshape(x.shape)


def _check_labels(logits, labels, op, ignore_index=None):
    labels = jnp.asarray(labels) if not isinstance(labels, jax.core.Tracer) else labels
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{op}: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"{op}: labels shape {describe(labels.shape)} must match logits shape "
                         f"{describe(logits.shape)} without its class axis")
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        valid = np.asarray(labels) if ignore_index is None else np.asarray(labels)[np.asarray(labels) != ignore_index]
        if valid.size:
            lo, hi = int(valid.min()), int(valid.max())
            if lo < 0 or hi >= logits.shape[-1]:
                bad = lo if lo < 0 else hi
                raise ValueError(f"{op}: label {bad} is out of range for {logits.shape[-1]} classes "
                                 f"(expected 0..{logits.shape[-1] - 1})")
    return labels


def class_axis(ndim: int, layout: str, op: str = "cross_entropy") -> int:
    """Axis of the classes in ``cross_entropy``'s logits: the last (channels-last) or,
    channels-first, axis 1 -- axis 0 for a 1-D (unbatched) input, as in torch."""
    return ndim - 1 if channels_last(layout, op) or ndim == 1 else 1


def cross_entropy(logits, labels, *, weight=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", layout: str = "NHWC"):
    """Softmax cross-entropy, ``torch.nn.functional.cross_entropy``'s semantics.

    ``logits``: classes on the last axis (``layout="NHWC"``, default) or on axis 1
    (``layout="NCHW"``: torch's ``(N, C, d1, ...)``, a 1-D input being one unbatched row).
    ``labels``: integer class indices shaped like ``logits`` without the class axis, or
    class probabilities (floating, the shape of ``logits``; differentiable).

    Index targets: ``loss_i = (1-e) w[y_i] (-log p_i[y_i]) + (e/C) sum_c w_c (-log p_i[c])``,
    0 where ``y_i == ignore_index``; "mean" divides the sum by ``sum_i w[y_i]`` over the
    rows not ignored (the row count without ``weight``; NaN with a zero gradient when
    that is 0, as torch). Probability targets:
    ``loss_i = -sum_c w_c t'_ic log p_ic`` with ``t' = (1-e) t + e/C``; "mean" divides by
    the row count. ``weight``: per-class weights ``(C,)`` (not differentiated), ``e`` the
    ``label_smoothing``; ``reduction``: "mean", "sum" or "none".
    """
    op = "cross_entropy"
    logits = as_float_array(logits, op, "logits")
    if logits.ndim < 1:
        raise ValueError(f"{op}: logits must have a class axis, got a 0-d array")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    ca = class_axis(logits.ndim, layout, op)
    z = jnp.moveaxis(logits, ca, -1)
    c = z.shape[-1]
    if weight is not None:
        weight = jnp.asarray(weight)
        if weight.shape != (c,):
            raise ValueError(f"{op}: weight must have shape ({c},) for {c} classes, got {describe(weight.shape)}")
        weight = weight.astype(z.dtype)
    labels_arr = labels if isinstance(labels, jax.core.Tracer) else jnp.asarray(labels)
    logp = jax.nn.log_softmax(z, axis=-1)
    if jnp.issubdtype(labels_arr.dtype, jnp.floating):
        if labels_arr.shape != logits.shape:
            raise TypeError(f"{op}: labels must be integer class indices, got dtype {labels_arr.dtype} "
                            f"(floating labels are class probabilities and need the logits' shape "
                            f"{describe(logits.shape)}, got {describe(labels_arr.shape)})")
        t = jnp.moveaxis(labels_arr, ca, -1).astype(z.dtype)
        if label_smoothing:
            t = (1.0 - label_smoothing) * t + label_smoothing / c
        wt = t if weight is None else t * weight
        loss = -jnp.sum(logp * wt, axis=-1)
        if reduction == "mean":
            return jnp.sum(loss) / (logits.size // c if c else 0)
        return jnp.sum(loss) if reduction == "sum" else loss
    labels = _check_labels(z, labels_arr, op, ignore_index)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    w_row = jnp.ones(nll.shape, z.dtype) if weight is None else weight[safe]
    w_row = jnp.where(valid, w_row, 0.0)
    loss = w_row * nll
    if label_smoothing:
        smooth = -jnp.sum(logp if weight is None else logp * weight, axis=-1)
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / c) * jnp.where(valid, smooth, 0.0)
    if reduction == "mean":
        # every row ignored (or zero weight): NaN, as torch, but a zero gradient (torch's)
        total = jnp.sum(w_row)
        return jnp.sum(loss) / jnp.where(total == 0, 1.0, total) + jnp.where(total == 0, jnp.nan, 0.0)
    return jnp.sum(loss) if reduction == "sum" else loss


def accuracy(logits, labels):
    """Fraction of rows whose arg-max equals the label."""
    labels = _check_labels(as_float_array(logits, "accuracy", "logits"), labels, "accuracy")
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def mse_loss(y, target, *, reduction: str = "mean"):
    """Squared error; ``reduction="sum"`` gives the seeds' summed squared error."""
    err = jnp.square(jnp.asarray(y) - jnp.asarray(target))
    if reduction == "mean":
        return jnp.mean(err)
    if reduction == "sum":
        return jnp.sum(err)
    if reduction == "none":
        return err
    raise ValueError(f"mse_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
