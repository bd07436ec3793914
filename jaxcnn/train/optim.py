"""Optimisers and learning-rate schedules, all optax.

``make_optimizer`` chains (in this order) global-norm gradient clipping, weight decay
and the optimiser; ``make_schedule`` turns a peak learning rate and a step count into
an optax schedule.
"""
from __future__ import annotations

import math

import jax
import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "step")
_ALIASES = {"one-cycle": "onecycle", "one_cycle": "onecycle"}


def check_learning_rate(learning_rate, name: str = "learning_rate") -> float:
    """``learning_rate`` as a float if it is a finite number > 0, else a one-line
    ValueError naming ``name``, what is expected and the value (a NaN rate trained to a
    NaN loss and stopped with a NonFiniteLossError; 0 or a negative one learns nothing
    or ascends)."""
    try:
        lr = float(learning_rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {learning_rate!r}") from None
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {learning_rate!r}")
    return lr


def check_weight_decay(weight_decay, name: str = "weight_decay") -> float:
    """``weight_decay`` as a float if it is a finite number >= 0, else a one-line
    ValueError naming ``name``, what is expected and the value."""
    try:
        decay = float(weight_decay)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0, got {weight_decay!r}") from None
    if not math.isfinite(decay) or decay < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {weight_decay!r}")
    return decay


def make_schedule(name: str, learning_rate: float, total_steps: int, *, warmup_steps: int = 0,
                  step_boundaries: tuple[float, ...] = (0.5, 0.75), step_factor: float = 0.1) -> optax.Schedule:
    """A schedule peaking at ``learning_rate`` over ``total_steps`` updates.

    ``constant``; ``cosine`` (optional linear warmup, decays to 0 at ``total_steps``);
    ``onecycle`` (optax's cosine one-cycle, 30% warmup); ``step`` (multiply by
    ``step_factor`` at each fraction of ``total_steps`` in ``step_boundaries``).
    ``learning_rate`` must be finite and > 0 (:func:`check_learning_rate`).
    """
    name = _ALIASES.get(name, name)
    check_learning_rate(learning_rate)
    if total_steps < 1:
        raise ValueError(f"schedule: total_steps must be >= 1, got {total_steps}")
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        if warmup_steps:
            return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, total_steps)
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, learning_rate)
    if name == "step":
        bounds = {max(1, int(round(f * total_steps))): step_factor for f in step_boundaries}
        return optax.piecewise_constant_schedule(learning_rate, bounds)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def decay_mask(params):
    """Weight decay applies to arrays of rank >= 2 (kernels), not to biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(name: str, learning_rate, *, weight_decay: float = 0.0, clip_norm: float | None = None,
                   momentum: float = 0.9, nesterov: bool = False) -> optax.GradientTransformation:
    """``sgd``, ``momentum``, ``adam`` or ``adamw`` with ``learning_rate`` (a float or an optax schedule).

    ``weight_decay`` is decoupled for ``adamw`` (optax's AdamW) and added to the gradient
    (L2) for the others; it is masked to kernels (see :func:`decay_mask`).
    ``clip_norm`` clips the global gradient norm first. A number ``learning_rate`` must be
    finite and > 0 (:func:`check_learning_rate`), ``weight_decay`` finite and >= 0.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not callable(learning_rate):
        check_learning_rate(learning_rate)
    check_weight_decay(weight_decay)
    parts = []
    if clip_norm is not None and clip_norm > 0:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if name == "adamw":
        parts.append(optax.adamw(learning_rate, weight_decay=weight_decay, mask=decay_mask))
    else:
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
        if name == "sgd":
            parts.append(optax.sgd(learning_rate))
        elif name == "momentum":
            parts.append(optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))
        else:
            parts.append(optax.adam(learning_rate))
    return optax.chain(*parts)
