"""Pure train and eval steps. No jit/pmap here: the loop (``parallel.py``) chooses.

``train_step(train_state, batch, key) -> (train_state, metrics)`` where ``batch`` is
``{"image": (B, H, W, C) float, "label": (B,) int}``. With ``axis_name`` (under
``jax.pmap``) the model is applied with ``axis_name`` (every BatchNorm averages its batch
statistics over the devices, torch's SyncBatchNorm) and gradients, metrics and running
statistics are ``lax.pmean``-ed over that axis, so every device holds the same train
state after every step and it equals the one-device step on the same global batch.
``model`` is anything :func:`jaxcnn.models.as_model` accepts (a Model or a Layer).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from .. import dispatch
from ..dispatch import DEFAULT_MODE, auto_choices, backprop_mode, check_mode
from ..models.base import as_model
from .grad_norm import global_norm
from .state import TrainState

PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def compute_dtype(precision: str):
    """The compute dtype for ``precision`` (a key of :data:`PRECISIONS`); ``ValueError``
    listing them otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _like(tree, reference):
    """Cast ``tree``'s leaves back to the dtypes of ``reference`` (e.g. bf16 statistics to f32)."""
    return jax.tree.map(lambda a, r: a.astype(r.dtype), tree, reference)


BATCH_KEYS = ("image", "label")


def check_batch(batch) -> None:
    """Raise a ``ValueError`` naming the missing keys unless ``batch`` is a mapping with
    ``"image"`` (B, H, W, C) and ``"label"`` (B,) (plus an optional ``"mask"`` in eval)."""
    if not hasattr(batch, "keys"):
        raise TypeError(f"train step: batch must be a dict with keys {BATCH_KEYS}, got {type(batch).__name__}")
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(f"train step: batch has no {', '.join(map(repr, missing))}; expected keys "
                         f"{BATCH_KEYS} (image (B, H, W, C) float, label (B,) int), got {sorted(batch)}")


def _forward(model, params, state, image, *, train, key, dtype, axis_name=None):
    """Run the model in ``dtype`` (parameters stay float32; only the computation is cast)."""
    if dtype != jnp.float32:
        params, state, image = _cast_floats(params, dtype), _cast_floats(state, dtype), image.astype(dtype)
    logits, new_state = model.apply(params, state, image, train=train, key=key, axis_name=axis_name)
    return logits.astype(jnp.float32), new_state


def _check_inputs_host(labels, finite, num_classes):
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"train step: label {int(labels[i])} at batch index {i} is outside [0, {num_classes}) "
                         f"(the model has {num_classes} classes)")
    if not bool(finite):
        raise ValueError("train step: the batch's images contain NaN or infinite values")
    return np.zeros((), np.bool_)


def _check_inputs(batch, num_classes: int) -> None:
    """Host-side label range / finite-image check of one batch (``check_inputs=True``)."""
    from jax.experimental import io_callback
    finite = jnp.all(jnp.isfinite(batch["image"]))
    io_callback(functools.partial(_check_inputs_host, num_classes=num_classes),
                jax.ShapeDtypeStruct((), jnp.bool_), batch["label"], finite)


def make_train_step(model, loss: Callable, tx: optax.GradientTransformation, *, backprop: str = DEFAULT_MODE,
                    axis_name: str | None = None, precision: str = "fp32", augment: Callable | None = None,
                    check_inputs: bool = False, auto_table: dict[str, str] | None = None):
    """Return the pure ``train_step(train_state, batch, key) -> (train_state, metrics)``.

    ``check_inputs=True`` checks every batch's labels (``0 <= label < num_classes``) and
    image finiteness on the host through an ``io_callback`` (a bad batch raises a
    ``JaxRuntimeError`` carrying the ValueError's message); off by default, as it
    synchronises with the host every step.

    ``loss(logits, labels) -> scalar`` (mean over the batch). ``backprop`` selects the
    backward pass the model is traced with ("auto": per op the formulation measured
    fastest on CPU, the same gradients; "autodiff"; "explicit"; see :mod:`jaxcnn.dispatch`).
    ``auto_table`` (``{op: formulation}``, e.g. :func:`jaxcnn.train.autotune.load`'s)
    overrides "auto"'s choices for this step only; None: the table in effect when the
    step is traced.
    ``precision="bf16"`` computes the forward and backward in
    bfloat16 while parameters, optimizer state and the loss stay float32. The dropout
    key is ``fold_in(key, step)`` (and the device index under ``axis_name``).
    ``augment(key, images) -> images`` (optional) runs on device inside the step with
    its own key derived from the step key.
    Metrics (scalars, averaged over the batch): ``loss``, ``accuracy``, ``grad_norm``.
    """
    check_mode(backprop)
    if auto_table is not None:
        auto_table = dispatch.check_table(auto_table, "make_train_step: auto_table")
    dtype = compute_dtype(precision)
    model = as_model(model)

    def loss_fn(params, state, batch, key):
        logits, new_state = _forward(model, params, state, batch["image"], train=True, key=key, dtype=dtype,
                                     axis_name=axis_name)
        return loss(logits, batch["label"]), (logits, new_state)

    def train_step(train_state: TrainState, batch, key):
        check_batch(batch)
        key = jax.random.fold_in(key, train_state.step)
        if axis_name is not None:
            key = jax.random.fold_in(key, lax.axis_index(axis_name))
        if augment is not None:
            key, augment_key = jax.random.split(key)
            batch = {**batch, "image": augment(augment_key, batch["image"])}
        with backprop_mode(backprop), auto_choices(auto_table):  # read when the model is traced, i.e. here
            (loss_value, (logits, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                train_state.params, train_state.state, batch, key)
        new_state = _like(new_state, train_state.state)
        if check_inputs:
            _check_inputs(batch, logits.shape[-1])
        metrics = {"loss": loss_value,
                   "accuracy": jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))}
        if axis_name is not None:
            grads = lax.pmean(grads, axis_name)
            new_state = lax.pmean(new_state, axis_name)
            metrics = lax.pmean(metrics, axis_name)
        metrics["grad_norm"] = global_norm(grads)
        updates, opt_state = tx.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        return train_state.replace(params=params, state=new_state, opt_state=opt_state,
                                   step=train_state.step + 1), metrics

    return train_step


