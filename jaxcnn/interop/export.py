"""A trained model as a serialized ``jax.export`` artifact that plain jax can serve.

:func:`export_inference` traces ``images -> logits`` (eval mode, the run's per-channel
normalisation folded in, parameters embedded as constants) and lowers it for the
platforms asked for. The bytes of ``exported.serialize()`` (:func:`write_artifact`)
are loaded and run without jaxcnn::

    import jax, numpy as np
    exported = jax.export.deserialize(open("model.jaxexport", "rb").read())
    logits = exported.call(np.asarray(images, np.float32))   # images: (B, H, W, C) in [0, 1]

The model is always traced under ``backprop_mode("autodiff")``: ``"auto"``'s oneDNN
convolutions are CPU-only XLA custom calls without jax's compatibility guarantee, which
``serialize`` refuses and no other platform could run; the portable formulation gives
the same logits.
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import config

# jax.export's platform names (lowering needs no device of that kind)
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
PRECISIONS = ("fp32", "bf16")


def _check_platforms(platforms) -> tuple[str, ...]:
    if isinstance(platforms, str):
        platforms = (platforms,)
    platforms = tuple(platforms)
    if not platforms:
        raise ValueError(f"export_inference: platforms must name at least one of {PLATFORMS}, got ()")
    for p in platforms:
        if p not in PLATFORMS:
            raise ValueError(f"export_inference: platforms must be among {PLATFORMS}, got {p!r}")
    if len(set(platforms)) != len(platforms):
        raise ValueError(f"export_inference: platforms must not repeat, got {platforms}")
    return platforms


def _check_image_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
        raise ValueError(f"export_inference: image_shape must be (H, W, C) of positive ints, got {image_shape!r}")
    return tuple(int(d) for d in shape)


def _check_normalization(normalization, channels: int):
    if normalization is None:
        return None
    try:
        mean, std = normalization
    except (TypeError, ValueError):
        raise ValueError(f"export_inference: normalization must be a (mean, std) pair, got {normalization!r}") \
            from None
    mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
    for name, v in (("mean", mean), ("std", std)):
        if v.shape not in ((1,), (channels,)):
            raise ValueError(f"export_inference: normalization {name} must have 1 or {channels} (the image's "
                             f"channels) values, got shape {v.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(std > 0) and np.all(np.isfinite(std))):
        raise ValueError(f"export_inference: normalization needs finite mean and std > 0, got mean={mean.tolist()} "
                         f"std={std.tolist()}")
    return mean, std


def inference_function(model, params, state, *, normalization=None, precision: str = "fp32"):
    """``images -> logits``: ``(images - mean) / std`` (when ``normalization`` is a
    ``(mean, std)`` pair of per-channel values, as a run's config holds them), then
    ``model.apply(params, state, x, train=False)`` computed in ``precision`` ("fp32" or
    "bf16": parameters and input cast, logits returned as float32), the computation
    ``jaxcnn eval`` runs. ``params``/``state`` are closed over (constants once traced)."""
    from ..models.base import as_model
    from ..train.step import compute_dtype
    if precision not in PRECISIONS:
        raise ValueError(f"export_inference: precision must be one of {PRECISIONS}, got {precision!r}")
    dtype = compute_dtype(precision)
    model = as_model(model)
    if normalization is not None:
        mean, std = (jnp.asarray(v) for v in normalization)

    def cast(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    def infer(images):
        x = images.astype(jnp.float32)
        if normalization is not None:
            x = (x - mean) / std
        p, s = (params, state) if dtype == jnp.float32 else (cast(params), cast(state))
        logits, _ = model.apply(p, s, x.astype(dtype), train=False)
        return logits.astype(jnp.float32)

    return infer


def export_inference(model, params, state, *, image_shape: Sequence[int], normalization=None,
                     platforms: Sequence[str] | str = ("cpu",), batch_size: int | None = None,
                     precision: str = "fp32") -> jax.export.Exported:
    """Export ``model``'s inference function for serving.

    Returns a ``jax.export.Exported`` whose one argument is ``images``, float32
    ``(B, H, W, C)`` with ``image_shape == (H, W, C)`` and pixels scaled to [0, 1] (the
    scale ``jaxcnn.data`` brings every dataset to before normalising), and whose result
    is the float32 logits (``(B, num_classes)``; a dense-prediction model's
    ``(B, H', W', num_classes)``), equal to :func:`inference_function`'s. ``B`` is
    symbolic (any batch size) unless ``batch_size`` fixes it.

    ``normalization``: ``(mean, std)`` per channel (1 or C values each), applied inside
    the artifact, or None for inputs already normalised. ``platforms``: one or more of
    :data:`PLATFORMS`; a multi-platform artifact runs on any of them (lowering needs no
    such device here). ``precision``: "fp32" or "bf16" (the run's ``--precision``).

    The parameters are embedded, so ``exported.serialize()`` is self-contained and
    ``jax.export.deserialize(...).call(images)`` needs only jax and numpy. The model is
    traced under ``backprop_mode("autodiff")`` (portable ops only) whatever mode the
    caller is in. Bad arguments raise ``ValueError`` naming the argument, the expected
    and the given value.
    """
    from ..dispatch import backprop_mode
    platforms = _check_platforms(platforms)
    shape = _check_image_shape(image_shape)
    normalization = _check_normalization(normalization, shape[-1])
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"export_inference: batch_size must be None (any) or an int >= 1, got {batch_size!r}")
    batch = jax.export.symbolic_shape("batch")[0] if batch_size is None else int(batch_size)
    spec = jax.ShapeDtypeStruct((batch,) + shape, jnp.float32)
    # a fresh function each call: jax.jit caches traces per function, and a trace cached
    # under another backprop mode must not be reused
    fn = jax.jit(inference_function(model, params, state, normalization=normalization, precision=precision))
    with backprop_mode("autodiff"):
        return jax.export.export(fn, platforms=platforms)(spec)


def write_artifact(exported: jax.export.Exported, path: str | os.PathLike, *, overwrite: bool = False) -> int:
    """Write ``exported.serialize()`` to ``path`` (atomically: a temporary file renamed
    into place) and return the number of bytes. An existing ``path`` is refused with
    ``FileExistsError`` unless ``overwrite``; a missing parent directory with
    ``FileNotFoundError``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"write_artifact: path {path} is a directory; expected a file name")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"write_artifact: path {path} already exists; pass overwrite=True to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"write_artifact: path {path}: its directory {parent} does not exist")
    data = exported.serialize()
    config.write_atomic(path, data)
    return len(data)
