"""The ``jaxcnn`` command. Each subcommand lives in ``jaxcnn/commands/<name>.py`` and
exposes ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Flags are parsed here and nowhere else."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import config

# Subcommand modules, in the order `jaxcnn --help` lists them.
COMMANDS = [
    "train",
    "eval",
    "export",
    "checkpoints",
    "demo",
    "summary",
    "receptive_field",
    "gradcheck",
    "compress",
    "explain",
    "plot",
    "bench",
    "models",
]


def quiet_library_logs(environ=os.environ) -> None:
    """Silence the INFO chatter of absl/TFDS/orbax ("Using custom data configuration",
    "Variant folder ... has no dataset_info.json", ...): the command prints its own
    progress. Warnings and errors still show; ``JAXCNN_DEBUG=1`` keeps everything."""
    if config.flag("JAXCNN_DEBUG", environ):
        return
    import logging
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("absl", "tensorflow_datasets", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("absl").addFilter(_drop_orbax_thread_tracebacks)


def _drop_orbax_thread_tracebacks(record) -> bool:
    """orbax logs a checkpoint write that failed in its background thread (an OSError:
    read-only directory, full disk) with the traceback, then raises it again in the main
    thread, where ``jaxcnn.train.checkpoint`` turns it into one line: drop the log record.
    (orbax's records carry its "[process=N]" prefix.)"""
    if not (record.exc_info and str(record.msg).startswith("[process=")):
        return True
    from .train.checkpoint import os_error_in      # orbax is loaded: it is logging
    return os_error_in(record.exc_info[1]) is None


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with its errors in the command's one-line form: ``jaxcnn
    <command>: error: <message> (see 'jaxcnn <command> --help')`` on stderr, exit 2,
    instead of the whole usage block before the message. Subparsers inherit the class."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = ArgumentParser(prog="jaxcnn", description="Functional CNNs on JAX.")
    parser.add_argument("--version", action="version", version=f"jaxcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"jaxcnn.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. A user's mistake (:mod:`jaxcnn.commands.errors`) prints one line,
    ``jaxcnn <command>: error: <message>``, and returns 2; ``JAXCNN_DEBUG=1`` raises it
    with its traceback instead."""
    from .commands.errors import DAMAGED_FILE_ERRORS, USER_ERRORS
    from .hostmem import keep_freed_memory
    try:
        for warning in config.check_environment():
            print(f"jaxcnn: warning: {warning}", file=sys.stderr)
    except ValueError as e:
        print(f"jaxcnn: error: {e}", file=sys.stderr)
        return 2
    keep_freed_memory()   # before jax starts its threads (see jaxcnn.hostmem)
    config.apply_xla_tuning()
    quiet_library_logs()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if config.flag("JAXCNN_DEBUG"):
            raise
        message = " ".join(str(e).split())  # one line, whatever the exception held
        print(f"jaxcnn {args.command}: error: {message}", file=sys.stderr)
        return 1 if type(e).__name__ in DAMAGED_FILE_ERRORS else 2
    except OSError as e:
        # the machine failed the command (a checkpoint directory made read-only, a full
        # disk): one line, status 1; JAXCNN_DEBUG=1 shows the traceback
        if config.flag("JAXCNN_DEBUG"):
            raise
        print(f"jaxcnn {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        if type(e).__name__ == "CheckpointWriteError":
            # orbax's writer threads may be blocked on the failed directory: do not wait
            # for them at exit (the failed step was never committed; the others are)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1
    except KeyboardInterrupt:
        print(f"jaxcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
