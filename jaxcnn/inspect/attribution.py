"""Input attributions with Captum 0.9's semantics, as pure functions on NHWC batches.

* :func:`saliency` -- Captum ``Saliency``: the gradient of each example's target score
  with respect to its input, absolute by default. :func:`grad_x_input` -- ``InputXGradient``.
* :func:`integrated_gradients` -- Captum ``IntegratedGradients``: ``(x - x0) * sum_i w_i
  grad f(x0 + a_i (x - x0))`` with Captum's rules for ``(w_i, a_i)`` (``riemann_left``,
  ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``, ``gausslegendre``) and its
  convergence delta ``sum(attr) - (f(x) - f(x0))`` per example.
* :func:`smoothgrad` -- Captum ``NoiseTunnel``: an attribution averaged over Gaussian
  noisy copies of the input (``smoothgrad``, ``smoothgrad_sq``, ``vargrad``).
* :func:`occlusion` -- Captum ``Occlusion`` with a window spanning all channels: windows
  start at multiples of the stride (``1 + ceil((H - h) / sh)`` per axis; the last one is
  clipped at the border), and each input element gets the mean, over the windows covering
  it, of ``f(x) - f(x with the window set to baseline)``. Windows are evaluated
  ``windows_per_pass`` at a time (vectorised with ``vmap``). A stride larger than the
  window is refused, as Captum 0.9 refuses it (its pixels between windows would have no
  attribution; this returned NaN there before).

``target`` is an int class, a ``(B,)`` int array or a callable ``logits -> (B,)``;
inference mode throughout, so examples are independent. An empty batch, a non-integer
window, a non-finite or negative eps/stdev, zero samples: a one-line ValueError naming
the argument.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..ops import random
from .activations import check_input, input_gradient, scores_fn, target_scores

IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def saliency(model, params, state, x, target, abs: bool = True):  # noqa: A002 -- Captum's name
    """d(target score)/dx, like x; its absolute value when ``abs`` (Captum's default)."""
    g, _ = input_gradient(model, params, state, x, target, fn="saliency")
    return jnp.abs(g) if abs else g


def grad_x_input(model, params, state, x, target):
    """Captum ``InputXGradient``: ``x * d(target score)/dx``."""
    g, _ = input_gradient(model, params, state, x, target, fn="grad_x_input")
    return x * g


def ig_rule(method: str, steps: int):
    """Captum's ``(step_sizes, alphas)`` for ``steps`` points of ``method``."""
    if method not in IG_METHODS:
        raise ValueError(f"integrated_gradients: method must be one of {', '.join(IG_METHODS)}, got {method!r}")
    if method == "gausslegendre":
        if steps < 1:
            raise ValueError(f"integrated_gradients: steps must be >= 1, got {steps}")
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * weights, 0.5 * (1 + nodes)
    if steps < 2:
        raise ValueError(f"integrated_gradients: steps must be >= 2 for {method}, got {steps}")
    n = steps
    sizes = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
        alphas = np.linspace(0, 1, n)
    elif method == "riemann_left":
        alphas = np.linspace(0, 1 - 1 / n, n)
    elif method == "riemann_middle":
        alphas = np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = np.linspace(1 / n, 1, n)
    # Captum builds alphas with torch.linspace in float32
    return sizes, alphas.astype(np.float32).astype(np.float64)


def integrated_gradients(model, params, state, x, target, baseline=0.0, steps: int = 50,
                         method: str = "gausslegendre", return_delta: bool = False,
                         steps_per_pass: int | None = None):
    """Integrated gradients, like ``x`` (and the ``(B,)`` convergence delta when
    ``return_delta``). ``baseline`` is a scalar or an array broadcastable to ``x``.
    ``steps_per_pass`` path points are differentiated per pass (default: all at once)."""
    fn = "integrated_gradients"
    check_input(fn, model, x)
    sizes, alphas = ig_rule(method, int(steps))
    x0 = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    f = scores_fn(model, params, state, target, fn)
    grad = jax.grad(lambda z: jnp.sum(f(z)))

    def one(a):
        return grad(x0 + a * (x - x0))

    grads = jax.lax.map(one, jnp.asarray(alphas, x.dtype), batch_size=steps_per_pass or len(alphas))
    total = jnp.tensordot(jnp.asarray(sizes, x.dtype), grads, axes=1)
    attr = total * (x - x0)
    if not return_delta:
        return attr
    delta = jnp.sum(attr.reshape(x.shape[0], -1), axis=1) - (f(x) - f(x0))
    return attr, delta


NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def smoothgrad(model, params, state, x, target, key=None, samples: int = 5, stdev: float = 1.0,
               nt_type: str = "smoothgrad", attribution=None, noise=None):
    """Captum ``NoiseTunnel`` around ``attribution`` (default :func:`saliency`): the mean
    (``smoothgrad``), mean square (``smoothgrad_sq``) or variance (``vargrad``) of the
    attribution of ``samples`` copies of ``x`` plus N(0, stdev^2) noise drawn from
    ``key``. ``noise`` of shape ``(samples, *x.shape)`` replaces the draw (to replay a peer's).
    ``attribution(model, params, state, x, target) -> like x``. ``samples`` >= 1 and a
    finite ``stdev`` >= 0, else ValueError."""
    fn = "smoothgrad"
    check_input(fn, model, x)
    if not _is_int(samples) or samples < 1:
        raise ValueError(f"{fn}: samples must be an int >= 1 (noisy copies averaged), got {samples!r}")
    _finite(fn, "stdev", stdev)
    if nt_type not in NT_TYPES:
        raise ValueError(f"{fn}: nt_type must be one of {', '.join(NT_TYPES)}, got {nt_type!r}")
    if noise is None:
        if key is None:
            raise ValueError(f"{fn}: pass a PRNG key (key=jax.random.PRNGKey(0)) or explicit noise")
        noise = stdev * random.normal(key, (samples,) + tuple(x.shape), dtype=x.dtype)
    elif tuple(noise.shape) != (samples,) + tuple(x.shape):
        raise ValueError(f"{fn}: noise must have shape {(samples,) + tuple(x.shape)}, got {tuple(noise.shape)}")
    attribution = attribution or saliency
    attrs = jax.lax.map(lambda n: attribution(model, params, state, x + n, target), noise)
    if nt_type == "smoothgrad":
        return jnp.mean(attrs, axis=0)
    sq = jnp.mean(attrs * attrs, axis=0)
    if nt_type == "smoothgrad_sq":
        return sq
    return sq - jnp.mean(attrs, axis=0) ** 2


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _pair(v, name):
    """An int or a pair of ints as ``(h, w)``; anything else (``2.5``, ``"3"``, three
    numbers) is a ValueError naming ``name``, the expected form and the value."""
    if _is_int(v):
        return int(v), int(v)
    if isinstance(v, (tuple, list, np.ndarray)) and len(v) == 2 and all(_is_int(a) for a in v):
        return int(v[0]), int(v[1])
    raise ValueError(f"occlusion: {name} must be an int or a pair of ints (h, w), got {v!r}")


def _finite(fn, name, value, minimum=0.0):
    """``value`` as a float if it is a finite number >= ``minimum``, else ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: {name} must be a finite number >= {minimum:g}, got {value!r}") from None
    if not math.isfinite(v) or v < minimum:
        raise ValueError(f"{fn}: {name} must be a finite number >= {minimum:g}, got {value!r}")
    return v


def occlusion_masks(height: int, width: int, window, stride) -> np.ndarray:
    """``(P, H, W)`` float masks of Captum's occlusion windows, in row-major window order.

    Like Captum's ``Occlusion`` (which asserts "Stride dimension ... cannot be larger than
    sliding window shape dimension"), a stride larger than the window is refused: the
    pixels between windows would be covered by none, and their attribution undefined."""
    (h, w), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if h < 1 or w < 1:
        raise ValueError(f"occlusion: window must be >= 1 in each dimension, got ({h}, {w})")
    if h > height or w > width:
        raise ValueError(f"occlusion: window must fit the input's (H, W) = ({height}, {width}), got ({h}, {w})")
    if sh < 1 or sw < 1:
        raise ValueError(f"occlusion: stride must be >= 1 in each dimension, got ({sh}, {sw})")
    if sh > h or sw > w:
        raise ValueError(f"occlusion: stride must be at most the window in each dimension (as in Captum; "
                         f"pixels between windows would get no attribution), got stride ({sh}, {sw}) "
                         f"for window ({h}, {w})")
    nh, nw = 1 + math.ceil((height - h) / sh), 1 + math.ceil((width - w) / sw)
    masks = np.zeros((nh * nw, height, width), np.float32)
    for i in range(nh):
        for j in range(nw):
            masks[i * nw + j, i * sh:i * sh + h, j * sw:j * sw + w] = 1
    return masks


def occlusion(model, params, state, x, target, window, stride=1, baseline=0.0,
              windows_per_pass: int = 32):
    """Occlusion attribution, like ``x`` (Captum ``Occlusion`` with
    ``sliding_window_shapes=(C, h, w)``, ``strides=(C, sh, sw)``, ``perturbations_per_eval``
    = ``windows_per_pass``). ``baseline`` is a scalar or an array broadcastable to ``x``.
    ``window`` and ``stride`` are ints or ``(h, w)`` pairs of ints >= 1, the stride at most
    the window (Captum refuses a larger one too: it would leave pixels without any window,
    whose mean drop is undefined); anything else is a ValueError naming the argument."""
    fn = "occlusion"
    check_input(fn, model, x)
    if not _is_int(windows_per_pass) or windows_per_pass < 1:
        raise ValueError(f"{fn}: windows_per_pass must be an int >= 1, got {windows_per_pass!r}")
    if x.ndim != 4:
        raise ValueError(f"{fn}: x must be (batch, H, W, C), got shape {tuple(x.shape)}")
    masks = occlusion_masks(x.shape[1], x.shape[2], window, stride)
    f = scores_fn(model, params, state, target, fn)
    x0 = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    full = f(x)

    def drop(m):
        m = m[None, :, :, None]
        return full - f(x * (1 - m) + x0 * m)

    diffs = jax.lax.map(drop, jnp.asarray(masks), batch_size=min(windows_per_pass, len(masks)))   # (P, B)
    # windows start every stride <= window and the last one reaches the border (see
    # occlusion_masks), so every pixel is covered at least once: no division by zero
    covered = masks.sum(0)                                                    # (H, W)
    attr = jnp.einsum("pb,phw->bhw", diffs, jnp.asarray(masks)) / covered
    return jnp.broadcast_to(attr[..., None], x.shape)


def occlusion_sweep(model, params, state, x, target, sizes, stride=None, baseline=0.0):
    """The notes' patch-size table: ``{size: (map, max drop per example)}`` for square
    windows of each size (stride defaults to half the size, at least 1)."""
    out = {}
    for s in sizes:
        if not _is_int(s) or s < 1:
            raise ValueError(f"occlusion_sweep: sizes must be ints >= 1, got {s!r}")
        st = stride if stride is not None else max(1, s // 2)
        m = occlusion(model, params, state, x, target, (s, s), (st, st), baseline)
        out[int(s)] = (m, jnp.max(m[..., 0].reshape(x.shape[0], -1), axis=1))
    return out


__all__ = ["saliency", "grad_x_input", "integrated_gradients", "smoothgrad", "occlusion", "occlusion_sweep",
           "occlusion_masks", "ig_rule", "target_scores"]
