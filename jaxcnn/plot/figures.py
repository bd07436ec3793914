"""Figure builders for :mod:`jaxcnn.plot` (see the package docstring)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
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


def feature_maps(activation, max_channels: int = 64, title: str | None = None) -> Figure:
    """The channels of one example's activation ``(h, w, C)`` (or ``(1, h, w, C)``)."""
    a = np.asarray(activation)
    if a.ndim == 4:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"feature_maps: activation must be (h, w, C), got shape {a.shape}")
    n = min(a.shape[-1], max_channels)
    return _tiles([a[..., c] for c in range(n)], [f"ch {c}" for c in range(n)], cmap="viridis",
                  suptitle=title or f"feature maps {a.shape[0]}x{a.shape[1]}x{a.shape[2]}", size=1.2)


def image_grid(images, titles=None, title: str | None = None, cols=None) -> Figure:
    """Any stack ``(N, H, W[, C])`` of images, each min-max scaled, e.g. max filter responses."""
    return _tiles(list(np.asarray(images)), titles, cols=cols, suptitle=title)


def cam_overlay(images, cams, titles=None, alpha: float = 0.45, title: str | None = None) -> Figure:
    """Heat maps ``(N, H, W)`` in [0, 1] (``grad_cam(..., upsample=True)``) over their images
    ``(N, H, W, C)``: two rows, the image and the overlay, with a colour bar."""
    images, cams = np.asarray(images), np.asarray(cams)
    n = len(images)
    fig = Figure(figsize=(2.2 * n + 0.8, 4.6))
    axes = fig.subplots(2, n, squeeze=False)
    last = None
    for i in range(n):
        img, grey = _display(images[i])
        for r in (0, 1):
            axes[r, i].imshow(img, cmap=grey)
            axes[r, i].set_axis_off()
        if cams[i].shape != img.shape[:2]:
            raise ValueError(f"cam_overlay: cam {i} has shape {cams[i].shape}, its image {img.shape[:2]}")
        last = axes[1, i].imshow(cams[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        if titles is not None:
            axes[0, i].set_title(str(titles[i]), fontsize=8)
    fig.colorbar(last, ax=axes[1].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def attribution_map(images, attributions, titles=None, title: str | None = None, signed: bool = True) -> Figure:
    """Attributions ``(N, H, W, C)`` (summed over channels) beside their images, on a
    diverging colour map centred at 0 when ``signed``, with a colour bar per example."""
    images, attr = np.asarray(images), np.asarray(attributions)
    if attr.ndim == 4:
        attr = attr.sum(-1)
    n = len(images)
    fig = Figure(figsize=(2.6 * n, 4.8))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        img, grey = _display(images[i])
        axes[0, i].imshow(img, cmap=grey)
        m = float(np.abs(attr[i]).max()) or 1.0
        im = axes[1, i].imshow(attr[i], cmap="coolwarm" if signed else "magma",
                               vmin=-m if signed else 0, vmax=m)
        fig.colorbar(im, ax=axes[1, i], shrink=0.8)
        for r in (0, 1):
            axes[r, i].set_axis_off()
        if titles is not None:
            axes[0, i].set_title(str(titles[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def read_metrics(path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (a run directory or the file itself)."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(path):
        raise ValueError(f"training_curves: no metrics.jsonl at {path}")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_curves(run, title: str | None = None) -> Figure:
    """Loss and accuracy (train and test) per epoch (or step) from a run's ``metrics.jsonl``."""
    rows = read_metrics(run)
    if not rows:
        raise ValueError(f"training_curves: {run} holds no metrics records")
    xkey = "epoch" if all("epoch" in r for r in rows) else "step"
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for ax, kind in zip(axes, ("loss", "accuracy")):
        for split in ("train", "test"):
            pts = [(r[xkey], r[f"{split}_{kind}"]) for r in rows if r.get(f"{split}_{kind}") is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, label=split)
        ax.set_xlabel(xkey)
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
        ax.legend()
    best = max((r.get("test_accuracy") or 0.0 for r in rows), default=0.0)
    fig.suptitle(title or f"{os.path.basename(os.path.abspath(run))}: best test accuracy {best:.4f}")
    return fig
