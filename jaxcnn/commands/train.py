"""``jaxcnn train``: train a zoo model on a dataset (default: a small CNN on the
embedded 8x8 digits, under a minute on 2 CPU cores), writing ``DIR/config.json``,
``DIR/metrics.jsonl`` (one line per evaluation) and orbax checkpoints ``DIR/checkpoints``.

The run directory is a contract (:mod:`jaxcnn.train.rundir`): every flag is range-checked
before anything is created; ``config.json`` is written once, after the data and model
were validated; ``--resume`` takes every flag not given from it and refuses a given flag
that changes the run's identity (a longer ``--epochs`` is allowed and recorded); an
existing run in ``--out`` is never mixed with a new one (``--overwrite`` moves it aside).
SIGTERM/SIGINT save a checkpoint after the current call (up to --steps-per-dispatch steps) and exit 143/130."""
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
    from ..dispatch.mode import MODES as BACKPROP_MODES
    from ..train import defaults
    from ..train.optim import OPTIMIZERS, SCHEDULES
    from ..train.parallel import MODES as PARALLEL_MODES
    from ..train.step import PRECISIONS
    p = subparsers.add_parser("train", help="train a model (default: a small CNN on the embedded digits)",
                              formatter_class=HelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a zoo name (jaxcnn.models.available()) or your own 'package.module:function' "
                        "returning a Layer or Model")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE", type=model_option,
                   help="a model hyper-parameter, e.g. activation=relu or widths=(32,64); repeatable")
    p.add_argument("--dataset", default="digits", help="digits, synthetic, fashion_mnist, idx:PATH or a TFDS name")
    p.add_argument("--data-dir", default=None, help="TFDS data directory (default: TFDS's own)")
    p.add_argument("--epochs", type=int, default=defaults.EPOCHS, help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, help="global batch size (all devices, all processes)")
    p.add_argument("--lr", type=float, default=defaults.LR, help="peak learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.OPTIMIZER, help="optax optimizer")
    p.add_argument("--momentum", type=float, default=defaults.MOMENTUM, help="for --optimizer momentum")
    p.add_argument("--schedule", choices=SCHEDULES + ("one-cycle",), default=defaults.SCHEDULE,
                   help="learning-rate schedule over the whole run")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warmup for --schedule cosine")
    p.add_argument("--weight-decay", type=float, default=defaults.WEIGHT_DECAY, help="decoupled weight decay (adamw) or L2")
    p.add_argument("--clip-norm", type=float, default=None, help="clip the global gradient norm")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing in [0, 1)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                   help="bf16: compute in bfloat16, keep float32 parameters")
    p.add_argument("--parallel", choices=PARALLEL_MODES, default="none",
                   help="one device, jax.pmap over local devices, or jit over a device mesh")
    p.add_argument("--backprop", choices=BACKPROP_MODES, default=defaults.BACKPROP,
                   help="backward passes: per op the fastest measured (auto), XLA autodiff, or jaxcnn's "
                        "hand-written transposed-kernel twins")
    p.add_argument("--augment", choices=AUGMENTS, default="none", help="on-device random crop and/or flip")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and dropout")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest intact checkpoint, with its saved settings")
    p.add_argument("--overwrite", action="store_true",
                   help="if --out already holds a run, move it aside to OUT.old-<time> (never deleted)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate + checkpoint every N steps (0: every epoch)")
    p.add_argument("--log-every", type=int, default=50, help="fetch metrics to the host every N steps")
    p.add_argument("--steps-per-dispatch", type=int, default=defaults.STEPS_PER_DISPATCH,
                   help="training steps per call of the compiled program (one program runs up to N steps; "
                        "1: one call per step); fewer calls help small networks")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="do not write TensorBoard event files into the run directory (metrics.jsonl is "
                        "written either way; `tensorboard --logdir runs` compares the runs that have them)")
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int, default=1, help="processes in a multi-process run")
    p.add_argument("--process-id", type=int, default=0, help="this process's index in a multi-process run")
    p.add_argument("--coordinator-timeout", type=float, default=60.0,
                   help="seconds to wait for every process to join before giving up (default: 60)")
    p.set_defaults(func=run)
    # Flags a resumed run takes from its config.json unless given: their parser default is
    # SUPPRESS (so "given" is "present in args") and the real default lives in DEFAULTS.
    for action in p._actions:
        if action.dest in SAVED_FLAGS:
            DEFAULTS[action.dest] = action.default
            if action.default is not None and action.default is not False and action.default != [] \
                    and "default" not in (action.help or ""):
                action.help = f"{action.help} (default: {action.default})"
            action.default = argparse.SUPPRESS


# Identity flags (refused when changed on --resume), --epochs (may grow) and settings that
# do not change the result but should stay as the run had them unless given again.
SAVED_FLAGS = ("model", "model_option", "dataset", "batch_size", "lr", "optimizer", "momentum", "schedule",
               "warmup_steps", "weight_decay", "clip_norm", "label_smoothing", "precision", "augment", "seed",
               "epochs", "data_dir", "parallel", "backprop", "eval_every", "log_every", "keep",
               "steps_per_dispatch")
