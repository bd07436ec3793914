"""Intermediate outputs of any network, and gradients with respect to them.

Both work through :func:`jaxcnn.layers.base.tapping`: while the model is applied, every
child output passes through a pure function of its layer path. Reading an output is a
tap that keeps it; the gradient with respect to an output is the gradient with respect
to a zero added to it there. Nothing is registered globally and the model's code is not
changed, so both run under ``jax.jit`` and ``jax.vmap`` and accept any network (zoo
model, ``serial`` / ``graph`` Layer, a model imported with ``interop.from_torch``).

A *layer path* is a leaf path as :func:`jaxcnn.inspect.summary` prints it
(``"layer4/1/conv2"``) or the path of an enclosing block (``"layer4"``: the output of
ResNet-18's last stage). A layer applied more than once yields its last call's output.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..layers.base import tapping
from ..models import as_model


def _name(path) -> str:
    return "/".join(path)


def check_input(fn: str, model, x):
    """``x`` must be a non-empty batched array whose trailing dims match the model's
    natural input; else ValueError (TypeError for a non-array) naming ``fn``."""
    model = as_model(model)
    natural = model.input_shape
    if getattr(x, "ndim", None) is None:
        raise TypeError(f"{fn}: x must be an array, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[0] == 0:
        # an empty batch has nothing to explain (and crashed in lax.map with a ZeroDivisionError)
        raise ValueError(f"{fn}: x must be a batch of at least 1 example, got shape {tuple(x.shape)}")
    if natural is not None:
        if x.ndim != len(natural) + 1:
            raise ValueError(f"{fn}: x must have shape (batch, *{tuple(natural)}) (NHWC), got {tuple(x.shape)}")
        if x.shape[-1] != natural[-1]:
            raise ValueError(f"{fn}: x must have {natural[-1]} channels last (NHWC, shape (batch, "
                             f"*{tuple(natural)})), got shape {tuple(x.shape)}")
    return model


def _unknown(fn: str, missing, seen) -> ValueError:
    return ValueError(f"{fn}: unknown layer {missing!r}; available: {', '.join(seen)}")


def layer_names(model, params, state, x) -> list[str]:
    """Every path :func:`activations` accepts for this network and input, in call order
    (children before their enclosing block). Costs one abstract trace, no compute."""
    model = as_model(model)
    seen: list = []

    def tap(path, y):
        if _name(path) not in seen:
            seen.append(_name(path))
        return y

    def run(p, s, x):
        with tapping(tap):
            return model.apply(p, s, x, train=False)[0]

    jax.eval_shape(run, params, state, x)
    return seen


def activations(model, params, state, x, layers) -> dict:
    """``{path: output}`` of the named layers for the batch ``x`` (inference mode).

    ``layers`` is one path or a sequence of paths. Raises ``ValueError`` listing the
    available paths when one is unknown.
    """
    single = isinstance(layers, str)
    wanted = [layers] if single else list(layers)
    return forward_with(model, params, state, x, wanted, fn="activations")[0]


def forward_with(model, params, state, x, layers: Sequence[str], deltas: dict | None = None,
                 fn: str = "activations"):
    """Apply the model once, keeping the named layers' outputs (before any delta is added)
    and adding ``deltas[path]`` to those outputs. Returns ``(outputs, logits)``."""
    model = check_input(fn, model, x)
    deltas = deltas or {}
    wanted = set(layers)
    out, seen = {}, []

    def tap(path, y):
        name = _name(path)
        seen.append(name)
        if name in wanted:
            out[name] = y
            if name in deltas:
                return y + deltas[name]
        return y

    with tapping(tap):
        logits, _ = model.apply(params, state, x, train=False)
    for name in layers:
        if name not in out:
            raise _unknown(fn, name, list(dict.fromkeys(seen)))
    return {n: out[n] for n in layers}, logits


def target_scores(logits, target, fn: str = "target"):
    """Per-example scalar ``(B,)`` picked from the logits by ``target``: an int class, a
    ``(B,)`` int array of classes, or a callable ``logits -> (B,)`` returning scores, or
    returning integer classes (e.g. :func:`jaxcnn.inspect.cam.predicted`, the arg-max),
    which then pick the scores as an int array does."""
    if callable(target):
        s = target(logits)
        if jnp.issubdtype(jnp.result_type(s), jnp.integer):
            # classes, not scores: the gradient of an integer is not defined
            return target_scores(logits, jax.lax.stop_gradient(jnp.asarray(s)), fn)
        if jnp.ndim(s) == 0:
            s = jnp.broadcast_to(s, logits.shape[:1])
        if tuple(jnp.shape(s)) != tuple(logits.shape[:1]):
            raise ValueError(f"{fn}: a callable target must return shape ({logits.shape[0]},), "
                             f"got {tuple(jnp.shape(s))}")
        return s
    if logits.ndim != 2:
        raise ValueError(f"{fn}: a class target needs logits of shape (batch, classes), got {tuple(logits.shape)}")
    b, k = logits.shape
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < k:
            raise ValueError(f"{fn}: target class must be in [0, {k}), got {int(target)}")
        return logits[:, int(target)]
    t = jnp.asarray(target)
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (b,))
    if t.shape != (b,) or not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(f"{fn}: target must be an int, a ({b},) int array or a callable, "
                         f"got {t.dtype} array of shape {tuple(t.shape)}")
    if not isinstance(t, jax.core.Tracer):
        tn = np.asarray(t)
        if tn.size and (tn.min() < 0 or tn.max() >= k):
            raise ValueError(f"{fn}: target classes must be in [0, {k}), got values in [{tn.min()}, {tn.max()}]")
    return jnp.take_along_axis(logits, t[:, None].astype(jnp.int32), axis=1)[:, 0]


def layer_gradient(model, params, state, x, layer: str, target, fn: str = "layer_gradient"):
    """``(activation, gradient, logits)``: the output of ``layer`` for the batch ``x``, the
    gradient of each example's target score with respect to it (same shape), and the
    logits. One forward and one backward pass; in inference mode examples are independent,
    so the gradient of the summed scores is each example's own gradient."""
    model = as_model(model)
    shapes = jax.eval_shape(lambda p, s, x: forward_with(model, p, s, x, [layer], fn=fn)[0][layer],
                            params, state, x)

    def score(delta):
        acts, logits = forward_with(model, params, state, x, [layer], {layer: delta}, fn=fn)
        return jnp.sum(target_scores(logits, target, fn)), (acts[layer], logits)

    zero = jnp.zeros(shapes.shape, shapes.dtype)
    grad, (act, logits) = jax.grad(score, has_aux=True)(zero)
    return act, grad, logits


