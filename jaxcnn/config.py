"""Every ``JAXCNN_*`` setting, the cache directory and the XLA flags: read and checked here only.

Standard library only (the command line calls it before jax is imported). Each setting
is read from the environment when it is asked for -- never at import -- through one of
the accessors below, with one truth rule (:func:`flag`): ``1 true yes on`` and ``0
false no off`` (any case), empty or unset meaning the default; any other value is a
``ValueError`` naming the variable, the accepted values and the value found.
:func:`check_environment` validates all of them at once (the command runs it first,
so a typo is one line, not a failure deep inside a run).

| variable | default | meaning |
|---|---|---|
| ``JAXCNN_CACHE_DIR`` | ``$XDG_CACHE_HOME/jaxcnn`` or ``~/.cache/jaxcnn`` | built oneDNN library, compiled programs, saved auto table |
| ``JAXCNN_COMPILATION_CACHE`` | on | the command's persistent compilation cache (``<cache>/xla``) |
| ``JAXCNN_XLA_TUNING`` | on | the command adds :data:`XLA_CPU_FLAGS` to ``XLA_FLAGS`` |
| ``JAXCNN_KEEP_HOST_MEMORY`` | on | the command keeps freed host memory (:mod:`jaxcnn.hostmem`) |
| ``JAXCNN_ONEDNN`` | on | "auto"'s oneDNN convolution (:mod:`jaxcnn.kernels.onednn`) |
| ``JAXCNN_SHIFTED_DEPTHWISE`` | on | "auto"'s depthwise conv as shifted multiply-adds (:mod:`jaxcnn.kernels.xla.depthwise`) |
| ``JAXCNN_AUTO_TABLE`` | ``<cache>/auto_table.json`` | the table ``jaxcnn bench --tune`` saved; ``0``: none (:mod:`jaxcnn.train.autotune`) |
| ``JAXCNN_DEBUG`` | off | show library logs and full tracebacks |
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import stat
import subprocess
import sys

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

# name -> default of each boolean setting
FLAGS = {
    "JAXCNN_COMPILATION_CACHE": True,
    "JAXCNN_XLA_TUNING": True,
    "JAXCNN_KEEP_HOST_MEMORY": True,
    "JAXCNN_ONEDNN": True,
    "JAXCNN_SHIFTED_DEPTHWISE": True,
    "JAXCNN_DEBUG": False,
}
PATHS = ("JAXCNN_CACHE_DIR", "JAXCNN_AUTO_TABLE")

# XLA CPU runs convolution backward passes slowly; this flag routes individual
# convolutions away from the YNN fusion and was measured faster on CNN train steps
# (experiments/bench_train.py). It only takes effect if set before jax is imported,
# which is why the command line (and the benchmarks, through the same function) set it.
XLA_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
# jaxlib versions on which the flags above were checked to parse; others are probed once
# (XLA aborts the process on a flag it does not know, so a probe runs in a subprocess)
# and the answer is kept per jaxlib version in the cache directory.
XLA_FLAGS_CHECKED = ("0.10.2",)
# Per-program XLA options of int8 inference (``jaxcnn eval`` / ``jaxcnn compress`` of an
# int8 run), applied through ``jax.jit(compiler_options=...)``: XLA's YNNPACK fusions of
# the float glue between oneDNN's int8 calls (rescale, ReLU, batch norm, max pool) made
# fmnist_cnn's int8 pass 27 ms instead of 11 ms (batch 128, experiments/bench_int8.py),
# while the float programs gain from them; keeping only the dot fusion type turns them off
# for these programs alone. The value is an enum name of jaxlib's DebugOptions, used only
# on the jaxlib versions of XLA_FLAGS_CHECKED (:func:`int8_compiler_options`).
INT8_XLA_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
# Compiled programs that took at least this long to compile are kept in the persistent
# cache (a second `jaxcnn train` of the same model skips the compile).
MIN_CACHED_COMPILE_SECS = 1.0
# the largest settings file (the XLA-flag record, a saved auto table) read from the cache
MAX_SETTINGS_FILE_BYTES = 1 << 20


def flag(name: str, environ=os.environ) -> bool:
    """The boolean setting ``name`` (one of :data:`FLAGS`) under the module's truth rule."""
    if name not in FLAGS:
        raise KeyError(f"jaxcnn.config: no boolean setting {name!r}; known: {', '.join(FLAGS)}")
    raw = environ.get(name, "").strip()
    if raw == "":
        return FLAGS[name]
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise ValueError(f"{name}: expected one of {'/'.join(TRUE)} or {'/'.join(FALSE)}, got {raw!r}")


