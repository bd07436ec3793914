"""Pictures of what a CNN computes, drawn with matplotlib's object API (``Figure`` and the
Agg canvas: no pyplot, no global backend or state), each function returning a ``Figure``.

* :func:`filter_grid` -- a conv layer's kernels, one tile per (output, input) channel pair.
* :func:`feature_maps` -- the channels of one example's activation.
* :func:`image_grid` -- any stack of images (activation-maximisation results).
* :func:`cam_overlay` -- CAM heat maps over their images, titled with class and score.
* :func:`attribution_map` -- an attribution (saliency, IG, occlusion) beside its image.
* :func:`training_curves` -- loss and accuracy from a run's ``metrics.jsonl``.

Save with :func:`save` (PNG, parent directories created).
"""
from .figures import (attribution_map, cam_overlay, feature_maps, filter_grid, image_grid,  # noqa: F401
                      save, training_curves)
