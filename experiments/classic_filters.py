"""The notes' classic filters on scikit-learn's sample images (000, 003 Fig. 12.5).

Run: python experiments/classic_filters.py -> experiments/results/classic_filters.png
Prints each filter's output size (a valid 3x3 filter on 427x640 gives 425x638).
"""
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_sample_image  # noqa: E402

from jaxcnn.filters import CLASSIC_FILTERS, apply_filter  # noqa: E402

results = pathlib.Path(__file__).parent / "results"
results.mkdir(exist_ok=True)
grey = load_sample_image("china.jpg").astype(np.float32).sum(axis=2)
fig, axes = plt.subplots(3, 3, figsize=(15, 10))
axes = axes.ravel()
axes[0].imshow(grey, cmap="gray")
axes[0].set_title(f"china.jpg summed channels {grey.shape}")
for ax, (name, k) in zip(axes[1:], CLASSIC_FILTERS.items()):
    y = apply_filter(grey, k)
    print(f"{name:16s} kernel {k.shape} -> output {y.shape}")
    ax.imshow(y, cmap="gray")
    ax.set_title(f"{name} {y.shape}")
for ax in axes:
    ax.axis("off")
fig.tight_layout()
fig.savefig(results / "classic_filters.png", dpi=60)
print("wrote", results / "classic_filters.png")