def check_environment(environ=os.environ) -> list[str]:
    """Validate every ``JAXCNN_*`` setting (``ValueError`` for the first bad value) and
    return one warning per ``JAXCNN_*`` variable this version does not know (a typo such
    as ``JAXCNN_ONEDN=0`` would otherwise be ignored without a word)."""
    for name in FLAGS:
        flag(name, environ)
    known = sorted((*FLAGS, *PATHS))
    return [f"{n} is not a jaxcnn setting (ignored); known: {', '.join(known)}"
            for n in sorted(environ) if n.startswith("JAXCNN_") and n not in known
            and not n.startswith("JAXCNN_TEST_")]      # the test suite's own variables


def cache_dir(environ=os.environ) -> str:
    """``$JAXCNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxcnn``, else ``~/.cache/jaxcnn``."""
    if environ.get("JAXCNN_CACHE_DIR"):
        return environ["JAXCNN_CACHE_DIR"]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxcnn")


def auto_table_path(environ=os.environ) -> str | None:
    """The file ``backprop="auto"``'s saved table is read from: ``$JAXCNN_AUTO_TABLE`` if
    set, else ``<cache>/auto_table.json``; None when ``JAXCNN_AUTO_TABLE=0``."""
    path = environ.get("JAXCNN_AUTO_TABLE", "")
    if path.strip().lower() in FALSE:
        return None
    return path or os.path.join(cache_dir(environ), "auto_table.json")


def read_regular_file(path: str, limit: int = MAX_SETTINGS_FILE_BYTES) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; else
    ``OSError`` saying what it is (a FIFO or device would block or never end, a huge
    file would exhaust memory)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise OSError(f"{path}: {info.st_size} bytes, more than the {limit} a settings file may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)


def file_sha256(path: str) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str, data: str | bytes | bytearray) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``:
    a reader sees the old file or the whole new one, never a torn one; the temporary
    file is removed if writing fails."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w" if isinstance(data, str) else "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def jaxlib_version() -> str | None:
    """The installed jaxlib's version, without importing it (None if not installed)."""
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def int8_compiler_options() -> dict[str, str]:
    """:data:`INT8_XLA_OPTIONS` on a jaxlib where they were checked, else none."""
    return dict(INT8_XLA_OPTIONS) if jaxlib_version() in XLA_FLAGS_CHECKED else {}


def xla_flags_supported(flags=XLA_CPU_FLAGS, environ=os.environ, probe=None) -> bool:
    """Whether this jaxlib accepts ``flags``: known for :data:`XLA_FLAGS_CHECKED`, else
    probed once in a subprocess (``probe(flags) -> bool``) and remembered per version."""
    version = jaxlib_version()
    if version is None:
        return False
    if version in XLA_FLAGS_CHECKED:
        return True
    record = os.path.join(cache_dir(environ), "xla_flags.json")
    key = f"{version} {' '.join(flags)}"
    try:
        known = json.loads(read_regular_file(record))
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    if not isinstance(known.get(key), bool):
        known[key] = bool((probe or _probe_flags)(flags))
        try:
            os.makedirs(os.path.dirname(record), exist_ok=True)
            write_atomic(record, json.dumps(known))
        except OSError:
            pass                                    # unwritable cache: probe again next time
    return known[key]


def _probe_flags(flags) -> bool:
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    try:
        out = subprocess.run([sys.executable, "-c", "import jax, jax.numpy as jnp; jnp.ones(2).block_until_ready()"],
                             env=env, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def add_xla_cpu_flags(environ=os.environ, probe=None) -> bool:
    """Add :data:`XLA_CPU_FLAGS` to ``environ["XLA_FLAGS"]`` unless ``JAXCNN_XLA_TUNING``
    is off or this jaxlib does not accept them; True when they are in ``XLA_FLAGS`` after.
    Pass a copy of ``os.environ`` to prepare a subprocess's environment (benchmarks do)."""
    flags = environ.get("XLA_FLAGS", "")
    missing = [f for f in XLA_CPU_FLAGS if f.split("=")[0] not in flags]
    if not missing:
        return True
    if not flag("JAXCNN_XLA_TUNING", environ) or not xla_flags_supported(tuple(missing), environ, probe):
        return False
    environ["XLA_FLAGS"] = " ".join([flags] + missing).strip()
    return True


def apply_xla_tuning(environ=os.environ, probe=None) -> None:
    """Before jax loads: :func:`add_xla_cpu_flags`, and jax's persistent compilation
    cache under :func:`cache_dir` ``/xla`` (``JAXCNN_COMPILATION_CACHE=0`` opts out; a
    ``JAX_COMPILATION_CACHE_DIR`` already set is kept). Does nothing once jax is imported
    into this process (``environ`` is ``os.environ``): jax reads both only at import."""
    if environ is os.environ and "jax" in sys.modules:
        return
    if flag("JAXCNN_COMPILATION_CACHE", environ) and "JAX_COMPILATION_CACHE_DIR" not in environ:
        environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(cache_dir(environ), "xla")
        environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_CACHED_COMPILE_SECS))
    add_xla_cpu_flags(environ, probe)
