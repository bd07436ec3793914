"""``jaxcnn explain --checkpoint RUN --method M [--layer NAME] --index 0,5,9 --target pred|true|K
--out DIR``: explain a saved run's predictions on test examples.

Writes, per example, ``<method>_<index>.png`` (the picture) and ``<method>_<index>.npy``
(the raw array: the CAM at the layer's resolution, the attribution like the input, the
adversarial image); ``maxresponse`` writes one grid and one ``(channels, H, W, C)`` array.
"""
from __future__ import annotations

import os

from .errors import UsageError
from .runs import add_trust_flag, open_run, splits

CAM = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")
ATTR = ("saliency", "ig", "smoothgrad", "occlusion")
METHODS = CAM + ATTR + ("maxresponse", "fgsm", "pgd", "featuremaps")


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="Grad-CAM, attributions, max filter response or adversarial "
                                              "images for a saved run's test examples")
    p.add_argument("--checkpoint", required=True, help="the run directory (holding config.json and checkpoints/)")
    p.add_argument("--method", required=True, choices=METHODS, metavar="METHOD",
                   help="one of " + ", ".join(METHODS))
    p.add_argument("--layer", default=None, help="layer path as `jaxcnn summary` prints it (CAM methods: "
                                                 "default the last feature map; required for maxresponse)")
    p.add_argument("--index", default="0", help="comma-separated test-split indices (default: 0)")
    p.add_argument("--target", default="pred", help="pred (predicted class), true (label) or a class number")
    p.add_argument("--out", required=True, help="output directory for PNG and .npy files")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--window", type=int, default=None, help="occlusion window side (default: H // 4)")
    p.add_argument("--stride", type=int, default=None, help="occlusion stride (default: window // 2)")
    p.add_argument("--steps", type=int, default=50, help="ig path points / maxresponse / pgd iterations")
    p.add_argument("--eps", type=float, default=0.1, help="fgsm/pgd perturbation size (normalised pixel units)")
    p.add_argument("--channels", default="0,1,2,3,4,5,6,7", help="maxresponse channels (comma-separated)")
    add_trust_flag(p)
    p.set_defaults(func=run)


def _ints(text, flag):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers, got {text!r}") from None


def load_run(run_dir, step=None, data_dir=None, trusted_model=None):
    """``(config, model, params, state, test_split)`` of a saved run (``trusted_model``:
    see :func:`jaxcnn.train.rundir.check_trusted`)."""
    _, config, model, params, state, _ = open_run(run_dir, step, trusted_model)
    return config, model, params, state, splits(config, data_dir=data_dir)[1]


def class_names(config, k):
    if config.get("dataset") == "fashion_mnist":
        from ..data.tfds_local import FASHION_MNIST_CLASSES
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(k)]


def last_feature_map(model, params, state, x):
    """The last layer path whose output is a (batch, h, w, C) map with h, w > 1."""
    import jax

    from ..inspect.activations import layer_names
    names = layer_names(model, params, state, x)
    from ..inspect import activations
    shapes = jax.eval_shape(lambda p, s, x: activations(model, p, s, x, names), params, state, x)
    maps = [n for n in names if len(shapes[n].shape) == 4 and shapes[n].shape[1] > 1]
    if not maps:
        raise UsageError("the model has no layer with a (batch, h, w, C) output to explain; pass --layer")
    return maps[-1]


