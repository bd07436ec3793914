"""Classic image-processing kernels from the lecture notes (003 Fig. 12.5, 000), and a
helper that applies one to a grey or colour image with ``jaxcnn.ops.conv``.

Kernels are 2-D numpy arrays used as cross-correlation kernels (the deep-learning
convention), exactly as the notes apply them with ``F.conv2d``.
"""
from __future__ import annotations

import numpy as np

from .ops import conv

_GAUSS5 = np.array([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6], [4, 16, 24, 16, 4],
                    [1, 4, 6, 4, 1]], dtype=np.float64)
_UNSHARP5 = _GAUSS5.copy()
_UNSHARP5[2, 2] = -476

CLASSIC_FILTERS: dict[str, np.ndarray] = {
    "box_blur": np.ones((3, 3)) / 9.0,
    "gaussian_3x3": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16.0,
    "gaussian_5x5": _GAUSS5 / 256.0,
    "unsharp_5x5": -_UNSHARP5 / 256.0,
    "vertical_edge": np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], dtype=np.float64),
    "horizontal_edge": np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], dtype=np.float64),
    "checkerboard": np.array([[1, -1], [-1, 1]], dtype=np.float64),
    "blur_10x10": np.ones((10, 10)),
}


def apply_filter(image, kernel, *, padding=0):
    """Cross-correlate a (H, W) grey or (H, W, C) colour image with a 2-D kernel.

    Colour images are filtered per channel (a depthwise conv); ``padding`` is any
    padding ``jaxcnn.ops.conv`` accepts ("valid" by default: a k x k kernel shrinks each
    side by k - 1, so 3x3 on 427x640 gives 425x638).
    """
    image = np.asarray(image, dtype=np.float32)
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim != 2:
        raise ValueError(f"apply_filter: kernel must be 2-D, got shape {kernel.shape}")
    grey = image.ndim == 2
    x = image[None, :, :, None] if grey else image[None]
    c = x.shape[-1]
    w = np.repeat(kernel[:, :, None, None], c, axis=3)      # (kh, kw, 1, C): depthwise
    y = np.asarray(conv(x, w, padding=padding, groups=c))[0]
    return y[:, :, 0] if grey else y
