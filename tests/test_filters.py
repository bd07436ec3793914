"""Classic filters (003, 000) on scikit-learn's sample images."""
import numpy as np
import pytest
from sklearn.datasets import load_sample_image

from jaxcnn.filters import CLASSIC_FILTERS, apply_filter


@pytest.fixture(scope="module")
def china_grey():
    return load_sample_image("china.jpg").astype(np.float32).sum(axis=2)   # as in 000: sum channels


def test_valid_3x3_on_china_is_425x638(china_grey):
    assert china_grey.shape == (427, 640)
    assert apply_filter(china_grey, CLASSIC_FILTERS["vertical_edge"]).shape == (425, 638)
    assert apply_filter(china_grey, CLASSIC_FILTERS["blur_10x10"]).shape == (418, 631)
    assert apply_filter(china_grey, CLASSIC_FILTERS["checkerboard"]).shape == (426, 639)


def test_vertical_edge_matches_direct_sum(china_grey):
    y = apply_filter(china_grey, CLASSIC_FILTERS["vertical_edge"])
    a = china_grey.astype(np.float64)
    direct = (a[:-2, 2:] + a[1:-1, 2:] + a[2:, 2:]) - (a[:-2, :-2] + a[1:-1, :-2] + a[2:, :-2])
    np.testing.assert_allclose(y, direct, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("name", ["box_blur", "gaussian_3x3", "gaussian_5x5", "unsharp_5x5"])
def test_smoothing_kernels_preserve_constant_images(name):
    k = CLASSIC_FILTERS[name]
    assert np.isclose(k.sum(), 1.0)
    y = apply_filter(np.full((12, 12), 7.0), k)
    np.testing.assert_allclose(y, 7.0, rtol=1e-6)


def test_unsharp_centre_and_edges_zero_on_constants():
    k = CLASSIC_FILTERS["unsharp_5x5"]
    assert np.isclose(k[2, 2], 476 / 256) and np.isclose(k[0, 0], -1 / 256)
    for name in ("vertical_edge", "horizontal_edge", "checkerboard"):
        np.testing.assert_allclose(apply_filter(np.full((6, 6), 3.0), CLASSIC_FILTERS[name]), 0.0)


def test_colour_image_filtered_per_channel_matches_direct_correlation():
    """Each channel of a colour image cross-correlated with the kernel on its own, zero
    padded to the same size: y[i, j, c] = sum_ab pad(x)[i + a, j + b, c] k[a, b]."""
    img = load_sample_image("flower.jpg")[:40, :50].astype(np.float32)
    k = CLASSIC_FILTERS["gaussian_3x3"]
    y = apply_filter(img, k, padding="same")
    assert y.shape == img.shape
    padded = np.pad(img.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    direct = sum(padded[a:a + 40, b:b + 50, :] * k[a, b] for a in range(3) for b in range(3))
    np.testing.assert_allclose(y, direct, rtol=1e-5, atol=1e-3)
    # the channels really differ, so a filter mixing or reusing one channel would show
    assert np.abs(direct[..., 0] - direct[..., 2]).max() > 10