def check_args(args) -> None:
    """The numeric flags, before the run is opened: a zero window or stride was silently
    replaced by the default, a NaN or negative eps gave NaN images."""
    import math
    for flag, value in (("--window", args.window), ("--stride", args.stride)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1 (pixels), got {value}")
    if args.window is not None and args.stride is not None and args.stride > args.window:
        raise UsageError(f"--stride must be at most --window (as in Captum; pixels between windows would get "
                         f"no attribution), got --stride {args.stride} --window {args.window}")
    if not math.isfinite(args.eps) or args.eps < 0:
        raise UsageError(f"--eps must be a finite number >= 0, got {args.eps}")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")


def run(args) -> int:
    check_args(args)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .. import inspect, plot

    config, model, params, state, test = load_run(args.checkpoint, args.step, args.data_dir, args.model)
    idx = _ints(args.index, "--index")
    n = len(test.labels)
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx:
        raise UsageError(f"--index must name test examples in [0, {n}), got {args.index!r}")
    x = jnp.asarray(test.images[np.asarray(idx)], jnp.float32)
    labels = np.asarray(test.labels)[np.asarray(idx)]
    logits = np.asarray(model.apply(params, state, x)[0])
    k = logits.shape[-1]
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    pred = logits.argmax(-1)
    names = class_names(config, k)
    if args.target == "pred":
        target = pred
    elif args.target == "true":
        target = labels
    else:
        try:
            t = int(args.target)
        except ValueError:
            raise UsageError(f"--target must be pred, true or a class number, got {args.target!r}") from None
        if not 0 <= t < k:
            raise UsageError(f"--target class must be in [0, {k}), got {t}")
        target = np.full(len(idx), t)
    tj = jnp.asarray(target)
    titles = [f"#{i} true {names[l]} | pred {names[p]} {probs[j, p]:.2f} | target {names[t]} {probs[j, t]:.2f}"
              for j, (i, l, p, t) in enumerate(zip(idx, labels, pred, target))]
    os.makedirs(args.out, exist_ok=True)
    m = args.method
    written = []

    def out(name):
        return os.path.join(args.out, name)

    if m in CAM:
        layer = args.layer or last_feature_map(model, params, state, x)
        raw = np.asarray(inspect.grad_cam(model, params, state, x, layer, tj, method=m))
        up = np.asarray(inspect.grad_cam(model, params, state, x, layer, tj, method=m, upsample=True))
        for j, i in enumerate(idx):
            np.save(out(f"{m}_{i}.npy"), raw[j])
            fig = plot.cam_overlay(np.asarray(x[j:j + 1]), up[j:j + 1], [titles[j]], title=f"{m} at {layer}")
            written.append(plot.save(fig, out(f"{m}_{i}.png")))
    elif m in ATTR:
        if m == "saliency":
            a = inspect.saliency(model, params, state, x, tj)
        elif m == "ig":
            a = inspect.integrated_gradients(model, params, state, x, tj, steps=args.steps)
        elif m == "smoothgrad":
            a = inspect.smoothgrad(model, params, state, x, tj, key=jax.random.PRNGKey(0), samples=16, stdev=0.15)
        else:
            # `is None`, not `or`: an explicit 0 is refused (check_args), never replaced
            w = args.window if args.window is not None else max(1, x.shape[1] // 4)
            stride = args.stride if args.stride is not None else max(1, w // 2)
            a = inspect.occlusion(model, params, state, x, tj, (w, w), stride)
        a = np.asarray(a)
        for j, i in enumerate(idx):
            np.save(out(f"{m}_{i}.npy"), a[j])
            fig = plot.attribution_map(np.asarray(x[j:j + 1]), a[j:j + 1], [titles[j]], title=m,
                                       signed=m not in ("saliency", "smoothgrad"))
            written.append(plot.save(fig, out(f"{m}_{i}.png")))
    elif m == "featuremaps":
        layer = args.layer or last_feature_map(model, params, state, x)
        acts = np.asarray(inspect.activations(model, params, state, x, layer)[layer])
        if acts.ndim != 4:
            raise UsageError(f"--layer {layer!r} outputs shape {acts.shape}, not a (batch, h, w, C) feature map")
        for j, i in enumerate(idx):
            np.save(out(f"featuremaps_{i}.npy"), acts[j])
            written.append(plot.save(plot.feature_maps(acts[j], title=f"{layer}: {titles[j]}"),
                                     out(f"featuremaps_{i}.png")))
    elif m == "maxresponse":
        if not args.layer:
            raise UsageError("--method maxresponse needs --layer (a path from `jaxcnn summary`)")
        chans = _ints(args.channels, "--channels")
        imgs, resp = inspect.max_response(model, params, state, args.layer, chans, jax.random.PRNGKey(0),
                                          input_shape=x.shape[1:], steps=args.steps)
        np.save(out("maxresponse.npy"), np.asarray(imgs))
        fig = plot.image_grid(np.asarray(imgs), [f"ch {c}: {float(r):.2f}" for c, r in zip(chans, resp)],
                              title=f"max response at {args.layer}")
        written.append(plot.save(fig, out("maxresponse.png")))
    else:   # fgsm / pgd: away from the label, or towards --target K when a class is given
        targeted = args.target not in ("pred", "true")
        goal = jnp.asarray(target if targeted else labels)
        lo, hi = float(np.min(test.images)), float(np.max(test.images))
        if m == "fgsm":
            adv = inspect.fgsm(model, params, state, x, goal, args.eps, targeted=targeted, clip=(lo, hi))
        else:
            adv = inspect.pgd(model, params, state, x, goal, args.eps, args.eps / 4, args.steps,
                              targeted=targeted, clip=(lo, hi))
        adv = np.asarray(adv)
        ap = np.asarray(jax.nn.softmax(model.apply(params, state, jnp.asarray(adv))[0]))
        for j, i in enumerate(idx):
            np.save(out(f"{m}_{i}.npy"), adv[j])
            fig = plot.adversarial_examples(np.asarray(x[j:j + 1]), adv[j:j + 1], probs[j:j + 1], ap[j:j + 1], names,
                                            labels[j:j + 1], eps=args.eps, method=m, indices=[i])
            written.append(plot.save(fig, out(f"{m}_{i}.png")))
    for w in written:
        print(w)
    return 0
