"""Fault suite for issue 21's crashes (trust and data safety), as a user meets them:
a truncated cached oneDNN library, a damaged compressed ``.npz``, argument values that
crashed deep inside (batch size 0, a NaN learning rate, empty batches, occlusion strides
past the window, NaN/negative eps, zero windows), and ``--input`` shapes of the wrong
rank. Each asserts the exit status (for the command line), that stderr is one line
without a traceback, and that the files involved are unchanged where nothing should
change. Where the process could die (SIGBUS), the test runs it in a subprocess."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXCNN_XLA_TUNING="0", JAXCNN_COMPILATION_CACHE="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("JAXCNN_TEST_PYTHONPATH"), str(ROOT),
                                                   env.get("PYTHONPATH")) if p)
    env["XLA_FLAGS"] = ""
    env.update(extra)
    return env


def python(script, timeout=300, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), cwd=tempfile.gettempdir())


def jaxcnn(*args, timeout=240, **env):
    return subprocess.run([sys.executable, "-m", "jaxcnn.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), cwd=tempfile.gettempdir())


def stderr_lines(r):
    return [line for line in r.stderr.splitlines() if line.strip()]


def one_error_line(r, *fragments, status=2):
    """exit ``status`` and exactly one stderr line, without a traceback, holding every fragment."""
    lines = stderr_lines(r)
    assert r.returncode == status, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def digest(*paths):
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


# ---------------------------------------------------------------- 1. the oneDNN cache

CONV = """
    import jax.numpy as jnp
    from jaxcnn import ops
    from jaxcnn.kernels import onednn
    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    line = onednn.describe()
    assert (onednn.conv(x, w, padding=1) == ops.conv(x, w, padding=1)).all()
    print(line)
"""


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """A cache directory holding the real built library (compiled once for the module)."""
    cache = tmp_path_factory.mktemp("onednn_cache")
    r = python(CONV, JAXCNN_CACHE_DIR=str(cache))
    assert r.returncode == 0, r.stderr[-2000:]
    if not r.stdout.startswith("convolutions: oneDNN"):
        pytest.skip(f"oneDNN does not build here: {r.stdout.strip()}")
    return cache


def _library(cache):
    (so,) = (Path(cache) / "onednn").glob("jaxcnn_onednn_conv_*.so")
    return so


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_a_truncated_cached_onednn_library_is_rebuilt_not_loaded(built_cache, tmp_path, keep):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    so = _library(cache)
    whole = so.read_bytes()
    so.write_bytes(whole[:int(len(whole) * keep)])            # a full disk / a killed copy
    (cache / "onednn" / "tmpk1ll3d.so").write_bytes(whole[:999])   # a killed build's leftover
    r = python(CONV, JAXCNN_CACHE_DIR=str(cache))
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])  # no SIGBUS (-7) any more
    lines = stderr_lines(r)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "rebuilt" in lines[0] and so.name in lines[0] and "does not match" in lines[0]
    assert r.stdout.strip() == f"convolutions: oneDNN ({so})"
    assert so.read_bytes() and (so.parent / (so.name + ".sha256")).exists()
    assert not list((cache / "onednn").glob("tmp*.so"))
    again = python(CONV, JAXCNN_CACHE_DIR=str(cache))               # and the next run just loads it
    assert again.returncode == 0 and again.stderr.strip() == "", again.stderr
    assert again.stdout.strip() == f"convolutions: oneDNN ({so})"


def test_a_truncated_library_with_a_failing_compiler_falls_back_in_one_line(built_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    so = _library(cache)
    so.write_bytes(so.read_bytes()[:4096])
    r = python(CONV, JAXCNN_CACHE_DIR=str(cache), CXX="false")
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    lines = stderr_lines(r)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "rebuilding it failed" in lines[0] and "using XLA's convolutions" in lines[0]
    assert r.stdout.startswith("convolutions: XLA's (oneDNN convolution unavailable: ")
    assert not so.exists()                      # the damaged copy is gone: no later run can load it
