"""Sparsity schedules for gradual pruning: ``schedule(step) -> sparsity`` in [0, 1).

Pure functions of the (possibly traced) optimiser step count, used by
:func:`jaxcnn.compress.masked` to recompute the magnitude masks during fine-tuning.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from .masks import check_amount

Schedule = Callable[[object], object]
SCHEDULES = ("oneshot", "iterative", "gradual")


def one_shot(target: float, at_step: int = 0) -> Schedule:
    """Sparsity 0 before ``at_step``, ``target`` from then on (prune once, then fine-tune)."""
    target = check_amount(target, "one_shot")

    def schedule(step):
        return jnp.where(step >= at_step, target, 0.0)
    return schedule


def iterative(target: float, rounds: int, every: int, begin_step: int = 0) -> Schedule:
    """Han et al.'s prune-retrain cycles: ``rounds`` prunings ``every`` steps apart from
    ``begin_step``, each removing the same fraction of what is left, so that round ``i``
    (1-based) reaches ``1 - (1 - target) ** (i / rounds)``."""
    target = check_amount(target, "iterative")
    if rounds < 1 or every < 1:
        raise ValueError(f"iterative: rounds and every must be >= 1, got rounds={rounds}, every={every}")

    def schedule(step):
        done = jnp.clip((step - begin_step) // every + 1, 0, rounds)
        return jnp.where(step >= begin_step, 1.0 - (1.0 - target) ** (done / rounds), 0.0)
    return schedule


def polynomial(target: float, begin_step: int, end_step: int, initial: float = 0.0, power: float = 3.0
               ) -> Schedule:
    """Zhu & Gupta (2017) gradual pruning: ``s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_end - t_0)) ** 3``
    between ``begin_step`` and ``end_step``, ``initial`` before, ``target`` after."""
    target, initial = check_amount(target, "polynomial"), check_amount(initial, "polynomial")
    if end_step <= begin_step:
        raise ValueError(f"polynomial: end_step must be > begin_step, got begin_step={begin_step}, "
                         f"end_step={end_step}")

    def schedule(step):
        frac = jnp.clip((step - begin_step) / (end_step - begin_step), 0.0, 1.0)
        value = target + (initial - target) * (1.0 - frac) ** power
        return jnp.where(step >= begin_step, value, 0.0)
    return schedule
