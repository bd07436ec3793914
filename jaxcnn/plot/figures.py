"""Figure builders for :mod:`jaxcnn.plot` (see the package docstring)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure


def save(fig: Figure, path, dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` (PNG by extension), creating its directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return str(path)


def _grid(n, cols=None):
    cols = cols or min(n, int(math.ceil(math.sqrt(n))))
    return int(math.ceil(n / cols)), cols


def _display(img):
    """(H, W) or (H, W, C) -> something imshow draws: grey for 1 channel, RGB min-max scaled."""
    img = np.asarray(img, np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        lo, hi = img.min(), img.max()
        img = (img - lo) / (hi - lo + 1e-12)
        return img[..., :3], None
    return img, "gray"


def _tiles(images, titles=None, cols=None, cmap=None, suptitle=None, size=1.6, colorbar=False):
    images = list(images)
    rows, cols = _grid(len(images), cols)
    fig = Figure(figsize=(size * cols + (0.8 if colorbar else 0), size * rows + (0.5 if suptitle else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    last = None
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= len(images):
            continue
        img, grey = _display(images[i])
        last = ax.imshow(img, cmap=cmap or grey, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    if colorbar and last is not None:
        fig.colorbar(last, ax=axes.ravel().tolist(), shrink=0.8)
    return fig


def filter_grid(weight, max_filters: int = 64, title: str | None = None) -> Figure:
    """Tiles of conv kernels ``(kh, kw, C_in, C_out)`` (NHWC weights); with 3 input channels
    each filter is one RGB tile, otherwise one grey tile per (output, first input) channel."""
    w = np.asarray(weight)
    if w.ndim != 4:
        raise ValueError(f"filter_grid: weight must be (kh, kw, C_in, C_out), got shape {w.shape}")
    n = min(w.shape[-1], max_filters)
    if w.shape[2] == 3:
        tiles = [w[..., o] for o in range(n)]
    else:
        tiles = [w[:, :, 0, o] for o in range(n)]
    return _tiles(tiles, [f"{o}" for o in range(n)], cmap="viridis" if w.shape[2] != 3 else None,
                  suptitle=title or f"filters {w.shape[0]}x{w.shape[1]}, {w.shape[-1]} out", size=1.0)


def feature_maps(activation, max_channels: int = 64, title: str | None = None, layer: str | None = None) -> Figure:
    """The channels of one example's activation ``(h, w, C)`` (or ``(1, h, w, C)``), one
    tile per channel on ONE shared colour scale (the activation's min and max over the
    channels shown), with one colour bar, so tiles compare by brightness. ``layer`` (a path
    from ``jaxcnn summary``) names the layer in the title.

    Raises ``ValueError`` for an activation that is not (h, w, C)."""
    a = np.asarray(activation, np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"feature_maps: activation must be (h, w, C) or (1, h, w, C), got shape {a.shape}")
    n = min(a.shape[-1], max_channels)
    shown = a[..., :n]
    lo, hi = float(shown.min()), float(shown.max())
    if hi <= lo:
        hi = lo + 1.0
    rows, cols = _grid(n)
    size = 1.2
    fig = Figure(figsize=(size * cols + 0.9, size * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    last = None
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < n:
            last = ax.imshow(shown[..., i], cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"ch {i}", fontsize=7)
    fig.colorbar(last, ax=axes.ravel().tolist(), shrink=0.8, label="activation (shared scale)")
    what = f"{a.shape[0]}x{a.shape[1]}x{a.shape[2]}" + (f", first {n} channels" if n < a.shape[-1] else "")
    head = f"layer {layer}: feature maps {what}" if layer else f"feature maps {what}"
    fig.suptitle(f"{head}\n{title}" if title else head, fontsize=9)
    return fig


def image_grid(images, titles=None, title: str | None = None, cols=None) -> Figure:
    """Any stack ``(N, H, W[, C])`` of images, each min-max scaled, e.g. max filter responses."""
    return _tiles(list(np.asarray(images)), titles, cols=cols, suptitle=title)


def to_grey(image) -> np.ndarray:
    """An image ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3+)`` as grey ``(H, W)`` in [0, 1]:
    min-max scaled, RGB by luminance (0.299 R + 0.587 G + 0.114 B)."""
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = img[..., 0] if img.shape[-1] < 3 else img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    if img.ndim != 2:
        raise ValueError(f"to_grey: image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def blend_cam(image, cam, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """pytorch-grad-cam's ``show_cam_on_image`` look: the heat map ``cam`` ``(H, W)`` in
    [0, 1] coloured by ``cmap`` and alpha-blended over the grey ``image`` (``alpha`` is the
    heat map's weight; pytorch-grad-cam's ``image_weight`` is ``1 - alpha``), then scaled
    so its maximum is 1. Returns RGB ``(H, W, 3)`` float32 in [0, 1].

    Raises ``ValueError`` when the shapes differ or ``alpha`` is outside [0, 1]."""
    from matplotlib import colormaps
    grey = to_grey(image)
    cam = np.asarray(cam, np.float32)
    if cam.shape != grey.shape:
        raise ValueError(f"blend_cam: cam has shape {cam.shape}, its image {grey.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"blend_cam: alpha must be in [0, 1], got {alpha}")
    heat = colormaps[cmap](np.clip(cam, 0.0, 1.0))[..., :3].astype(np.float32)
    out = alpha * heat + (1.0 - alpha) * grey[..., None]
    return out / max(float(out.max()), 1e-12)


def cam_overlay(images, cams, titles=None, alpha: float = 0.5, title: str | None = None,
                cmap: str = "jet") -> Figure:
    """Heat maps ``(N, H, W)`` in [0, 1] (``grad_cam(..., upsample=True)``) over their images
    ``(N, H, W, C)``: per example the image and, below it, :func:`blend_cam`'s overlay (the
    heat map alpha-blended over the grey image), with a colour bar of the heat map's scale.

    Raises ``ValueError`` when a cam's shape is not its image's (H, W)."""
    images, cams = np.asarray(images), np.asarray(cams)
    n = len(images)
    fig = Figure(figsize=(2.4 * n + 0.9, 4.9))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        img, grey = _display(images[i])
        if cams[i].shape != img.shape[:2]:
            raise ValueError(f"cam_overlay: cam {i} has shape {cams[i].shape}, its image {img.shape[:2]}")
        axes[0, i].imshow(img, cmap=grey, interpolation="nearest")
        axes[1, i].imshow(blend_cam(images[i], cams[i], alpha, cmap), interpolation="nearest")
        for r in (0, 1):
            axes[r, i].set_axis_off()
        if titles is not None:
            axes[0, i].set_title(_wrap(titles[i]), fontsize=7)
    fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes[1].tolist(), shrink=0.8, label="relevance")
    if title:
        fig.suptitle(title)
    return fig


def _wrap(text, width: int = 34) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def attribution_scale(attribution, signed: bool = True, outlier_percent: float = 2.0) -> float:
    """The colour scale's bound for an attribution ``(H, W)``: Captum's
    ``visualize_image_attr`` rule, the value below which ``100 - outlier_percent`` % of the
    total absolute (``signed``) or positive attribution lies, so a few extreme pixels do
    not wash the map out. Returns a positive float (1.0 for an all-zero map)."""
    a = np.abs(np.asarray(attribution, np.float64)) if signed else np.clip(np.asarray(attribution, np.float64), 0,
                                                                           None)
    values = np.sort(a.ravel())
    total = values.sum()
    if total <= 0:
        return 1.0
    cumulative = np.cumsum(values)
    index = int(np.searchsorted(cumulative, total * (100.0 - outlier_percent) / 100.0))
    return float(values[min(index, len(values) - 1)]) or float(values[-1])


def attribution_map(images, attributions, titles=None, title: str | None = None, signed: bool = True,
                    alpha: float = 0.6, outlier_percent: float = 2.0) -> Figure:
    """Attributions ``(N, H, W[, C])`` (summed over channels) overlaid on their grey images,
    Captum's ``blended_heat_map`` look: per example the image and, below it, the
    attribution drawn with weight ``alpha`` over the grey image on a diverging colour map
    centred at 0 (``signed``; red positive, blue negative) or a sequential one for
    magnitudes, clipped at :func:`attribution_scale`, with a colour bar each.

    Raises ``ValueError`` when an attribution's (H, W) is not its image's."""
    images, attr = np.asarray(images), np.asarray(attributions, np.float32)
    if attr.ndim == 4:
        attr = attr.sum(-1)
    n = len(images)
    fig = Figure(figsize=(3.0 * n, 5.0))
    axes = fig.subplots(2, n, squeeze=False)
    cmap = "RdBu_r" if signed else "inferno"
    for i in range(n):
        img, grey = _display(images[i])
        if attr[i].shape != img.shape[:2]:
            raise ValueError(f"attribution_map: attribution {i} has shape {attr[i].shape}, its image {img.shape[:2]}")
        axes[0, i].imshow(img, cmap=grey, interpolation="nearest")
        m = attribution_scale(attr[i], signed, outlier_percent)
        axes[1, i].imshow(to_grey(images[i]), cmap="gray", interpolation="nearest")
        im = axes[1, i].imshow(attr[i], cmap=cmap, vmin=-m if signed else 0, vmax=m, alpha=alpha,
                               interpolation="nearest")
        fig.colorbar(ScalarMappable(im.norm, cmap), ax=axes[1, i], shrink=0.8)
        for r in (0, 1):
            axes[r, i].set_axis_off()
        if titles is not None:
            axes[0, i].set_title(_wrap(titles[i]), fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def adversarial_examples(images, adversarial, probs, adversarial_probs, class_names=None, labels=None,
                         eps: float | None = None, method: str = "attack", indices=None) -> Figure:
    """An attack's result, one row per example with three labelled panels: the original
    (true class when ``labels`` are given, predicted class and probability), the
    adversarial image (its predicted class and probability, or "prediction unchanged" when
    the attack did not change the argmax) and the perturbation ``adversarial - original``
    on a diverging colour map centred at 0 with a colour bar.

    Args:
        images, adversarial: ``(N, H, W, C)`` inputs and the attack's outputs.
        probs, adversarial_probs: ``(N, K)`` softmax probabilities of each.
        class_names: ``K`` names (default: the class numbers).
        labels: ``(N,)`` true classes, optional.
        eps: the attack's budget, shown in the perturbation's title.
        method: the attack's name (e.g. ``"fgsm"``, ``"pgd"``), in the figure title.
        indices: ``N`` example numbers for the row labels (default 0..N-1).

    Raises ``ValueError`` when the shapes disagree."""
    x, adv = np.asarray(images, np.float32), np.asarray(adversarial, np.float32)
    p, ap = np.asarray(probs, np.float32), np.asarray(adversarial_probs, np.float32)
    if x.shape != adv.shape or x.ndim != 4:
        raise ValueError(f"adversarial_examples: images and adversarial must both be (N, H, W, C), got "
                         f"{x.shape} and {adv.shape}")
    if p.shape != ap.shape or p.ndim != 2 or len(p) != len(x):
        raise ValueError(f"adversarial_examples: probs and adversarial_probs must both be (N={len(x)}, K), got "
                         f"{p.shape} and {ap.shape}")
    names = list(class_names) if class_names is not None else [str(k) for k in range(p.shape[1])]
    indices = list(indices) if indices is not None else list(range(len(x)))
    n = len(x)
    fig = Figure(figsize=(8.4, 2.9 * n + 0.5))
    axes = fig.subplots(n, 3, squeeze=False)
    lo, hi = float(min(x.min(), adv.min())), float(max(x.max(), adv.max()))
    changed = 0
    for i in range(n):
        before, after = int(p[i].argmax()), int(ap[i].argmax())
        truth = f"true {names[int(labels[i])]}\n" if labels is not None else ""
        axes[i, 0].imshow(_grey_or_rgb(x[i], lo, hi), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[i, 0].set_title(f"#{indices[i]} original\n{truth}pred {names[before]} ({p[i, before]:.2f})", fontsize=8)
        axes[i, 1].imshow(_grey_or_rgb(adv[i], lo, hi), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if after == before:
            verdict = f"prediction unchanged\n{names[after]} ({ap[i, after]:.2f})"
        else:
            changed += 1
            verdict = f"pred {names[after]} ({ap[i, after]:.2f})\nwas {names[before]}, now {ap[i, before]:.2f}"
        axes[i, 1].set_title(f"adversarial\n{verdict}", fontsize=8, color="black" if after == before else "crimson")
        delta = (adv[i] - x[i]).sum(-1) if x.shape[-1] > 1 else (adv[i] - x[i])[..., 0]
        m = float(np.abs(delta).max()) or 1.0
        im = axes[i, 2].imshow(delta, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        budget = f"eps {eps:g}, " if eps is not None else ""
        axes[i, 2].set_title(f"perturbation\n{budget}max |d| {float(np.abs(adv[i] - x[i]).max()):.3g}", fontsize=8)
        fig.colorbar(im, ax=axes[i, 2], shrink=0.8)
        for ax in axes[i]:
            ax.set_axis_off()
    fig.suptitle(f"{method}: prediction changed for {changed} of {n}", fontsize=10)
    return fig


def _grey_or_rgb(img, lo, hi):
    """An image scaled by the shared range [lo, hi] to [0, 1]: (H, W) for one channel, RGB otherwise."""
    img = (np.asarray(img, np.float32) - lo) / (hi - lo if hi > lo else 1.0)
    return img[..., 0] if img.shape[-1] == 1 else img[..., :3]


def read_metrics(path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (a run directory or the file itself)."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(path):
        raise ValueError(f"training_curves: no metrics.jsonl at {path}")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


#: runs with at least this many evaluation records get a log-scale loss axis by default
LOG_LOSS_MIN_RECORDS = 20


def training_curves(run, title: str | None = None, log_loss: bool | None = None) -> Figure:
    """Loss and accuracy (train and test) from a run's ``metrics.jsonl`` (the run directory
    or the file): against the epoch, on integer ticks, when every record has one (else the
    step). ``log_loss`` puts the loss on a log scale; by default it does for long runs
    (:data:`LOG_LOSS_MIN_RECORDS` records or more) whose losses are all positive. The
    title names the run and its best test accuracy and where it was reached.

    Raises ``ValueError`` when there is no ``metrics.jsonl`` or it holds no records."""
    from matplotlib.ticker import MaxNLocator
    rows = read_metrics(run)
    if not rows:
        raise ValueError(f"training_curves: {run} holds no metrics records")
    xkey = "epoch" if all("epoch" in r for r in rows) else "step"
    losses = [r[k] for r in rows for k in ("train_loss", "test_loss") if r.get(k) is not None]
    if log_loss is None:
        log_loss = len(rows) >= LOG_LOSS_MIN_RECORDS and bool(losses) and min(losses) > 0
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    marker = "o" if len(rows) <= 40 else None
    for ax, kind in zip(axes, ("loss", "accuracy")):
        for split in ("train", "test"):
            pts = [(r[xkey], r[f"{split}_{kind}"]) for r in rows if r.get(f"{split}_{kind}") is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=marker, ms=3, label=split)
        ax.set_xlabel(xkey)
        ax.set_ylabel(kind + (" (log scale)" if kind == "loss" and log_loss else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if kind == "loss" and log_loss:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both" if kind == "loss" and log_loss else "major")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    scored = [r for r in rows if r.get("test_accuracy") is not None]
    name = os.path.basename(os.path.abspath(run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))))
    if scored:
        best = max(scored, key=lambda r: r["test_accuracy"])
        where = f"{xkey} {best[xkey]:g}"
        head = f"{name}: best test accuracy {best['test_accuracy']:.4f} ({where})"
    else:
        head = f"{name}: no test evaluation"
    fig.suptitle(title or head)
    return fig
