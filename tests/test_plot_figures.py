"""jaxcnn.plot's figures render, and look as promised: the CAM overlay is a heat map
blended over the grey image, attributions sit on a diverging scale with a colour bar,
attack figures label their panels, feature maps share one colour scale, training curves
use integer epoch ticks and a log-scale loss for long runs."""
import json

import numpy as np
import pytest
from PIL import Image

from jaxcnn import plot


def _png(fig, path):
    plot.save(fig, path)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _digits(n=2, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, size, size, 1)).astype(np.float32)


def test_blend_cam_is_a_heat_map_over_the_grey_image():
    img = _digits(1)[0]
    cam = np.zeros((12, 12), np.float32)
    cam[3:6, 3:6] = 1.0
    out = plot.blend_cam(img, cam, alpha=0.5)
    grey = plot.to_grey(img)
    assert out.shape == (12, 12, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() == pytest.approx(1.0)
    assert np.abs(out - grey[..., None] / grey.max()).mean() > 0.05         # not the grey image
    hot, cold = out[4, 4], out[10, 10]
    assert hot[0] > hot[2] and cold[2] > cold[0]                            # jet: red where cam=1, blue at 0
    np.testing.assert_allclose(plot.blend_cam(img, cam, alpha=0.0), np.repeat(grey[..., None], 3, -1) / grey.max(),
                               atol=1e-6)                                   # alpha 0: the grey image itself
    with pytest.raises(ValueError, match=r"cam has shape \(5, 5\), its image \(12, 12\)"):
        plot.blend_cam(img, cam[:5, :5])
    with pytest.raises(ValueError, match="alpha must be in"):
        plot.blend_cam(img, cam, alpha=1.5)


def test_cam_overlay_renders_the_blend(tmp_path):
    imgs = _digits(2)
    cams = np.stack([np.linspace(0, 1, 144).reshape(12, 12)] * 2)
    fig = plot.cam_overlay(imgs, cams, ["a", "b"], title="gradcam")
    pixels = _png(fig, tmp_path / "cam.png")
    h, w, _ = pixels.shape
    assert 200 < h < 1200 and 300 < w < 1600
    colourful = np.abs(pixels[..., 0].astype(int) - pixels[..., 2].astype(int)) > 60
    assert colourful.mean() > 0.05                                          # the heat map is drawn
    assert len(fig.axes) == 5                                               # 2x2 panels + one colour bar
    with pytest.raises(ValueError, match=r"cam 0 has shape \(5, 5\)"):
        plot.cam_overlay(imgs, cams[:, :5, :5])


def test_attribution_map_diverging_with_colour_bars(tmp_path):
    imgs = _digits(3)
    attr = imgs - 0.5
    fig = plot.attribution_map(imgs, attr, ["a", "b", "c"])
    assert len(fig.axes) == 3 * 2 + 3                                       # a colour bar per example
    overlay = fig.axes[3].get_images()[-1]
    lo, hi = overlay.get_clim()
    assert lo == -hi and 0 < hi <= np.abs(attr[1]).max()                   # centred at 0
    assert overlay.get_cmap().name == "RdBu_r"
    assert plot.attribution_scale(np.zeros((4, 4))) == 1.0
    # Captum's rule: the top 2% of the attribution mass saturates the colour map
    assert plot.attribution_scale(np.r_[np.ones(99), 1.5]) == 1.0
    assert plot.attribution_scale(np.r_[np.ones(99), 1.5], outlier_percent=0) == 1.5
    unsigned = plot.attribution_map(imgs, np.abs(attr), signed=False)
    assert unsigned.axes[3].get_images()[-1].get_clim()[0] == 0
    assert _png(fig, tmp_path / "attr.png").shape[0] > 200


def test_adversarial_examples_label_the_panels(tmp_path):
    imgs = _digits(2)
    adv = np.clip(imgs + 0.1 * np.sign(np.random.default_rng(1).normal(size=imgs.shape)), 0, 1)
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    adv_probs = np.array([[0.3, 0.6, 0.1], [0.1, 0.8, 0.1]])               # 0 flipped, 1 unchanged
    fig = plot.adversarial_examples(imgs, adv, probs, adv_probs, ["cat", "dog", "cow"], labels=[0, 1], eps=0.1,
                                    method="fgsm", indices=[4, 9])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "#4 original\ntrue cat\npred cat (0.90)"
    assert titles[1] == "adversarial\npred dog (0.60)\nwas cat, now 0.30"
    assert titles[2].startswith("perturbation\neps 0.1, max |d| 0.1")
    assert titles[4] == "adversarial\nprediction unchanged\ndog (0.80)"
    assert fig._suptitle.get_text() == "fgsm: prediction changed for 1 of 2"
    perturbation = fig.axes[2].get_images()[0]
    assert perturbation.get_clim()[0] == -perturbation.get_clim()[1]
    assert _png(fig, tmp_path / "adv.png").shape[0] > 300
    with pytest.raises(ValueError, match="images and adversarial must both be"):
        plot.adversarial_examples(imgs, adv[:1], probs, adv_probs)


def test_feature_maps_share_one_scale_and_name_the_layer(tmp_path):
    a = np.random.default_rng(0).normal(size=(6, 6, 5)).astype(np.float32)
    a[..., 3] *= 10
    fig = plot.feature_maps(a, layer="layer2/conv1")
    clims = {im.get_clim() for ax in fig.axes for im in ax.get_images()}
    assert clims == {(float(a.min()), float(a.max()))}
    assert fig._suptitle.get_text().startswith("layer layer2/conv1: feature maps 6x6x5")
    assert fig.axes[-1].get_ylabel() == "activation (shared scale)"      # the one colour bar
    assert _png(fig, tmp_path / "fm.png").shape[0] > 150
    with pytest.raises(ValueError, match=r"must be \(h, w, C\) or \(1, h, w, C\), got shape \(6, 6\)"):
        plot.feature_maps(a[..., 0])


def _run(tmp_path, n):
    run = tmp_path / f"run{n}"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for e in range(1, n + 1):
            f.write(json.dumps({"epoch": float(e), "step": 10 * e, "train_loss": 2.0 / e, "test_loss": 2.2 / e,
                                "train_accuracy": 1 - 0.5 / e, "test_accuracy": 1 - 0.6 / e}) + "\n")
    return str(run)


def test_training_curves_integer_epochs_and_log_loss_for_long_runs(tmp_path):
    short = plot.training_curves(_run(tmp_path, 3))
    loss_ax, acc_ax = short.axes
    assert loss_ax.get_yscale() == "linear"
    ticks = [t for t in loss_ax.get_xticks() if loss_ax.get_xlim()[0] <= t <= loss_ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert "best test accuracy 0.8000 (epoch 3)" in short._suptitle.get_text()
    long = plot.training_curves(_run(tmp_path, 40))
    assert long.axes[0].get_yscale() == "log" and long.axes[1].get_yscale() == "linear"
    assert plot.training_curves(_run(tmp_path, 41), log_loss=False).axes[0].get_yscale() == "linear"
    assert _png(long, tmp_path / "curves.png").shape[1] > 500
