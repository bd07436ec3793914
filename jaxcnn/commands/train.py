"""``jaxcnn train``: train a zoo model on a dataset (default: a small CNN on the
embedded 8x8 digits, under a minute on 2 CPU cores), writing ``DIR/config.json``,
``DIR/metrics.jsonl`` (one line per evaluation) and orbax checkpoints ``DIR/checkpoints``."""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

from . import HelpFormatter
from .errors import UsageError

DEFAULT_MODEL = "digits_cnn"
AUGMENTS = ("none", "crop", "flip", "crop_flip")


def register(subparsers) -> None:
    from ..train.optim import OPTIMIZERS, SCHEDULES
    p = subparsers.add_parser("train", help="train a model (default: a small CNN on the embedded digits)",
                              formatter_class=HelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a zoo name (jaxcnn.models.available()) or your own 'package.module:function' "
                        "returning a Layer or Model")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE", type=model_option,
                   help="a model hyper-parameter, e.g. activation=relu or widths=(32,64); repeatable")
    p.add_argument("--dataset", default="digits", help="digits, synthetic, fashion_mnist, idx:PATH or a TFDS name")
    p.add_argument("--data-dir", default=None, help="TFDS data directory (default: TFDS's own)")
    p.add_argument("--epochs", type=int, default=15, help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=64, help="global batch size (all devices, all processes)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="optax optimizer")
    p.add_argument("--momentum", type=float, default=0.9, help="for --optimizer momentum")
    p.add_argument("--schedule", choices=SCHEDULES + ("one-cycle",), default="onecycle",
                   help="learning-rate schedule over the whole run")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warmup for --schedule cosine")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="decoupled weight decay (adamw) or L2")
    p.add_argument("--clip-norm", type=float, default=None, help="clip the global gradient norm")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing in [0, 1)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: compute in bfloat16, keep float32 parameters")
    p.add_argument("--parallel", choices=("none", "pmap", "sharded"), default="none",
                   help="one device, jax.pmap over local devices, or jit over a device mesh")
    p.add_argument("--backprop", choices=("auto", "autodiff", "explicit"), default="auto",
                   help="backward passes: per op the fastest measured (auto), XLA autodiff, or jaxcnn's "
                        "hand-written transposed-kernel twins")
    p.add_argument("--augment", choices=AUGMENTS, default="none", help="on-device random crop and/or flip")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and dropout")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate + checkpoint every N steps (0: every epoch)")
    p.add_argument("--log-every", type=int, default=50, help="fetch metrics to the host every N steps")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int, default=1, help="processes in a multi-process run")
    p.add_argument("--process-id", type=int, default=0, help="this process's index in a multi-process run")
    p.set_defaults(func=run)


def model_option(text: str) -> tuple[str, object]:
    """Parse ``KEY=VALUE``; VALUE is a Python literal (``3``, ``(32, 64)``, ``0.5``) or a bare string."""
    import ast
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. activation=relu), got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def build_model(name: str, num_classes: int, image_shape, hparams: dict | None = None):
    """``models.create(name, ...)`` checked against the dataset: a model that cannot take
    ``image_shape`` (H, W, C) images is a :class:`UsageError` naming both shapes."""
    from ..models import create
    model = create(name, num_classes=num_classes, **dict(hparams or {}))
    try:
        model.output_shape((1,) + tuple(image_shape))
    except Exception as e:  # noqa: BLE001 -- any failure to trace means the shapes do not fit
        natural = "x".join(map(str, model.input_shape)) if model.input_shape else "other"
        cause = str(e).splitlines()[0]
        raise UsageError(f"model {name!r} expects {natural} inputs but the dataset gives "
                         f"{'x'.join(map(str, image_shape))} images ({cause})") from None
    return model


def run(args) -> int:
    if args.coordinator:  # before anything initialises a jax backend
        from ..train import distributed
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.num_processes != 1:
        raise UsageError("--num-processes > 1 needs --coordinator HOST:PORT")

    import jax

    from ..backprop import dispatch
    from ..data import augment as augment_images, batches, load_splits, steps_per_epoch
    from ..train import NonFiniteLossError, fit, make_optimizer, make_schedule

    # ---------------------------------------------------------------- data + model
    train, test, norm = load_splits(args.dataset, args.data_dir)
    n_proc, proc = jax.process_count(), jax.process_index()
    steps = steps_per_epoch(len(train), args.batch_size)
    if steps < 1:
        raise UsageError(f"--batch-size {args.batch_size} exceeds the {len(train)} training examples")
    model = build_model(args.model, train.num_classes, train.image_shape, dict(args.model_option))
    augment = None
    if args.augment != "none":
        pad = max(1, train.image_shape[0] // 8) if "crop" in args.augment else 0
        augment = functools.partial(augment_images, crop_padding=pad, flip="flip" in args.augment)

    def train_batches(epoch, start_step):
        for b in batches(train, args.batch_size, seed=args.seed, epoch=epoch, process_index=proc,
                         process_count=n_proc, start_step=start_step):
            yield b

    def test_batches():
        return batches(test, args.batch_size, seed=0, epoch=0, shuffle=False, drop_remainder=False,
                       process_index=proc, process_count=n_proc)

    # ---------------------------------------------------------------- optimiser
    schedule = make_schedule(args.schedule, args.lr, args.epochs * steps, warmup_steps=args.warmup_steps)
    tx = make_optimizer(args.optimizer, schedule, weight_decay=args.weight_decay, clip_norm=args.clip_norm,
                        momentum=args.momentum)
    # the dispatched loss: under --backprop explicit its hand-written backward is used too
    loss = functools.partial(dispatch.cross_entropy, label_smoothing=args.label_smoothing)

    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(out=out, num_classes=train.num_classes,
                  image_shape=list(train.image_shape), steps_per_epoch=steps, train_examples=len(train),
                  test_examples=len(test), normalization={"mean": norm.mean.tolist(), "std": norm.std.tolist()},
                  devices=jax.device_count(), processes=n_proc, jax_version=jax.__version__)
    if proc == 0:
        print(f"training {args.model} on {args.dataset} ({len(train)} train / {len(test)} test, "
              f"{steps} steps/epoch x {args.epochs} epochs, parallel={args.parallel} on {jax.device_count()} "
              f"device(s)) -> {out}", file=sys.stderr)

    # ---------------------------------------------------------------- train
    try:
        result = fit(model, train_batches=train_batches, steps_per_epoch=steps, epochs=args.epochs,
                     input_shape=(1,) + tuple(train.image_shape), tx=tx, loss=loss, test_batches=test_batches,
                     seed=args.seed, parallel=args.parallel, backprop=args.backprop, precision=args.precision,
                     out_dir=out, resume=args.resume, eval_every=args.eval_every, log_every=args.log_every,
                     keep_checkpoints=args.keep, config=config, progress=not args.no_progress, augment=augment)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if proc == 0 and result.history:
        last = result.history[-1]
        print(f"step {last['step']}: test_loss={last['test_loss']:.4f} test_accuracy={last['test_accuracy']:.4f} "
              f"({last['wall_s']:.1f}s) -> {out}")
    return 0
