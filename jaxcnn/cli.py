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
# jaxlib versions on which the flags above were checked to parse; others are probed once
# (XLA aborts the process on a flag it does not know, so a probe runs in a subprocess)
# and the answer is kept per jaxlib version in the cache directory.
XLA_FLAGS_CHECKED = ("0.10.2",)
# Compiled programs that took at least this long to compile are kept in the persistent
# cache (a second `jaxcnn train` of the same model skips the compile).
MIN_CACHED_COMPILE_SECS = 1.0


def cache_dir(environ=os.environ) -> str:
    """``$JAXCNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxcnn``, else ``~/.cache/jaxcnn``."""
    if environ.get("JAXCNN_CACHE_DIR"):
        return environ["JAXCNN_CACHE_DIR"]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxcnn")


def _jaxlib_version() -> str | None:
    import importlib.metadata
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def xla_flags_supported(flags=XLA_CPU_FLAGS, environ=os.environ, probe=None) -> bool:
    """Whether this jaxlib accepts ``flags``: known for :data:`XLA_FLAGS_CHECKED`, else
    probed once in a subprocess (``probe(flags) -> bool``) and remembered per version."""
    import json
    version = _jaxlib_version()
    if version is None:
        return False
    if version in XLA_FLAGS_CHECKED:
        return True
    record = os.path.join(cache_dir(environ), "xla_flags.json")
    key = f"{version} {' '.join(flags)}"
    try:
        with open(record) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = bool((probe or _probe_flags)(flags))
        try:
            os.makedirs(os.path.dirname(record), exist_ok=True)
            with open(record, "w") as f:
                json.dump(known, f)
        except OSError:
            pass                                    # unwritable cache: probe again next time
    return known[key]


def _probe_flags(flags) -> bool:
    import subprocess
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    try:
        out = subprocess.run([sys.executable, "-c", "import jax, jax.numpy as jnp; jnp.ones(2).block_until_ready()"],
                             env=env, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def apply_xla_tuning(environ=os.environ, probe=None) -> None:
    """Before jax loads: add :data:`XLA_CPU_FLAGS` to ``XLA_FLAGS`` (unless opted out, or
    this jaxlib does not accept them), and turn on jax's persistent compilation cache
    under :func:`cache_dir` ``/xla`` (``JAXCNN_COMPILATION_CACHE=0`` opts out; a
    ``JAX_COMPILATION_CACHE_DIR`` already set is kept)."""
    if "jax" in sys.modules:
        return
    if environ.get("JAXCNN_COMPILATION_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in environ:
        # jax reads its config options from JAX_* variables when it is imported
        environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(cache_dir(environ), "xla")
        environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_CACHED_COMPILE_SECS))
    if environ.get("JAXCNN_XLA_TUNING", "1") == "0":
        return
    flags = environ.get("XLA_FLAGS", "")
    missing = [flag for flag in XLA_CPU_FLAGS if flag.split("=")[0] not in flags]
    if not missing or not xla_flags_supported(tuple(missing), environ, probe):
        return
    environ["XLA_FLAGS"] = " ".join([flags] + missing).strip()

# Subcommand modules, in the order `jaxcnn --help` lists them.
COMMANDS = [
    "train",
    "eval",
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
    if environ.get("JAXCNN_DEBUG", "0") != "0":
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
    error = record.exc_info[1] if record.exc_info else None
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return not (error is not None and str(record.msg).startswith("[process="))


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
    from .commands.errors import USER_ERRORS
    from .hostmem import keep_freed_memory
    keep_freed_memory()   # before jax starts its threads (see jaxcnn.hostmem)
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
    except OSError as e:
        # the machine failed the command (a checkpoint directory made read-only, a full
        # disk): one line, status 1; JAXCNN_DEBUG=1 shows the traceback
        if os.environ.get("JAXCNN_DEBUG", "0") != "0":
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
