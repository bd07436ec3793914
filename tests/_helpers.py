"""Helpers shared by the test files (one copy each): a free loopback port for
multi-process tests, a run directory's metrics records, and the XLA flags of the suite
and of the processes it starts."""
import json
import os
import socket
from pathlib import Path


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
