"""An optax wrapper that keeps pruned weights at exactly zero through (fine-)tuning.

``masked(inner, masks)`` masks the gradients before ``inner`` sees them, masks the
parameter-shaped parts of ``inner``'s state (momentum, Adam moments) so nothing
accumulated before a pruning can move a weight afterwards, and returns updates
``mask * u - (1 - mask) * params``: a kept weight moves by ``u``, a pruned one is set to
exactly 0 by the first update and stays there. With ``schedule`` the masks are recomputed
from the current weights every ``update_every`` steps (gradual magnitude pruning);
``masks`` given together with a schedule act as a predefined pattern that is always kept.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from .masks import apply_masks, prune_masks


class MaskedState(NamedTuple):
    count: jax.Array      # updates applied so far (the schedule's step)
    masks: Any            # the current masks (pytree like params)
    inner_state: Any


def masked(inner: optax.GradientTransformation, masks=None, *, schedule=None, scope: str = "layer",
           structure: str = "weight", norm=1, skip: Sequence[str] = (), update_every: int = 1
           ) -> optax.GradientTransformation:
    """Wrap ``inner`` so that weights where the mask is 0 are exactly 0 after every update.

    ``masks``: fixed masks (e.g. :func:`prune_masks` or :func:`random_masks`); ``schedule``:
    a function ``step -> sparsity`` (:mod:`.schedules`) for gradual pruning, with
    ``scope``/``structure``/``norm``/``skip`` passed to :func:`prune_masks`. At least one of
    the two is required. ``update(updates, state, params)`` needs ``params``.
    """
    if masks is None and schedule is None:
        raise ValueError("masked: give masks (fixed sparsity) or schedule (gradual pruning), got neither")
    if update_every < 1:
        raise ValueError(f"masked: update_every must be >= 1, got {update_every}")

    def init(params):
        base = masks if masks is not None else jax.tree.map(jnp.ones_like, params)
        return MaskedState(jnp.zeros((), jnp.int32), base, inner.init(params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("masked: update needs params (pruned weights are set to zero from them)")
        current = state.masks
        if schedule is not None:
            def recompute(m):
                fresh = prune_masks(apply_masks(params, m), schedule(state.count), scope=scope,
                                    structure=structure, norm=norm, skip=skip)
                # pruned stays pruned; a predefined pattern is always kept
                return jax.tree.map(lambda a, b: a * b, fresh, m)
            current = jax.lax.cond(state.count % update_every == 0, recompute, lambda m: m, current)
        grads = apply_masks(updates, current)
        inner_state = optax.tree_utils.tree_map_params(
            inner, lambda s, m: s * m.astype(s.dtype) if hasattr(s, "shape") and s.shape == m.shape else s,
            state.inner_state, current)
        new_updates, inner_state = inner.update(grads, inner_state, params)
        new_updates = jax.tree.map(lambda u, m, p: u * m - (1 - m) * p, new_updates, current, params)
        return new_updates, MaskedState(state.count + 1, current, inner_state)

    return optax.GradientTransformation(init, update)


def current_masks(opt_state):
    """The masks held by the (first) :func:`masked` state inside ``opt_state``."""
    for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, MaskedState)):
        if isinstance(leaf, MaskedState):
            return leaf.masks
    raise ValueError("current_masks: opt_state holds no masked(...) optimiser state")
