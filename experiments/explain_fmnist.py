"""The notes' "seeing inside a CNN" experiment on a trained fmnist_cnn, in one command.

    .venv/bin/python experiments/explain_fmnist.py --checkpoint RUN_DIR [--out DIR]

RUN_DIR is a ``jaxcnn train --model fmnist_cnn --dataset fashion_mnist --out RUN_DIR``
directory. Writes under ``experiments/results/explain/``:

* ``featuremaps_convN.png`` -- every conv layer's feature maps for test example 0;
* ``maxresponse_convN.png`` -- max filter response of 8 channels per conv layer;
* ``gradcam_true.png`` / ``gradcam_wrong.png`` -- Grad-CAM at ``bn4`` (the last conv
  block, 14x14) for the true class and for each example's runner-up (wrong) class;
* ``occlusion_sizes.png`` and the occlusion table (patch sizes scaled from the notes'
  224-pixel table to 28x28) -- mean largest logit drop and the share of examples whose
  prediction changes when their most important patch is occluded;
* ``adversarial.png`` -- a targeted L-inf PGD image, its class flip, and the Grad-CAM
  for the predicted class before and after;
* ``explain_fmnist.json`` and ``README.md`` with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxcnn import inspect, plot  # noqa: E402
from jaxcnn.commands.explain import class_names, load_run  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True, help="an fmnist_cnn run directory")
    ap.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "explain"))
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100, help="max-response ascent steps")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    config, model, params, state, test = load_run(args.checkpoint)
    names = class_names(config, 10)
    n = args.examples
    x = jnp.asarray(test.images[:n], jnp.float32)
    y = np.asarray(test.labels[:n])
    logits = np.asarray(model.apply(params, state, x)[0])
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    pred = logits.argmax(-1)
    report = {"checkpoint": os.path.abspath(args.checkpoint), "examples": n,
              "accuracy_on_examples": float((pred == y).mean())}
    out = lambda name: os.path.join(args.out, name)  # noqa: E731

    # Feature maps and max filter response of each conv layer
    convs = ["conv1", "conv2", "conv3", "conv4"]
    acts = inspect.activations(model, params, state, x[:1], convs)
    for c in convs:
        plot.save(plot.feature_maps(acts[c][0], max_channels=32, title=f"{c} feature maps, test #0 "
                                    f"({names[y[0]]})"), out(f"featuremaps_{c}.png"))
    report["max_response"] = {}
    for c in convs:
        imgs, resp = inspect.max_response(model, params, state, c, list(range(8)), jax.random.PRNGKey(0),
                                          steps=args.steps, learning_rate=0.05)
        report["max_response"][c] = [round(float(r), 3) for r in resp]
        plot.save(plot.image_grid(np.asarray(imgs), [f"ch {i}: {float(r):.2f}" for i, r in enumerate(resp)],
                                  title=f"max filter response, {c}", cols=8), out(f"maxresponse_{c}.png"))

    # Grad-CAM for the true class and for a wrong class (each example's runner-up)
    show = slice(0, 8)
    wrong = np.argsort(-logits, axis=1)[:, 1]
    wrong = np.where(wrong == y, np.argsort(-logits, axis=1)[:, 0], wrong)
    for tag, tgt in (("true", y), ("wrong", wrong)):
        cams = inspect.grad_cam(model, params, state, x, "bn4", jnp.asarray(tgt), upsample=True)
        titles = [f"{names[t]} {probs[i, t]:.2f}" for i, t in enumerate(tgt)]
        plot.save(plot.cam_overlay(np.asarray(x[show]), np.asarray(cams[show]), titles[show],
                                   title=f"Grad-CAM at bn4, {tag} class"), out(f"gradcam_{tag}.png"))
    raw_t = inspect.grad_cam(model, params, state, x, "bn4", jnp.asarray(y))
    raw_w = inspect.grad_cam(model, params, state, x, "bn4", jnp.asarray(wrong))
    corr = [float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]) for a, b in zip(np.asarray(raw_t), np.asarray(raw_w))
            if np.std(a) > 0 and np.std(b) > 0]
    report["gradcam_true_vs_wrong_correlation_mean"] = float(np.mean(corr)) if corr else None

    # Occlusion table: patch sizes scaled to 28x28, stride half the patch, baseline 0
    # (the normalised data's mean pixel)
    table, maps = [], []
    for size in (3, 5, 7, 9, 14):
        stride = max(1, size // 2)
        m = np.asarray(inspect.occlusion(model, params, state, x, jnp.asarray(y), (size, size), (stride, stride)))
        drop = m[..., 0].reshape(n, -1).max(1)
        # occlude each example's most important window and see whether the prediction changes
        masks = inspect.attribution.occlusion_masks(28, 28, (size, size), (stride, stride))
        score = (masks[None] * m[None, ..., 0].transpose(1, 0, 2, 3)).sum((2, 3)) / masks.sum((1, 2))
        best = masks[score.argmax(1)]
        occluded = np.asarray(x) * (1 - best[..., None])
        flipped = np.asarray(model.apply(params, state, jnp.asarray(occluded))[0]).argmax(-1) != pred
        table.append({"patch": size, "stride": stride, "windows": len(masks),
                      "mean_max_logit_drop": round(float(drop.mean()), 3),
                      "prediction_changed": round(float(flipped.mean()), 3)})
        maps.append(m[0, ..., 0])
    report["occlusion"] = table
    plot.save(plot.attribution_map(np.repeat(np.asarray(x[:1]), len(maps), 0), np.stack(maps)[..., None],
                                   [f"patch {r['patch']}" for r in table], title="occlusion, test #0, true class"),
              out("occlusion_sizes.png"))

    # Adversarial example: targeted L-inf PGD, Grad-CAM before and after
    i = int(np.argmax(pred == y))
    goal = (int(y[i]) + 1) % 10
    lo, hi = float(test.images.min()), float(test.images.max())
    xi = x[i:i + 1]
    adv = inspect.pgd(model, params, state, xi, jnp.asarray([goal]), eps=0.25, step=0.02, iters=40, clip=(lo, hi))
    pa = np.asarray(jax.nn.softmax(model.apply(params, state, adv)[0]))[0]
    new = int(pa.argmax())
    cam_before = inspect.grad_cam(model, params, state, xi, "bn4", jnp.asarray([pred[i]]), upsample=True)
    cam_after = inspect.grad_cam(model, params, state, adv, "bn4", jnp.asarray([new]), upsample=True)
    plot.save(plot.cam_overlay(np.concatenate([np.asarray(xi), np.asarray(adv)]),
                               np.concatenate([np.asarray(cam_before), np.asarray(cam_after)]),
                               [f"clean: {names[pred[i]]} {probs[i, pred[i]]:.2f}", f"PGD: {names[new]} {pa[new]:.2f}"],
                               title=f"targeted PGD (L-inf eps 0.25) towards {names[goal]}"), out("adversarial.png"))
    raw_b = np.asarray(inspect.grad_cam(model, params, state, xi, "bn4", jnp.asarray([pred[i]])))[0]
    raw_a = np.asarray(inspect.grad_cam(model, params, state, adv, "bn4", jnp.asarray([new])))[0]
    report["adversarial"] = {"example": i, "true": names[y[i]], "clean_pred": names[pred[i]],
                             "clean_prob": round(float(probs[i, pred[i]]), 3), "goal": names[goal],
                             "adv_pred": names[new], "adv_prob": round(float(pa[new]), 3),
                             "linf": round(float(jnp.max(jnp.abs(adv - xi))), 3),
                             "cam_peak_before": [int(v) for v in np.unravel_index(raw_b.argmax(), raw_b.shape)],
                             "cam_peak_after": [int(v) for v in np.unravel_index(raw_a.argmax(), raw_a.shape)],
                             "cam_correlation": float(np.corrcoef(raw_b.ravel(), raw_a.ravel())[0, 1])}
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    with open(out("explain_fmnist.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
