"""The figures of docs/gallery.md, from a real run: trains digits_cnn on the embedded 8x8
digits (a few seconds on 2 CPU cores) and draws each of jaxcnn.plot's figures from it.

    .venv/bin/python experiments/gallery.py [--out docs/gallery] [--epochs 8]

Writes ``training_curves.png``, ``filters.png``, ``feature_maps.png``, ``gradcam.png``,
``integrated_gradients.png``, ``saliency.png``, ``fgsm.png`` and ``max_response.png``
into ``--out``, each under ~100 kB, and prints one line per file.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxcnn import inspect, plot  # noqa: E402
from jaxcnn.cli import main as jaxcnn  # noqa: E402
from jaxcnn.commands.runs import open_run, splits  # noqa: E402

DPI = 90
EXAMPLES = (0, 1, 2, 3)


def draw(run_dir: str, out: str) -> list[str]:
    """Every gallery figure of the run in ``run_dir``, written into ``out``; their paths."""
    run = open_run(run_dir)
    model, params, state = run.model, run.params, run.state
    _, test = splits(run.config)
    x = jnp.asarray(test.images[list(EXAMPLES)])
    labels = np.asarray(test.labels[list(EXAMPLES)])
    probs = np.asarray(jax.nn.softmax(model.apply(params, state, x)[0]))
    pred = probs.argmax(-1)
    names = [str(k) for k in range(probs.shape[1])]
    titles = [f"#{i} true {names[t]}, pred {names[p]} ({probs[j, p]:.2f})"
              for j, (i, t, p) in enumerate(zip(EXAMPLES, labels, pred))]
    written = []

    def save(fig, name):
        written.append(plot.save(fig, os.path.join(out, name), dpi=DPI))

    save(plot.training_curves(run_dir, title="digits_cnn on digits: loss and accuracy per epoch"), "training_curves.png")
    save(plot.filter_grid(np.asarray(params["conv1"]["weight"]), max_filters=16, title="conv1: 3x3 kernels"),
         "filters.png")
    acts = inspect.activations(model, params, state, x[:1], "act1")["act1"]
    save(plot.feature_maps(np.asarray(acts[0]), layer="act1", title=titles[0]), "feature_maps.png")
    cams = inspect.grad_cam(model, params, state, x, "act1", jnp.asarray(pred), method="gradcam", upsample=True)
    save(plot.cam_overlay(np.asarray(x), np.asarray(cams), titles, title="Grad-CAM at act1, predicted class"),
         "gradcam.png")
    ig = inspect.integrated_gradients(model, params, state, x, jnp.asarray(pred), steps=32)
    save(plot.attribution_map(np.asarray(x), np.asarray(ig), titles, title="integrated gradients, predicted class"),
         "integrated_gradients.png")
    sal = inspect.saliency(model, params, state, x, jnp.asarray(pred))
    save(plot.attribution_map(np.asarray(x), np.asarray(sal), titles, title="saliency |d logit / d x|",
                              signed=False), "saliency.png")
    lo, hi = float(test.images.min()), float(test.images.max())
    # FGSM on 32 test images; shown: two whose prediction it flips and one it does not
    many = jnp.asarray(test.images[:32])
    many_labels = np.asarray(test.labels[:32])
    eps = 0.4
    adv = np.asarray(inspect.fgsm(model, params, state, many, jnp.asarray(many_labels), eps, clip=(lo, hi)))
    p0 = np.asarray(jax.nn.softmax(model.apply(params, state, many)[0]))
    p1 = np.asarray(jax.nn.softmax(model.apply(params, state, jnp.asarray(adv))[0]))
    flipped = [i for i in range(32) if p1[i].argmax() != p0[i].argmax()]
    kept = [i for i in range(32) if p1[i].argmax() == p0[i].argmax()]
    show = flipped[:2] + kept[:1]
    save(plot.adversarial_examples(np.asarray(many)[show], adv[show], p0[show], p1[show], names, many_labels[show],
                                   eps=eps, method="FGSM (untargeted)", indices=show), "fgsm.png")
    channels = list(range(8))
    imgs, resp = inspect.max_response(model, params, state, "act2", channels, jax.random.PRNGKey(0),
                                      input_shape=x.shape[1:], steps=64)
    save(plot.image_grid(np.asarray(imgs), [f"ch {c}: {float(r):.2f}" for c, r in zip(channels, resp)],
                         title="inputs that maximise act2's channels", cols=4), "max_response.png")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "gallery")))
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "digits")
        if jaxcnn(["train", "--epochs", str(args.epochs), "--out", run_dir, "--no-progress"]) != 0:
            return 1
        for path in draw(run_dir, args.out):
            print(f"{path} ({os.path.getsize(path) / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
