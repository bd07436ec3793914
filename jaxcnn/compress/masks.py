"""Pruning masks: magnitude pruning (torch.nn.utils.prune semantics) and predefined
random sparsity, as a pytree beside the params.

A mask has the structure of ``params``: 1.0 (keep) / 0.0 (pruned) for every conv and
dense kernel (see :mod:`._select`), all ones for every other leaf. The number pruned
follows ``torch.nn.utils.prune``: ``round(amount * n)`` weights (``structure="weight"``)
or output channels (``structure="filter"``), per layer (``scope="layer"``) or ranked
over all layers together (``scope="global"``). Pruned are the smallest scores: ``|w|``
for weights, the ``norm``-norm of each filter for filters.

Everything here is traceable: ``amount`` may be a traced scalar (the gradual schedules
of :mod:`.masked` call :func:`prune_masks` inside the train step).
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._select import FILTER_AXIS, map_weights, require_weights

SCOPES = ("layer", "global")
STRUCTURES = ("weight", "filter")


def check_amount(amount, fn_name: str = "prune_masks"):
    """Reject a concrete ``amount`` outside [0, 1); a traced one passes unchecked."""
    try:
        value = float(amount)
    except jax.errors.ConcretizationTypeError:
        return amount  # traced inside a step: checked where the schedule was built
    except (TypeError, ValueError):
        raise TypeError(f"{fn_name}: amount must be a number in [0, 1), got {amount!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{fn_name}: amount must be in [0, 1) (the fraction pruned), got {amount!r}")
    return value


def _check_choice(value, choices, what, fn_name):
    if value not in choices:
        raise ValueError(f"{fn_name}: {what} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _count_pruned(amount, n: int):
    # torch: round(amount * n) with Python's round (half to even), which jnp.round matches.
    if isinstance(amount, float):
        return round(amount * n)
    return jnp.round(amount * n).astype(jnp.int32)


def _keep_largest(scores, k):
    """1.0 for all but the ``k`` smallest entries of the 1-D ``scores`` (stable order for ties)."""
    rank = jnp.argsort(jnp.argsort(scores, stable=True), stable=True)
    return (rank >= k)


def _filter_norm(w, norm):
    flat = jnp.moveaxis(w, FILTER_AXIS, 0).reshape(w.shape[FILTER_AXIS], -1)
    return jnp.linalg.norm(flat.astype(jnp.float32), ord=norm, axis=1)


def _skipped(name: str, skip: Sequence[str]) -> bool:
    layer = name.rsplit("/", 1)[0]
    return any(name == s or layer == s or layer.startswith(s.rstrip("/") + "/") for s in skip)


def _masks_from_scores(params, scores: dict[str, Any], amount, scope, structure, skip):
    """Masks pruning the ``round(amount * n)`` smallest ``scores`` (per layer or pooled)."""
    names = [n for n in scores if not _skipped(n, skip)]
    keep: dict[str, Any] = {}
    if scope == "layer":
        for n in names:
            keep[n] = _keep_largest(scores[n], _count_pruned(amount, scores[n].size))
    elif names:
        pooled = jnp.concatenate([scores[n] for n in names])
        kept = _keep_largest(pooled, _count_pruned(amount, pooled.size))
        offsets = np.cumsum([0] + [scores[n].size for n in names])
        for n, a, b in zip(names, offsets[:-1], offsets[1:]):
            keep[n] = kept[a:b]

    def to_mask(name, w):
        if name not in keep:
            return jnp.ones_like(w)
        k = keep[name]
        if structure == "filter":
            return jnp.broadcast_to(k, w.shape).astype(w.dtype)
        return k.reshape(w.shape).astype(w.dtype)
    return map_weights(to_mask, params, other=jnp.ones_like)


def prune_masks(params, amount, *, scope: str = "layer", structure: str = "weight", norm=1,
                skip: Sequence[str] = ()) -> Any:
    """Magnitude-pruning masks for every conv and dense kernel of ``params``.

    ``amount`` in [0, 1): the fraction of weights (``structure="weight"``, torch's
    ``l1_unstructured`` / ``global_unstructured(pruning_method=L1Unstructured)``) or of
    output channels (``structure="filter"``, torch's ``ln_structured(n=norm, dim=0)``)
    pruned, ``round(amount * n)`` of them, ranked within each layer (``scope="layer"``)
    or over all layers (``scope="global"``; for filters the raw norms are compared).
    ``norm`` (1, 2, ``inf``...) ranks filters; unstructured ranking is by ``|w|``.
    ``skip``: layer names (``"fc2"``) or weight paths (``"fc2/weight"``) left dense.
    Returns a pytree like ``params``: 1.0 keep / 0.0 pruned on kernels, ones elsewhere.
    """
    amount = check_amount(amount)
    _check_choice(scope, SCOPES, "scope", "prune_masks")
    _check_choice(structure, STRUCTURES, "structure", "prune_masks")
    if not (isinstance(norm, numbers.Number) and norm > 0):
        raise ValueError(f"prune_masks: norm must be a positive number (1, 2, inf), got {norm!r}")
    ws = require_weights(params, "prune_masks")
    if structure == "weight":
        scores = {n: jnp.abs(w).reshape(-1) for n, w in ws.items()}
    else:
        scores = {n: _filter_norm(w, norm) for n, w in ws.items()}
    return _masks_from_scores(params, scores, amount, scope, structure, skip)


def random_masks(key, params, amount, *, structure: str = "weight", skip: Sequence[str] = ()) -> Any:
    """Predefined sparsity: a random mask per layer, chosen before training and held fixed.

    Exactly ``round(amount * n)`` weights (``structure="weight"``) or output channels
    (``"filter"``) of each kernel are zero, chosen uniformly at random from ``key``
    (one independent draw per layer). Same pytree contract as :func:`prune_masks`.
    """
    amount = check_amount(amount, "random_masks")
    _check_choice(structure, STRUCTURES, "structure", "random_masks")
    ws = require_weights(params, "random_masks")
    keys = jax.random.split(key, len(ws))
    scores = {}
    for k, (n, w) in zip(keys, ws.items()):
        size = w.size if structure == "weight" else w.shape[FILTER_AXIS]
        scores[n] = jax.random.uniform(k, (size,))
    return _masks_from_scores(params, scores, amount, "layer", structure, skip)


def apply_masks(params, masks):
    """``params`` with every entry where the mask is 0 set to +0.0 (``p * 0`` would give -0.0
    for negative weights, which a sparse encoding would have to store)."""
    return jax.tree.map(lambda p, m: jnp.where(m != 0, p, jnp.zeros((), p.dtype)), params, masks)


def sparsity_report(params, masks=None) -> dict[str, Any]:
    """Per-kernel and total sparsity of ``params`` (or of ``masks`` when given).

    ``{"layers": [{"name", "shape", "size", "zeros", "sparsity", "filters_zero"}...],
    "size", "zeros", "sparsity"}`` counting conv/dense kernels only; host numbers.
    """
    ws = require_weights(masks if masks is not None else params, "sparsity_report")
    layers = []
    for name, w in ws.items():
        w = np.asarray(jax.device_get(w))
        zero = w == 0
        per_filter = zero.reshape(-1, w.shape[FILTER_AXIS]).all(axis=0)
        layers.append({"name": name.rsplit("/", 1)[0], "shape": list(w.shape), "size": int(w.size),
                       "zeros": int(zero.sum()), "sparsity": float(zero.mean()),
                       "filters_zero": int(per_filter.sum())})
    size = sum(l["size"] for l in layers)
    zeros = sum(l["zeros"] for l in layers)
    return {"layers": layers, "size": size, "zeros": zeros, "sparsity": zeros / max(size, 1)}


def format_report(report) -> str:
    """The report of :func:`sparsity_report` as an aligned text table."""
    rows = [f"{'layer':<20}{'shape':>22}{'weights':>11}{'zero':>11}{'sparsity':>10}"]
    for l in report["layers"]:
        rows.append(f"{l['name']:<20}{str(tuple(l['shape'])):>22}{l['size']:>11,}{l['zeros']:>11,}"
                    f"{l['sparsity']:>10.1%}")
    rows.append(f"{'total':<20}{'':>22}{report['size']:>11,}{report['zeros']:>11,}{report['sparsity']:>10.1%}")
    return "\n".join(rows)