def make_eval_step(model, *, axis_name: str | None = None, precision: str = "fp32", forward=None,
                   backprop: str | None = None, auto_table: dict[str, str] | None = None):
    """Return ``eval_step(train_state, batch) -> sums`` with ``loss_sum`` (cross-entropy),
    ``correct`` and ``count``, summed over the batch (and over ``axis_name``).

    ``forward(params, state, images) -> logits`` replaces the model's eval-mode forward
    pass (e.g. :func:`jaxcnn.compress.int8_apply` with its quantisation parameters).

    ``backprop``: None (default) traces the model's plain ops, a portable program (it
    exports for any platform); a mode (e.g. ``"auto"``, as the train step and ``jaxcnn
    eval`` use) traces the forward under it, with ``auto_table`` as
    :func:`make_train_step`'s: on CPU "auto" runs oneDNN's convolutions, which evaluate
    mobilenet_v2 23x, lenet5 2x and cifar_resnet18 1.4x faster than XLA's, fmnist_cnn
    0.91x (docs/performance.md).

    An optional ``batch["mask"]`` (B,) excludes padding examples, so a test set whose
    size does not divide the batch or the device count is evaluated exactly.
    """
    dtype = compute_dtype(precision)
    model = as_model(model)
    if backprop is not None:
        check_mode(backprop)
    if auto_table is not None:
        auto_table = dispatch.check_table(auto_table, "make_eval_step: auto_table")

    def eval_step(train_state: TrainState, batch):
        check_batch(batch)
        if forward is not None:
            logits = forward(train_state.params, train_state.state, batch["image"])
        else:
            mode = contextlib.nullcontext() if backprop is None else backprop_mode(backprop)
            with mode, auto_choices(auto_table):   # read when the model is traced, i.e. here
                logits, _ = _forward(model, train_state.params, train_state.state, batch["image"], train=False,
                                     key=None, dtype=dtype)
        labels = batch["label"]
        mask = batch.get("mask")
        mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
        # the library's own loss (the one the train CLI minimises), not optax's re-implementation
        per_example = dispatch.cross_entropy(logits, labels, reduction="none")
        sums = {"loss_sum": jnp.sum(per_example * mask),
                "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
                "count": jnp.sum(mask)}
        if axis_name is not None:
            sums = lax.psum(sums, axis_name)
        return sums

    return eval_step


def make_multi_step(train_step: Callable) -> Callable:
    """Return ``multi_step(train_state, batches, count, key) -> (train_state, metrics)``:
    ``train_step`` applied in order to the first ``count`` of the ``K`` batches stacked
    along a leading axis of ``batches`` (``{"image": (K, B, ...), "label": (K, B)}``), as
    one program (``lax.scan``), so a loop dispatches once per ``K`` steps instead of once
    per step. ``metrics`` are ``train_step``'s, stacked ``(K,)``; the entries past
    ``count`` are zeros (those slots ran nothing: a ``lax.cond`` skips them, and their
    batches, e.g. copies of the last real one, are never read).

    Why a ``count`` and not a shorter stack: one compiled program serves every chunk
    (an epoch's last, one cut short by an evaluation), and the steps a run takes do not
    depend on how they were grouped -- the same ``train_step`` program runs each of them.
    """
    # jitted so that the step is traced once: the skipping branch's eval_shape and the
    # running branch's call share jit's trace cache (inlined into the one program)
    step = jax.jit(train_step)

    def multi_step(train_state, batches, count, key):
        num = jax.tree.leaves(batches)[0].shape[0]

        def skip(ts, batch):   # a slot past ``count``: state unchanged, metrics zero
            shapes = jax.eval_shape(step, ts, batch, key)[1]
            return ts, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(ts, slot):
            i, batch = slot
            return lax.cond(i < count, lambda t: step(t, batch, key), lambda t: skip(t, batch), ts)

        return lax.scan(body, train_state, (jnp.arange(num), batches))

    return multi_step
