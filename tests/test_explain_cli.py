"""`jaxcnn explain` / `jaxcnn plot` on a real (one-epoch) run, and the plot builders."""
import os

import jax
import numpy as np
import pytest

from jaxcnn import plot
from jaxcnn.cli import main
from jaxcnn.ops.random import normal, uniform


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("run") / "digits")
    assert main(["train", "--model", "digits_cnn", "--dataset", "digits", "--epochs", "1", "--out", d,
                 "--no-progress"]) == 0
    return d


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "occlusion", "ig", "pgd", "featuremaps"])
def test_explain_writes_png_and_npy(run_dir, tmp_path, method, capsys):
    assert main(["explain", "--checkpoint", run_dir, "--method", method, "--index", "0,7",
                 "--target", "true", "--out", str(tmp_path), "--steps", "8"]) == 0
    for i in (0, 7):
        assert os.path.getsize(tmp_path / f"{method}_{i}.png") > 1000
        arr = np.load(tmp_path / f"{method}_{i}.npy")
        assert np.all(np.isfinite(arr)) and arr.size > 1
    if method in ("occlusion", "ig", "pgd"):
        assert arr.shape == (8, 8, 1)


@pytest.mark.slow
def test_explain_maxresponse_and_plot(run_dir, tmp_path):
    assert main(["explain", "--checkpoint", run_dir, "--method", "maxresponse", "--layer", "act2",
                 "--channels", "0,3", "--steps", "5", "--out", str(tmp_path)]) == 0
    assert np.load(tmp_path / "maxresponse.npy").shape == (2, 8, 8, 1)
    assert main(["plot", run_dir, "--out", str(tmp_path / "p")]) == 0
    assert os.path.getsize(tmp_path / "p" / "training_curves.png") > 1000
    assert os.path.getsize(tmp_path / "p" / "filters_conv1.png") > 1000


@pytest.mark.slow
@pytest.mark.parametrize("argv,message", [
    (["--method", "gradcam", "--layer", "nope"], "unknown layer 'nope'; available: conv1,"),
    (["--method", "gradcam", "--layer", "fc"], "'fc' must output a feature map"),
    (["--method", "gradcam", "--target", "10"], "--target class must be in [0, 10), got 10"),
    (["--method", "saliency", "--index", "99999"], "--index must name test examples in [0, "),
])
def test_explain_errors_are_one_line(run_dir, tmp_path, capsys, argv, message):
    assert main(["explain", "--checkpoint", run_dir, "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxcnn explain: error:") and message in err and "\n" not in err


def test_plot_builders(tmp_path):
    k = jax.random.PRNGKey(0)
    imgs = np.asarray(uniform(k, (2, 12, 12, 1)))
    figs = {"filters": plot.filter_grid(np.asarray(normal(k, (3, 3, 1, 6)))),
            "maps": plot.feature_maps(np.asarray(normal(k, (6, 6, 5)))),
            "cam": plot.cam_overlay(imgs, imgs[..., 0], ["a", "b"]),
            "attr": plot.attribution_map(imgs, imgs - 0.5, ["a", "b"]),
            "grid": plot.image_grid(imgs, ["a", "b"])}
    for name, fig in figs.items():
        assert os.path.getsize(plot.save(fig, tmp_path / f"{name}.png")) > 500
    with pytest.raises(ValueError, match=r"filter_grid: weight must be \(kh, kw, C_in, C_out\), got shape \(3, 3\)"):
        plot.filter_grid(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="cam_overlay: cam 0 has shape"):
        plot.cam_overlay(imgs, imgs[:, :5, :5, 0])