DEFAULTS: dict = {}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def validate(s: dict) -> None:
    """Range-check every numeric flag (one line, exit 2) before anything is created."""
    _check(s["epochs"] >= 1, f"--epochs must be >= 1, got {s['epochs']}")
    _check(s["batch_size"] >= 1, f"--batch-size must be >= 1, got {s['batch_size']}")
    _check(s["lr"] > 0 and s["lr"] == s["lr"] and s["lr"] != float("inf"), f"--lr must be > 0, got {s['lr']}")
    _check(0 <= s["momentum"] < 1, f"--momentum must be in [0, 1), got {s['momentum']}")
    _check(s["warmup_steps"] >= 0, f"--warmup-steps must be >= 0, got {s['warmup_steps']}")
    _check(s["weight_decay"] >= 0, f"--weight-decay must be >= 0, got {s['weight_decay']}")
    _check(s["clip_norm"] is None or s["clip_norm"] > 0, f"--clip-norm must be > 0, got {s['clip_norm']}")
    _check(0 <= s["label_smoothing"] < 1, f"--label-smoothing must be in [0, 1), got {s['label_smoothing']}")
    _check(s["eval_every"] >= 0, f"--eval-every must be >= 0 (0: every epoch), got {s['eval_every']}")
    _check(s["log_every"] >= 1, f"--log-every must be >= 1, got {s['log_every']}")
    _check(s["steps_per_dispatch"] >= 1, f"--steps-per-dispatch must be >= 1, got {s['steps_per_dispatch']}")
    _check(s["keep"] >= 1, f"--keep must be >= 1 (a run needs a checkpoint), got {s['keep']}")
    _check(s["num_processes"] >= 1, f"--num-processes must be >= 1, got {s['num_processes']}")
    _check(0 <= s["process_id"] < s["num_processes"],
           f"--process-id must be in [0, --num-processes={s['num_processes']}), got {s['process_id']}")
    _check(s["coordinator_timeout"] > 0, f"--coordinator-timeout must be > 0 seconds, got {s['coordinator_timeout']}")
    _check(s["num_processes"] == 1 or s["coordinator"], "--num-processes > 1 needs --coordinator HOST:PORT")
    _check(s["batch_size"] % s["num_processes"] == 0,
           f"--batch-size {s['batch_size']} does not divide over --num-processes {s['num_processes']}")
    _check(s["num_processes"] == 1 or s["parallel"] != "none",
           "a multi-process run needs --parallel pmap or sharded")


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


def resolve_args(args) -> tuple[argparse.Namespace, dict | None, dict | None]:
    """``(args, saved_config, extension)``: the flags given over the run's saved config
    (``--resume``) over the defaults, validated; the output directory claimed."""
    from ..train import rundir
    given = {k: v for k, v in vars(args).items() if k in SAVED_FLAGS}
    if given.get("schedule") == "one-cycle":
        given["schedule"] = "onecycle"
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR (the run to continue)")
    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    saved = rundir.read_config(out) if args.resume else None
    if saved is not None:    # a run of user code continues only when the command line names that code
        rundir.check_trusted(saved, given.get("model"), out)
    settings, extension = rundir.resolve(saved, given, DEFAULTS)
    settings.update({k: v for k, v in vars(args).items() if k not in SAVED_FLAGS}, out=out)
    validate(settings)
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite moves it aside; pass one of them")
    if not args.overwrite:  # refuse mixing runs now; --overwrite moves the old run once all is validated
        rundir.claim(out, resume=args.resume)
    return argparse.Namespace(**settings), saved, extension


def join_cluster(args) -> bool:
    """With no ``--coordinator``: join the multi-process run of the cluster this process
    was started in (a SLURM job step, a Cloud TPU pod; :func:`jaxcnn.train.distributed.detect_cluster`),
    filling ``args.coordinator/num_processes/process_id`` from it. False outside one and
    for a job of one process."""
    from ..train import distributed
    try:
        cluster = distributed.detect_cluster(timeout_s=args.coordinator_timeout)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if cluster is None or cluster.num_processes == 1:
        return False
    _check(args.parallel != "none", f"this process is process {cluster.process_id} of a {cluster.describe()} "
           f"(detected from its environment): a multi-process run needs --parallel pmap or sharded, got "
           f"--parallel {args.parallel}")
    _check(args.batch_size % cluster.num_processes == 0,
           f"--batch-size {args.batch_size} does not divide over the {cluster.describe()}")
    args.coordinator, args.num_processes, args.process_id = (cluster.coordinator_address, cluster.num_processes,
                                                             cluster.process_id)
    try:
        distributed.initialize_cluster(cluster, timeout_s=args.coordinator_timeout)
    except ConnectionError as e:
        raise UsageError(str(e)) from None
    return True


