"""``jaxcnn compress --checkpoint RUN ...``: prune, fine-tune, quantise or binarise a trained
run and write a compressed run directory (``config.json``, ``metrics.jsonl`` with one record
per step, ``compressed.npz``) that ``jaxcnn eval --checkpoint DIR`` evaluates.

Steps, in order, each only when asked for: magnitude pruning (one-shot, iterative or
Zhu & Gupta gradual) with fine-tuning under the masked optimiser; int8 quantisation (post
training, or quantisation-aware fine-tuning with ``--qat``), also measured through the real
int8 inference path; binary weights (BinaryConnect / XNOR) fine-tuned from the float run.
"""
from __future__ import annotations

import os
import sys
import time

from . import HelpFormatter
from .errors import UsageError
from .runs import add_trust_flag, open_run, splits


def register(subparsers) -> None:
    from ..train import defaults
    from ..train.optim import OPTIMIZERS
    p = subparsers.add_parser("compress", help="prune / quantise / binarise a trained run",
                              formatter_class=HelpFormatter, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run directory of `jaxcnn train --out` (or of a compress run)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--out", required=True, help="directory of the compressed run (a new one; an existing run is "
                                                "refused unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="move an existing run in --out aside (to OUT.old-<time>; nothing is deleted)")
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
    add_trust_flag(p)
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
    from ..compress import check_settings
    try:       # the pipeline's numbers, checked where the library defines them
        check_settings(batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       finetune_epochs=args.finetune_epochs, calibration_batches=args.calibration_batches,
                       steps_per_epoch=args.steps_per_epoch, prune=args.prune, flags=True)
    except ValueError as e:
        raise UsageError(str(e)) from None
    from ..compress.quantize import SCHEMES
    if args.scheme not in SCHEMES:
        raise UsageError(f"--scheme must be one of {', '.join(SCHEMES)}, got {args.scheme!r}")


def _check_out(args, source: str) -> None:
    """``--out`` follows ``train``'s contract: never the source run (or inside it, or
    holding it), never an existing run unless ``--overwrite`` (which moves it aside
    once the new run is complete)."""
    from ..train import rundir
    out, src = os.path.realpath(args.out), os.path.realpath(source)
    if out == src or os.path.commonpath([out, src]) in (out, src):
        raise UsageError(f"--out {args.out} is (or contains, or lies inside) the source run {source}; write the "
                         f"compressed run to another directory")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {args.out} is a file, not a run directory")
    if rundir.holds_run(out) and not args.overwrite:
        raise UsageError(f"--out {args.out} already holds a run; pass --overwrite to move it aside (nothing is "
                         f"deleted), or choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not rundir.holds_run(out) and not args.overwrite:
        raise UsageError(f"--out {args.out} is a non-empty directory; choose a new or empty one, or pass "
                         f"--overwrite to move it aside")


def _starting_from(model, params, state):
    """``model`` whose ``init`` returns the given params/state (fine-tuning through ``fit``)."""
    from ..models import Model
    from ..types import Layer
    inner = model.layer

    def init(key, input_shape):
        return model.output_shape(input_shape), params, state
    return Model(Layer(init, inner.apply, inner.name, inner.meta), model.name, model.input_shape,
                 model.num_classes, dict(model.hparams))


class _Compression:
    """One ``jaxcnn compress`` run: the source's model and data, the metrics record, and
    each step of the pipeline as a method (prune, quantise, binarise, save), written into
    ``work_dir`` (moved to ``--out`` when complete)."""

    def __init__(self, args, work_dir: str):
        import jax
        from .. import compress as C
        from ..data import steps_per_epoch
        from ..train.metrics import MetricsWriter
        self.args, self.C, self.work_dir = args, C, work_dir
        run = open_run(args.checkpoint, args.step, args.model)
        self.source, self.config, self.model, self.step = run.run_dir, run.config, run.model, run.step
        self.params, self.state = jax.device_get(run.params), jax.device_get(run.state)
        self.dataset = args.dataset or self.config["dataset"]
        self.train, self.test = splits(self.config, self.dataset, args.data_dir)
        self.steps = steps_per_epoch(len(self.train), args.batch_size)
        if self.steps < 1:
            raise UsageError(f"--batch-size {args.batch_size} exceeds the {len(self.train)} training examples")
        if args.steps_per_epoch is not None:
            self.steps = min(self.steps, args.steps_per_epoch)
        self.input_shape = (1,) + tuple(self.train.image_shape)
        self.masks = None
        self.int8_input_scales = None   # set by the int8 step's calibration, kept in the file
        self.skip = list(args.keep_dense)
        self.writer = MetricsWriter(os.path.join(work_dir, "metrics.jsonl"))
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------ shared pieces
    def log(self, phase, **record):
        record = {"phase": phase, **record, "wall_s": round(time.perf_counter() - self.t0, 2)}
        self.writer.write(record)
        shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                         if k != "layers")
        print(shown, file=sys.stderr)

    def test_batches(self):
        from ..data import batches
        from ..train import defaults
        return batches(self.test, defaults.EVAL_BATCH_SIZE, seed=0, epoch=0, shuffle=False, drop_remainder=False)

    def evaluate(self, net, params, state):
        from ..train import evaluate_model
        r = evaluate_model(net, params, state, self.test_batches())
        return {"test_loss": r["loss"], "test_accuracy": r["accuracy"]}

    def sparsity(self, params):
        rep = self.C.sparsity_report(params)
        return {"sparsity": rep["sparsity"], "layers": {l["name"]: round(l["sparsity"], 4) for l in rep["layers"]}}

    def optimizer(self, total, masks=None, schedule=None):
        from ..train import make_optimizer, make_schedule
        args = self.args
        base = make_optimizer(args.optimizer, make_schedule("cosine", args.lr, max(total, 1)),
                              weight_decay=args.weight_decay)
        if masks is None and schedule is None:
            return base
        return self.C.masked(base, masks, schedule=schedule, structure="filter" if args.structured else "weight",
                             scope=args.scope, norm=args.norm, skip=self.skip, update_every=max(1, self.steps // 4))

    def finetune(self, phase, net, tx_of, epochs):
        """Fine-tune ``net`` from the current params for ``epochs`` with ``tx_of(total_steps)``
        (under the default backprop mode, recorded); logs each epoch; returns the opt state."""
        import jax
        from .. import dispatch
        from ..data import batches
        from ..train import defaults, fit
        args, train = self.args, self.train
        result = fit(_starting_from(net, self.params, self.state), steps_per_epoch=self.steps, epochs=epochs,
                     input_shape=self.input_shape, tx=tx_of(epochs * self.steps), loss=dispatch.cross_entropy,
                     train_batches=lambda epoch, start: batches(train, args.batch_size, seed=args.seed + 1,
                                                                epoch=epoch, start_step=start),
                     test_batches=self.test_batches, seed=args.seed, backprop=defaults.BACKPROP,
                     progress=not args.no_progress)
        for rec in result.history:
            self.log(phase, **{k: v for k, v in rec.items() if k != "wall_s"})
        ts = result.train_state
        self.params, self.state = jax.device_get(ts.params), jax.device_get(ts.state)
        return ts.opt_state

    # ------------------------------------------------------------ the pipeline
    def report_source(self):
        import jax
        import numpy as np
        before = self.evaluate(self.model, self.params, self.state)
        self.source_accuracy = before["test_accuracy"]
        self.log("source", checkpoint=self.source, step=self.step, **before,
                 params=int(sum(np.size(x) for x in jax.tree.leaves(self.params))),
                 float_bytes=self.C.float_bytes(self.params, self.state))

    def prune(self):
        import functools
        import jax
        args, C = self.args, self.C
        if args.structured:  # pruning the classifier's outputs would remove classes
            self.skip += [n.rsplit("/", 1)[0] for n, w in C.masks.require_weights(self.params, "compress").items()
                          if w.shape[-1] == self.config["num_classes"]]
        structure = "filter" if args.structured else "weight"
        # nothing but fine-tuning asked for: the dense control (--prune 0 --finetune-epochs N)
        only_finetune = args.quantize == "none" and args.binarize == "none" and args.finetune_epochs > 0
        if not (args.prune or only_finetune):
            return
        if args.schedule == "oneshot":
            self.masks = C.prune_masks(self.params, args.prune, scope=args.scope, structure=structure,
                                       norm=args.norm, skip=self.skip)
            self.params = jax.device_get(C.apply_masks(self.params, self.masks))
            self.log("prune", amount=args.prune, structure=structure, scope=args.scope,
                     **self.evaluate(self.model, self.params, self.state), **self.sparsity(self.params))
            if args.finetune_epochs:
                self.finetune("finetune", self.model, functools.partial(self.optimizer, masks=self.masks),
                              args.finetune_epochs)
        else:
            opt_state = self.finetune("finetune", self.model,
                                      lambda total: self.optimizer(total, schedule=self._sparsity_schedule(total)),
                                      args.finetune_epochs)
            self.masks = C.current_masks(opt_state)
            self.params = jax.device_get(C.apply_masks(self.params, self.masks))
        self.log("pruned", **self.evaluate(self.model, self.params, self.state), **self.sparsity(self.params))

    def _sparsity_schedule(self, total):
        every = max(1, self.steps // 4)  # the masked optimiser's update_every
        if self.args.schedule == "gradual":  # the ramp ends on a mask update, so the target is reached
            return self.C.polynomial(self.args.prune, 0, max(every, int(0.75 * total) // every * every))
        return self.C.iterative(self.args.prune, rounds=3, every=max(1, int(0.75 * total) // 3))

    def quantize(self):
        import functools

        from ..config import int8_compiler_options
        from ..data import batches
        from ..train.throughput import evaluate_model_throughput
        args, C, model = self.args, self.C, self.model
        if args.quantize != "int8":
            return
        if args.qat and args.finetune_epochs:
            self.finetune("qat", C.qat_model(model, 8, args.scheme), functools.partial(self.optimizer, masks=self.masks),
                          args.finetune_epochs)
        self.log("quantize", bits=8, scheme=args.scheme, qat=args.qat,
                 **self.evaluate(model, C.fake_quantize(self.params, 8, args.scheme), self.state))
        # the real int8 path (activations too), calibrated on training batches
        calib = [b["image"] for b, _ in zip(batches(self.train, args.batch_size, seed=args.seed, epoch=0),
                                            range(args.calibration_batches))]
        qp = C.calibrate(model, self.params, self.state, calib)
        self.int8_input_scales = C.input_scales_meta(qp)

        def forward(p, s, x):
            return C.int8_apply(model, qp, p, s, x)
        result = evaluate_model_throughput(model, self.params, self.state, self.test_batches(), forward=forward,
                                           compiler_options=int8_compiler_options())
        self.log("int8_inference", calibration_batches=len(calib), test_accuracy=result["accuracy"],
                 images_per_sec=round(result["images_per_sec"], 1))

    def binarize(self):
        args, C = self.args, self.C
        if args.binarize == "none":
            return
        self.log("binarize", method=args.binarize,
                 **self.evaluate(self.model, C.binarize(self.params, args.binarize), self.state))
        if args.finetune_epochs:
            self.finetune("binary_finetune", C.binary_model(self.model, args.binarize), self.optimizer,
                          args.finetune_epochs)

    def save(self, out: str) -> dict:
        """Write ``compressed.npz`` and ``config.json`` into the work directory, read the
        file back and evaluate it (what ``jaxcnn eval`` will see)."""
        from ..train import defaults, rundir
        args, C = self.args, self.C
        path = os.path.join(self.work_dir, C.runs.FILE)
        settings = {"file": C.runs.FILE, "source": self.source, "source_step": self.step, "step": self.step,
                    "prune": args.prune, "structured": args.structured, "scope": args.scope,
                    "schedule": args.schedule, "quantize": args.quantize, "scheme": args.scheme, "qat": args.qat,
                    "binarize": args.binarize, "finetune_epochs": args.finetune_epochs,
                    "finetune_backprop": defaults.BACKPROP}
        meta = dict(settings)
        if self.int8_input_scales is not None:
            meta[C.INPUT_SCALES] = self.int8_input_scales
        size = C.save_compressed(path, self.params, self.state,
                                 quantize=args.scheme if args.quantize == "int8" else None,
                                 binarize=None if args.binarize == "none" else args.binarize, meta=meta)
        rundir.write_config(self.work_dir, dict(self.config, compressed=settings, out=out, dataset=self.dataset))
        p2, s2, _ = C.load_compressed(path)
        final = self.evaluate(self.model, p2, s2)
        float_size = C.float_bytes(self.params, self.state)
        self.log("saved", file=os.path.join(out, C.runs.FILE), bytes=size, float_bytes=float_size,
                 ratio=round(float_size / size, 2), **final)
        return {"bytes": size, "float_bytes": float_size, **final}


def run(args) -> int:
    import shutil
    import tempfile

    from ..train import rundir
    _check(args)
    source = rundir.run_directory(args.checkpoint)
    _check_out(args, source)
    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    # built beside --out and moved there when complete: a failure leaves --out as it was
    work_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        job = _Compression(args, work_dir)
        job.report_source()
        job.prune()
        job.quantize()
        job.binarize()
        result = job.save(out)
        if os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        elif os.path.lexists(out):        # --overwrite (checked by _check_out): keep the old one beside
            print(f"moved the existing {out} to {rundir.move_aside(out)}", file=sys.stderr)
        os.replace(work_dir, out)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    print(_report(job.config["model"], result, job.source_accuracy, args.out))
    drop = job.source_accuracy - result["test_accuracy"]
    if drop > ACCURACY_DROP_WARNING:
        print(f"jaxcnn compress: warning: test accuracy fell by {100 * drop:.1f} points "
              f"({job.source_accuracy:.4f} -> {result['test_accuracy']:.4f}); fine-tune longer "
              f"(--finetune-epochs) or compress less", file=sys.stderr)
    return 0


ACCURACY_DROP_WARNING = 0.05     # warn when the compressed model loses more than 5 points


def _report(model: str, result: dict, source_accuracy: float, out: str) -> str:
    """The last line: accuracy against the source's, and the size against float32 in
    words that stay true when the file is not smaller."""
    size, float_size = result["bytes"], result["float_bytes"]
    if size < float_size:
        ratio = f"{float_size / size:.1f}x smaller than float32"
    else:
        ratio = f"not smaller than float32 ({float_size:,} bytes): nothing was stored more compactly"
    change = 100 * (result["test_accuracy"] - source_accuracy)
    return (f"{model} compressed: test_accuracy={result['test_accuracy']:.4f} ({change:+.1f} points from the "
            f"source's {source_accuracy:.4f}), {size:,} bytes ({ratio}) -> {out}")