def input_gradient(model, params, state, x, target, fn: str = "input_gradient") -> tuple:
    """``(gradient, logits)``: d(score of each example)/dx, same shape as ``x``."""
    model = check_input(fn, model, x)

    def score(x):
        logits, _ = model.apply(params, state, x, train=False)
        return jnp.sum(target_scores(logits, target, fn)), logits

    return jax.grad(score, has_aux=True)(x)


def scores_fn(model, params, state, target, fn: str) -> Callable:
    """``x -> (B,)`` target scores (inference mode), for attribution methods."""
    model = as_model(model)

    def f(x):
        logits, _ = model.apply(params, state, x, train=False)
        return target_scores(logits, target, fn)
    return f


def filters(params, layer: str):
    """The kernel ``(kh, kw, C_in, C_out)`` (NHWC weights) of the conv layer at ``layer``.
    Raises ``ValueError`` listing the paths that hold conv kernels when it has none."""
    found = {}

    def walk(tree, path):
        if isinstance(tree, dict):
            w = tree.get("weight")
            if w is not None and getattr(w, "ndim", 0) >= 3:
                found["/".join(path)] = w
            for k, v in tree.items():
                walk(v, path + (k,))
    walk(params, ())
    if layer not in found:
        raise ValueError(f"filters: no conv kernel at layer {layer!r}; layers with kernels: {', '.join(found)}")
    return found[layer]
