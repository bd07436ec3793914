"""Pictures of what a CNN computes, drawn with matplotlib's object API (``Figure`` and the
Agg canvas: no pyplot, no global backend or state), each function returning a ``Figure``.

* :func:`filter_grid` -- a conv layer's kernels, one tile per (output, input) channel pair.
* :func:`feature_maps` -- the channels of one example's activation, on one shared colour
  scale, the layer named.
* :func:`image_grid` -- any stack of images (activation-maximisation results).
* :func:`cam_overlay` -- CAM heat maps alpha-blended over the grey images
  (pytorch-grad-cam's ``show_cam_on_image`` look; :func:`blend_cam` gives the array).
* :func:`attribution_map` -- attributions (saliency, IG, occlusion) overlaid on the grey
  image with a diverging colour map and a colour bar (Captum's ``blended_heat_map``).
* :func:`adversarial_examples` -- FGSM/PGD: original, adversarial and perturbation,
  with class names, probabilities and "prediction unchanged" when the attack failed.
* :func:`training_curves` -- loss and accuracy from a run's ``metrics.jsonl``, integer
  epoch ticks, log-scale loss for long runs.

Save with :func:`save` (PNG, parent directories created).
"""
from .figures import (adversarial_examples, attribution_map, attribution_scale, blend_cam,  # noqa: F401
                      cam_overlay, feature_maps, filter_grid, image_grid, read_metrics, save, to_grey,
                      training_curves)
