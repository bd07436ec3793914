"""``jaxcnn compress --checkpoint RUN ...``: prune, fine-tune, quantise or binarise a trained
run and write a compressed run directory (``config.json``, ``metrics.jsonl`` with one record
per step, ``compressed.npz``) that ``jaxcnn eval --checkpoint DIR`` evaluates.

Steps, in order, each only when asked for: magnitude pruning (one-shot, iterative or
Zhu & Gupta gradual) with fine-tuning under the masked optimiser; int8 quantisation (post
training, or quantisation-aware fine-tuning with ``--qat``), also measured through the real
int8 inference path; binary weights (BinaryConnect / XNOR) fine-tuned from the float run.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

from . import HelpFormatter
from .errors import UsageError
from .runs import open_run, splits


def register(subparsers) -> None:
    from ..train import defaults
    from ..train.optim import OPTIMIZERS
    p = subparsers.add_parser("compress", help="prune / quantise / binarise a trained run",
                              formatter_class=HelpFormatter, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run directory of `jaxcnn train --out` (or of a compress run)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--out", required=True, help="directory of the compressed run")
    g = p.add_argument_group("pruning")
    g.add_argument("--prune", type=float, default=0.0, metavar="AMOUNT",
                   help="fraction of conv/dense weights (or filters with --structured) pruned, in [0, 1)")
    g.add_argument("--structured", action="store_true", help="prune whole output channels (L-norm of --norm)")
    g.add_argument("--norm", type=float, default=1.0, help="filter norm for --structured")
    g.add_argument("--scope", choices=("layer", "global"), default="layer", help="rank weights per layer or over all")
    g.add_argument("--schedule", choices=("oneshot", "iterative", "gradual"), default="oneshot",
                   help="prune once, in 3 equal-ratio rounds, or Zhu & Gupta's cubic ramp over fine-tuning")
    g.add_argument("--keep-dense", action="append", default=[], metavar="LAYER",
                   help="a layer left unpruned (repeatable); --structured always keeps the classifier")
    g = p.add_argument_group("quantisation and binarisation")
    g.add_argument("--quantize", choices=("none", "int8"), default="none")
    g.add_argument("--scheme", default="per_channel_symmetric",
                   help="per_channel_symmetric, per_channel_affine, per_tensor_symmetric or per_tensor_affine")
    g.add_argument("--qat", action="store_true", help="quantisation-aware fine-tuning (--finetune-epochs)")
    g.add_argument("--calibration-batches", type=int, default=8, help="batches observed for int8 activations")
    g.add_argument("--binarize", choices=("none", "binary_connect", "xnor"), default="none")
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--finetune-epochs", type=int, default=1, help="epochs after pruning, for QAT and binarisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.OPTIMIZER)
    g.add_argument("--lr", type=float, default=defaults.FINETUNE_LR, help="peak learning rate (cosine decay)")
    g.add_argument("--weight-decay", type=float, default=defaults.FINETUNE_WEIGHT_DECAY)
    g.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE)
    g.add_argument("--steps-per-epoch", type=int, default=None,
                   help="fine-tune on only the first N batches of each epoch (default: the whole training set)")
    g.add_argument("--dataset", default=None, help="default: the source run's")
    g.add_argument("--data-dir", default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _check(args):
    if not 0.0 <= args.prune < 1.0:
        raise UsageError(f"--prune must be in [0, 1) (the fraction pruned), got {args.prune}")
    if args.binarize != "none" and (args.quantize != "none" or args.prune):
        raise UsageError(f"--binarize {args.binarize} stores one bit per weight: it cannot be combined with "
                         f"--quantize or --prune")
    if args.qat and args.quantize == "none":
        raise UsageError("--qat needs --quantize int8")
    if args.finetune_epochs < 0:
        raise UsageError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    if args.schedule != "oneshot" and args.prune and args.finetune_epochs < 1:
        raise UsageError(f"--schedule {args.schedule} prunes during fine-tuning: give --finetune-epochs >= 1")
    from ..compress.quantize import SCHEMES
    if args.scheme not in SCHEMES:
        raise UsageError(f"--scheme must be one of {', '.join(SCHEMES)}, got {args.scheme!r}")


def _starting_from(model, params, state):
    """``model`` whose ``init`` returns the given params/state (fine-tuning through ``fit``)."""
    from ..models import Model
    from ..types import Layer
    inner = model.layer

    def init(key, input_shape):
        return model.output_shape(input_shape), params, state
    return Model(Layer(init, inner.apply, inner.name, inner.meta), model.name, model.input_shape,
                 model.num_classes, dict(model.hparams))


def run(args) -> int:
    _check(args)
    import jax
    import numpy as np

    from .. import compress as C
    from .. import dispatch
    from ..data import batches, steps_per_epoch
    from ..train import evaluate_model, fit, make_optimizer, make_schedule
    from ..train.metrics import MetricsWriter

    # ---------------------------------------------------------------- source run + data
    source, config, model, params, state, step = open_run(args.checkpoint, args.step)
    params, state = jax.device_get(params), jax.device_get(state)
    dataset = args.dataset or config["dataset"]
    train, test = splits(config, dataset, args.data_dir)
    steps = steps_per_epoch(len(train), args.batch_size)
    if args.steps_per_epoch is not None:
        if args.steps_per_epoch < 1:
            raise UsageError(f"--steps-per-epoch must be >= 1, got {args.steps_per_epoch}")
        steps = min(steps, args.steps_per_epoch)
    input_shape = (1,) + tuple(train.image_shape)
    loss = dispatch.cross_entropy

    os.makedirs(args.out, exist_ok=True)
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)  # a fresh record of this run's steps
    writer = MetricsWriter(metrics_path)
    t0 = time.perf_counter()

    def test_batches():
        return batches(test, 256, seed=0, epoch=0, shuffle=False, drop_remainder=False)

    def log(phase, **record):
        record = {"phase": phase, **record, "wall_s": round(time.perf_counter() - t0, 2)}
        writer.write(record)
        shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                         if k != "layers")
        print(shown, file=sys.stderr)

    def evaluate(net, p, s):
        r = evaluate_model(net, p, s, test_batches())
        return {"test_loss": r["loss"], "test_accuracy": r["accuracy"]}

    def sparsity(p):
        rep = C.sparsity_report(p)
        return {"sparsity": rep["sparsity"], "layers": {l["name"]: round(l["sparsity"], 4) for l in rep["layers"]}}

    def finetune(phase, net, p, s, tx_of, epochs):
        """Fine-tune ``net`` from ``p``/``s`` for ``epochs`` with ``tx_of(total_steps)``; logs each epoch."""
        total = epochs * steps
        tx = tx_of(total)
        result = fit(_starting_from(net, p, s), steps_per_epoch=steps, epochs=epochs, input_shape=input_shape,
                     train_batches=lambda epoch, start: batches(train, args.batch_size, seed=args.seed + 1,
                                                                epoch=epoch, start_step=start),
                     tx=tx, loss=loss, test_batches=test_batches, seed=args.seed, progress=not args.no_progress)
        for rec in result.history:
            log(phase, **{k: v for k, v in rec.items() if k != "wall_s"})
        ts = result.train_state
        return jax.device_get(ts.params), jax.device_get(ts.state), ts.opt_state

    def optimizer(total, masks=None, schedule=None):
        lr = make_schedule("cosine", args.lr, max(total, 1))
        base = make_optimizer(args.optimizer, lr, weight_decay=args.weight_decay)
        if masks is None and schedule is None:
            return base
        kw = dict(structure="filter" if args.structured else "weight", scope=args.scope, norm=args.norm,
                  skip=skip, update_every=max(1, steps // 4))
        return C.masked(base, masks, schedule=schedule, **kw)

    log("source", checkpoint=source, step=step, **evaluate(model, params, state),
        params=int(sum(np.size(x) for x in jax.tree.leaves(params))), float_bytes=C.float_bytes(params, state))

    # ---------------------------------------------------------------- pruning
    masks = None
    skip = list(args.keep_dense)
    if args.structured:  # pruning the classifier's outputs would remove classes
        skip += [n.rsplit("/", 1)[0] for n, w in C.masks.require_weights(params, "compress").items()
                 if w.shape[-1] == config["num_classes"]]
    structure = "filter" if args.structured else "weight"
    # nothing but fine-tuning asked for: the dense control (--prune 0 --finetune-epochs N)
    only_finetune = args.quantize == "none" and args.binarize == "none" and args.finetune_epochs > 0
    if args.prune or only_finetune:
        if args.schedule == "oneshot":
            masks = C.prune_masks(params, args.prune, scope=args.scope, structure=structure, norm=args.norm,
                                  skip=skip)
            params = jax.device_get(C.apply_masks(params, masks))
            log("prune", amount=args.prune, structure=structure, scope=args.scope, **evaluate(model, params, state),
                **sparsity(params))
            if args.finetune_epochs:
                params, state, _ = finetune("finetune", model, params, state,
                                            functools.partial(optimizer, masks=masks), args.finetune_epochs)
        else:
            def schedule_of(total):
                every = max(1, steps // 4)  # the masked optimiser's update_every
                if args.schedule == "gradual":  # the ramp ends on a mask update, so the target is reached
                    return C.polynomial(args.prune, 0, max(every, int(0.75 * total) // every * every))
                return C.iterative(args.prune, rounds=3, every=max(1, int(0.75 * total) // 3))
            params, state, opt_state = finetune(
                "finetune", model, params, state, lambda total: optimizer(total, schedule=schedule_of(total)),
                args.finetune_epochs)
            masks = C.current_masks(opt_state)
            params = jax.device_get(C.apply_masks(params, masks))
        log("pruned", **evaluate(model, params, state), **sparsity(params))

    # ---------------------------------------------------------------- quantisation
    if args.quantize == "int8":
        if args.qat and args.finetune_epochs:
            params, state, _ = finetune("qat", C.qat_model(model, 8, args.scheme), params, state,
                                        functools.partial(optimizer, masks=masks), args.finetune_epochs)
        log("quantize", bits=8, scheme=args.scheme, qat=args.qat,
            **evaluate(model, C.fake_quantize(params, 8, args.scheme), state))
        # the real int8 path (activations too), calibrated on training batches
        calib = [b["image"] for b, _ in zip(batches(train, args.batch_size, seed=args.seed, epoch=0),
                                            range(args.calibration_batches))]
        qp = C.calibrate(model, params, state, calib)
        run_int8 = jax.jit(lambda q, p, s, x: C.int8_apply(model, q, p, s, x))
        correct = count = 0
        for b in test_batches():
            logits = np.asarray(run_int8(qp, params, state, b["image"]))
            keep = np.asarray(b["mask"])
            correct += int(((logits.argmax(-1) == b["label"]) & keep).sum())
            count += int(keep.sum())
        log("int8_inference", calibration_batches=len(calib), test_accuracy=correct / count)

    # ---------------------------------------------------------------- binarisation
    if args.binarize != "none":
        log("binarize", method=args.binarize, **evaluate(model, C.binarize(params, args.binarize), state))
        if args.finetune_epochs:
            params, state, _ = finetune("binary_finetune", C.binary_model(model, args.binarize), params, state,
                                        optimizer, args.finetune_epochs)

    # ---------------------------------------------------------------- save + check
    path = os.path.join(args.out, C.runs.FILE)
    settings = {"file": C.runs.FILE, "source": source, "source_step": step, "step": step,
                "prune": args.prune, "structured": args.structured, "scope": args.scope, "schedule": args.schedule,
                "quantize": args.quantize, "scheme": args.scheme, "qat": args.qat, "binarize": args.binarize,
                "finetune_epochs": args.finetune_epochs}
    size = C.save_compressed(path, params, state, quantize=args.scheme if args.quantize == "int8" else None,
                             binarize=None if args.binarize == "none" else args.binarize, meta=settings)
    out_config = dict(config, compressed=settings, out=os.path.abspath(args.out), dataset=dataset)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(out_config, f, indent=2, sort_keys=True)
    p2, s2, _ = C.load_compressed(path)
    final = evaluate(model, p2, s2)
    float_size = C.float_bytes(params, state)
    log("saved", file=path, bytes=size, float_bytes=float_size, ratio=round(float_size / size, 2), **final)
    print(f"{config['model']} compressed: test_accuracy={final['test_accuracy']:.4f}, {size:,} bytes "
          f"({float_size / size:.1f}x smaller than float32) -> {args.out}")
    return 0