def run(args) -> int:
    args, saved, extension = resolve_args(args)
    watch = None
    from ..train import distributed
    if args.coordinator:  # before anything initialises a jax backend
        try:
            distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                   timeout_s=args.coordinator_timeout)
        except ConnectionError as e:
            raise UsageError(str(e)) from None
        watch = distributed.watch_peers()
    elif join_cluster(args):  # started by srun / on a TPU pod: its environment says how
        watch = distributed.watch_peers()
    try:
        return _train(args, saved, extension)
    except Exception as e:
        from .errors import USER_ERRORS
        if watch is None or isinstance(e, USER_ERRORS):
            raise
        # a collective failed: most likely a peer died. Give the heartbeat watch the time
        # to name it (it exits the process), else say what failed; never wait for jax's
        # own shutdown barrier, which would block until its heartbeat timeout.
        time.sleep(watch.timeout_s + 3 * watch.interval_s)
        distributed.die(f"process {args.process_id} failed in a multi-process step ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}); a peer process may "
                        f"have died. Resume the run with --resume")
    finally:
        if watch is not None:
            watch.stop()


def _train(args, saved, extension) -> int:
    import jax

    from .startup import apply_saved_table

    from .. import dispatch
    from ..data import augment as augment_images, batches, load_splits, steps_per_epoch
    from ..train import NonFiniteLossError, fit, make_optimizer, make_schedule, rundir
    from ..train.checkpoint import step_dirs
    from ..train.loop import Interrupted

    apply_saved_table("train")
    if args.parallel != "none" and args.batch_size % jax.device_count():
        raise UsageError(f"--batch-size {args.batch_size} does not divide over the {jax.device_count()} devices of "
                         f"--parallel {args.parallel}; use a multiple of {jax.device_count()}")

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

    out = args.out
    config = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "overwrite")}
    config.update(out=out, num_classes=train.num_classes,
                  image_shape=list(train.image_shape), steps_per_epoch=steps, train_examples=len(train),
                  test_examples=len(test), normalization={"mean": norm.mean.tolist(), "std": norm.std.tolist()},
                  devices=jax.device_count(), processes=n_proc, jax_version=jax.__version__)
    if saved is not None:
        rundir.check_data_facts(saved, config)
    if n_proc > 1:
        from ..train import distributed
        distributed.check_same_config(config, rundir.IDENTITY + rundir.DATA_FACTS + rundir.EXTENDABLE,
                                      timeout_s=args.coordinator_timeout)
    if proc == 0:  # the first line: what runs where
        processes = f" in {n_proc} processes" if n_proc > 1 else ""
        print(f"training {args.model} on {args.dataset} ({len(train)} train / {len(test)} test, "
              f"{steps} steps/epoch x {args.epochs} epochs, parallel={args.parallel}) on {jax.device_count()} "
              f"{jax.devices()[0].platform} device(s){processes} -> {out}", file=sys.stderr)
        if jax.devices()[0].platform == "cpu":   # the second: which convolution backend, and why
            from ..kernels import onednn
            conv_choice = dispatch.auto_table()["conv"]
            print(onednn.describe(args.backprop, conv_choice), file=sys.stderr)
            if args.precision == "bf16" and args.backprop == "auto" and conv_choice == "onednn":
                from ..kernels.onednn import isa
                print(isa.describe_bfloat16(), file=sys.stderr)
    if proc == 0:  # the run's identity, written once, now that everything was validated
        if args.overwrite:
            moved = rundir.claim(out, resume=False, overwrite=True)
            if moved:
                print(f"moved the existing run in {out} to {moved}", file=sys.stderr)
        if saved is None:
            rundir.write_config(out, config)
        elif extension:
            done = max(step_dirs(os.path.join(out, rundir.CHECKPOINTS)), default=0)
            rundir.record_extension(out, saved, extension, at_step=done)
            print(f"extending the run from {extension['epochs'][0]} to {extension['epochs'][1]} epochs "
                  f"(recorded in config.json)", file=sys.stderr)

    # ---------------------------------------------------------------- train
    try:
        result = fit(model, train_batches=train_batches, steps_per_epoch=steps, epochs=args.epochs,
                     input_shape=(1,) + tuple(train.image_shape), tx=tx, loss=loss, test_batches=test_batches,
                     seed=args.seed, parallel=args.parallel, backprop=args.backprop, precision=args.precision,
                     out_dir=out, resume=args.resume, eval_every=args.eval_every, log_every=args.log_every,
                     keep_checkpoints=args.keep, config=None, progress=not args.no_progress, augment=augment,
                     tensorboard=not args.no_tensorboard, learning_rate=schedule,
                     steps_per_dispatch=args.steps_per_dispatch)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        # every process says it (a multi-process run's processes stop together, and each
        # may have its own terminal)
        print(f"jaxcnn train: stopped by {e}", file=sys.stderr)
        return e.exit_status
    if proc == 0 and result.history:
        last = result.history[-1]
        print(f"step {last['step']}: test_loss={last['test_loss']:.4f} test_accuracy={last['test_accuracy']:.4f} "
              f"({last['wall_s']:.1f}s) -> {out}")
    elif proc == 0:
        print(f"{out} is already complete ({args.epochs} epochs, step {result.last_checkpoint}); extend it with "
              f"--resume --epochs N", file=sys.stderr)
    return 0
