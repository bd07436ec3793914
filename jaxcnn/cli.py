"""The ``jaxcnn`` command. Each subcommand lives in ``jaxcnn/commands/<name>.py`` and
exposes ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Flags are parsed here and nowhere else."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# XLA CPU runs convolution backward passes slowly; this flag routes individual
# convolutions away from the YNN fusion and was measured faster on CNN train steps
# (experiments/bench_train.py). It only takes effect if set before jax is imported,
# which is why the command line -- not the library -- sets it. JAXCNN_XLA_TUNING=0 opts out.
XLA_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def apply_xla_tuning(environ=os.environ) -> None:
    """Add :data:`XLA_CPU_FLAGS` to ``XLA_FLAGS`` unless opted out or jax is already loaded."""
    if environ.get("JAXCNN_XLA_TUNING", "1") == "0" or "jax" in sys.modules:
        return
    flags = environ.get("XLA_FLAGS", "")
    for flag in XLA_CPU_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    environ["XLA_FLAGS"] = flags

# Subcommand modules, in the order `jaxcnn --help` lists them.
COMMANDS = [
    "train",
    "eval",
    "checkpoints",
    "demo",
    "summary",
    "receptive_field",
    "gradcheck",
]


def quiet_library_logs(environ=os.environ) -> None:
    """Silence the INFO chatter of absl/TFDS/orbax ("Using custom data configuration",
    "Variant folder ... has no dataset_info.json", ...): the command prints its own
    progress. Warnings and errors still show; ``JAXCNN_DEBUG=1`` keeps everything."""
    if environ.get("JAXCNN_DEBUG", "0") != "0":
        return
    import logging
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("absl", "tensorflow_datasets", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="jaxcnn", description="Functional CNNs on JAX.")
    parser.add_argument("--version", action="version", version=f"jaxcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"jaxcnn.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. A user's mistake (:mod:`jaxcnn.commands.errors`) prints one line,
    ``jaxcnn <command>: error: <message>``, and returns 2; ``JAXCNN_DEBUG=1`` raises it
    with its traceback instead."""
    from .commands.errors import USER_ERRORS
    apply_xla_tuning()
    quiet_library_logs()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("JAXCNN_DEBUG", "0") != "0":
            raise
        message = " ".join(str(e).split())  # one line, whatever the exception held
        print(f"jaxcnn {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
