"""Helpers shared by the test files (one copy each): a free loopback port for
multi-process tests, a run directory's metrics records, the XLA flags of the suite and
of the processes it starts, and ``jaxcnn`` run as a user runs it (a subprocess) or in
this process (where nothing can abort XLA and no fresh process is needed)."""
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(run_dir) -> list[dict]:
    """The JSON objects of ``run_dir/metrics.jsonl``, in order."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# The suite compiles thousands of small programs, and XLA:CPU's compile time dominates
# it: without its new fusion emitters (the older loop emitters instead) a program compiles
# markedly faster (tests/test_kernels_xla_depthwise.py + test_ops_conv_parity.py: 72 s ->
# 47 s). The values are the same: the whole suite, slow part included, passes with it.
# (LLVM at -O0 -- `--xla_backend_optimization_level=0` -- would cut that to 33 s but does
# change results: zero gradients in shufflenet_v2, Integrated Gradients 3e-3 off Captum.)
# JAXCNN_TEST_FAST_COMPILE=0 runs the suite with XLA's default code generation. Checked
# on jaxlib 0.10.2; on another jaxlib the flag is probed once (XLA aborts on a flag it
# does not know: 0.12 has no legacy emitters any more) and the answer kept in jaxcnn's
# cache directory, as the CLI does for its own flags.
FAST_COMPILE_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


def _fast_compile_flags() -> list[str]:
    from jaxcnn import config          # the standard library only: jax stays unimported
    if os.environ.get("JAXCNN_TEST_FAST_COMPILE", "1") == "0":
        return []
    return [f for f in FAST_COMPILE_XLA_FLAGS if config.xla_flags_supported((f,))]


def xla_flags(devices: int | None = None) -> str:
    """``XLA_FLAGS`` for the suite or a process it starts: the fast-compile flags this
    jaxlib has (none with ``JAXCNN_TEST_FAST_COMPILE=0``) and, given ``devices``, that many
    fake CPU devices."""
    flags = _fast_compile_flags()
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


def cli_env(drop=(), **extra) -> dict:
    """The environment of a ``jaxcnn`` subprocess: this one's without the names in ``drop``,
    on the CPU, without XLA's autotuning, this checkout first on PYTHONPATH and the suite's
    XLA flags; ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(JAX_PLATFORMS="cpu", JAXCNN_XLA_TUNING="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("JAXCNN_TEST_PYTHONPATH"), str(ROOT),
                                                   env.get("PYTHONPATH")) if p)
    env["XLA_FLAGS"] = xla_flags()
    env.update(extra)
    return env


def jaxcnn(*args, timeout=240, **env) -> subprocess.CompletedProcess:
    """``jaxcnn ARGS`` in a fresh process (``cli_env(**env)``, the temp dir as cwd)."""
    return subprocess.run([sys.executable, "-m", "jaxcnn.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(**env), cwd=tempfile.gettempdir())


def jaxcnn_in_process(*args) -> subprocess.CompletedProcess:
    """``jaxcnn ARGS`` run by ``cli.main`` in this process, as a CompletedProcess. For what
    needs no process of its own -- argument errors, refused directories, and work that can
    neither abort XLA nor import a user's code -- since each fresh process costs ~2 s of jax
    start-up."""
    from jaxcnn import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as e:       # argparse's own errors
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
