"""``jaxcnn gradcheck``: compare autodiff, explicit backprop, finite differences and the
dense Jacobian for one op (``--op conv --stride 2 ...``) or a model (``--model lenet``).
Prints the table; exits 1 on a mismatch. ``--input`` is one example's shape without the
batch (as in ``jaxcnn summary``); the batch is ``--batch``."""
from __future__ import annotations

import argparse

from . import HelpFormatter
from .errors import UsageError
from .summary import input_shape, parse_shape

OPS = ("conv", "conv_transpose", "max_pool", "avg_pool", "dense")


PADDING_WORDS = ("valid", "same", "full", "causal")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _padding(text: str):
    """``same``/``valid``/``full``/``causal`` or comma-separated integers (per dim)."""
    return text if text in PADDING_WORDS else _ints(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("gradcheck", help="check explicit backprop against autodiff, finite differences "
                                                "and the dense Jacobian", formatter_class=HelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a zoo name (jaxcnn.models.available()) or 'package.module:function'")
    what.add_argument("--op", choices=OPS, help="a single op")
    p.add_argument("--num-classes", type=int, default=10, help="model output width")
    p.add_argument("--input", default=None,
                   help="one example's shape without the batch, as in `jaxcnn summary`: H,W,C (C,H,W with "
                        "--layout NCHW), 1-3 spatial dims for an op (op default 8,8,2; model default 28,28,1)")
    p.add_argument("--batch", type=int, default=None, help="batch size (op default 1; model default 2)")
    p.add_argument("--layout", default="NHWC", choices=("NHWC", "NCHW"), help="channels-last or torch's layout")
    p.add_argument("--kernel", type=_ints, default=(3,), help="kernel size (int or per-dim)")
    p.add_argument("--stride", type=_ints, default=(1,), help="int or per-dim, comma-separated")
    p.add_argument("--padding", type=_padding, default=(0,),
                   help=f"int or per-dim, comma-separated, or one of {', '.join(PADDING_WORDS)}")
    p.add_argument("--dilation", type=_ints, default=(1,), help="int or per-dim, comma-separated")
    p.add_argument("--groups", type=int, default=1, help="channel groups (must divide both channel counts)")
    p.add_argument("--out-channels", type=int, default=4, help="output channels of conv / dense")
    p.add_argument("--padding-mode", default="zeros", choices=("zeros", "reflect", "replicate", "circular"),
                   help="how conv pads the input")
    p.add_argument("--train", action="store_true", help="model in train mode (batch statistics, fixed dropout)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs and weights")
    p.add_argument("--fd-samples", type=int, default=24, help="finite-difference coordinates per leaf")
    p.set_defaults(func=run)


def _one(v):
    return v[0] if len(v) == 1 else v


OP_INPUT, OP_BATCH = (8, 8, 2), 1
MODEL_INPUT, MODEL_BATCH = (28, 28, 1), 2


def _batch(args, default: int) -> int:
    batch = default if args.batch is None else args.batch
    if batch < 1:
        raise UsageError(f"--batch must be >= 1, got {batch}")
    return batch


def op_input_shape(args) -> tuple[int, ...]:
    """``(--batch, *--input)`` for an op. ``--input`` is one example, channels and 1-3
    spatial dims (``dense``: any shape, flattened), the same meaning as in ``summary``."""
    shape = parse_shape(args.input) if args.input else OP_INPUT
    if args.op != "dense" and not 2 <= len(shape) <= 4:
        form = "H,W,C" if args.layout == "NHWC" else "C,H,W"
        raise UsageError(f"--input: --op {args.op} takes one example's shape without the batch, 1-3 spatial dims "
                         f"and the channels (e.g. {form}: 3 numbers), got {args.input}")
    return (_batch(args, OP_BATCH),) + tuple(shape)


def _op_report(args):
    import numpy as np

    from ..gradcheck import gradcheck_op

    rng = np.random.default_rng(args.seed)
    shape = op_input_shape(args)
    rank = len(shape) - 2
    nhwc = args.layout == "NHWC"
    c_in = shape[-1] if nhwc else shape[1]
    kernel = args.kernel * rank if len(args.kernel) == 1 else args.kernel
    x = rng.normal(size=shape)
    check = dict(seed=args.seed, fd_samples=args.fd_samples)
    padding = args.padding if isinstance(args.padding, str) else _one(args.padding)
    geo = dict(stride=_one(args.stride), padding=padding, dilation=_one(args.dilation), layout=args.layout)
    g, c_out = args.groups, args.out_channels
    if args.op in ("conv", "conv_transpose") and (g < 1 or c_in % g or c_out % g):
        raise UsageError(f"--groups {g} must divide both the input channels ({c_in}, from --input "
                         f"{','.join(map(str, shape[1:]))}) and --out-channels ({c_out})")
    if args.op == "conv":
        w = rng.normal(size=kernel + (c_in // g, c_out) if nhwc else (c_out, c_in // g) + kernel)
        return gradcheck_op("conv", x, w, rng.normal(size=c_out), groups=g, padding_mode=args.padding_mode,
                            check_kwargs=check, **geo)
    if args.op == "conv_transpose":
        w = rng.normal(size=kernel + (c_in, c_out // g) if nhwc else (c_in, c_out // g) + kernel)
        return gradcheck_op("conv_transpose", x, w, rng.normal(size=c_out), groups=g, check_kwargs=check, **geo)
    if args.op == "max_pool":
        return gradcheck_op("max_pool", x, kernel_size=kernel, check_kwargs=check, **geo)
    if args.op == "avg_pool":
        geo.pop("dilation")
        return gradcheck_op("avg_pool", x, kernel_size=kernel, check_kwargs=check, **geo)
    x2 = x.reshape(shape[0], -1)
    return gradcheck_op("dense", x2, rng.normal(size=(x2.shape[1], c_out)), rng.normal(size=c_out),
                        check_kwargs=check)


def run(args) -> int:
    if args.model:
        import jax

        from ..gradcheck import gradcheck_model
        from ..models import create      # lazy: the model zoo is heavy to import

        model = create(args.model, num_classes=args.num_classes)
        shape = (_batch(args, MODEL_BATCH),) + input_shape(args, model, default=MODEL_INPUT)
        report = gradcheck_model(model, shape, key=jax.random.PRNGKey(args.seed),
                                 train=args.train, seed=args.seed, fd_samples=args.fd_samples)
        title = f"gradcheck model {args.model} input {shape} train={args.train}"
    else:
        report = _op_report(args)
        title = (f"gradcheck op {args.op} input {op_input_shape(args)} kernel {args.kernel} stride "
                 f"{args.stride} padding {args.padding} dilation {args.dilation} groups {args.groups} "
                 f"layout {args.layout}")
    print(title)
    print(report.table())
    return 0 if report.passed else 1
