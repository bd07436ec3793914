"""Build (once per source and jaxlib version) and load the oneDNN convolution handlers.

``conv.cc`` is compiled on first use with the system C++ compiler (``$CXX``, else
``c++``) against jaxlib's XLA FFI headers and oneDNN 3.x -- the pip packages
``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` (jaxcnn's dependencies on x86-64 Linux,
installed under ``sys.prefix``), else a oneDNN 3 the compiler finds on its own -- into
``<jaxcnn cache dir>/onednn/`` (``$JAXCNN_CACHE_DIR``, else ``~/.cache/jaxcnn``), then
loaded and registered with XLA as the FFI targets of :data:`TARGETS`. A later process finds the built
library and only loads it. Without a compiler or oneDNN nothing fails: :func:`load`
returns False, :func:`reason` says why, and "auto" keeps its other convolution.
``JAXCNN_ONEDNN=0`` switches the path off. Loading sets ``OMP_WAIT_POLICY=PASSIVE``
unless it is set (see :func:`_load`). :func:`describe` is the one line a command prints
to say which convolution runs and why.

The cache is not trusted (a full disk or a killed copy leaves a truncated ``.so``, and
``dlopen`` of a truncated ELF file dies by SIGBUS when it touches the missing pages, with
no message, in every later process):

* each library has its sha256 beside it (``<library>.sha256``, ``sha256sum`` format),
  written after the compiler succeeded; a library whose bytes do not match it (or that
  has none) is never loaded: it is removed and rebuilt, with one logged line;
* builds hold ``<cache>/onednn/.lock`` (``flock``), so concurrent processes (pytest-xdist
  workers, several processes of one run) build once and never see a half-written file;
  under the lock no build is in progress, so ``tmp*.so`` files there were left by a
  killed build and are removed;
* a failed build is remembered in ``<cache>/onednn/failed_builds.json``, keyed by the
  library's key (source, jax/jaxlib, oneDNN install) and the compiler (``$CXX``, the
  executable it resolves to, its size and mtime): later processes with the same
  compiler and source do not re-run a failing compile (one logged line the first time,
  :func:`reason` afterwards). Installing another compiler, upgrading it, changing
  ``$CXX`` or the source retries; so does deleting the record. Failures that say nothing
  about the compiler or source (a full disk, a compiler killed by a signal) are not
  remembered.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading

from ... import config

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv.cc")
ENV = "JAXCNN_ONEDNN"
# FFI target name -> exported handler symbol in conv.cc
TARGETS = {
    "jaxcnn_onednn_conv_forward": "JaxcnnOnednnConvForward",
    "jaxcnn_onednn_conv_input_grad": "JaxcnnOnednnConvInputGrad",
    "jaxcnn_onednn_conv_weight_grad": "JaxcnnOnednnConvWeightGrad",
    "jaxcnn_onednn_conv_forward_bf16": "JaxcnnOnednnConvForwardBf16",
    "jaxcnn_onednn_conv_input_grad_bf16": "JaxcnnOnednnConvInputGradBf16",
    "jaxcnn_onednn_conv_weight_grad_bf16": "JaxcnnOnednnConvWeightGradBf16",
    "jaxcnn_onednn_conv_bias_forward": "JaxcnnOnednnConvBiasForward",
    "jaxcnn_onednn_conv_bias_forward_bf16": "JaxcnnOnednnConvBiasForwardBf16",
    "jaxcnn_onednn_conv_weight_bias_grad": "JaxcnnOnednnConvWeightBiasGrad",
    "jaxcnn_onednn_conv_weight_bias_grad_bf16": "JaxcnnOnednnConvWeightBiasGradBf16",
    "jaxcnn_onednn_conv_forward_s8": "JaxcnnOnednnConvForwardS8",
    "jaxcnn_onednn_matmul_s8": "JaxcnnOnednnMatmulS8",
    "jaxcnn_onednn_conv_s8_fused": "JaxcnnOnednnConvS8Fused",
    "jaxcnn_onednn_matmul_s8_fused": "JaxcnnOnednnMatmulS8Fused",
    "jaxcnn_onednn_max_pool_s8": "JaxcnnOnednnMaxPoolS8",
    "jaxcnn_onednn_batch_norm_forward": "JaxcnnOnednnBatchNormForward",
    "jaxcnn_onednn_batch_norm_forward_bf16": "JaxcnnOnednnBatchNormForwardBf16",
    "jaxcnn_onednn_batch_norm_backward": "JaxcnnOnednnBatchNormBackward",
    "jaxcnn_onednn_batch_norm_backward_bf16": "JaxcnnOnednnBatchNormBackwardBf16",
}
COMPILE_TIMEOUT_S = 300
CHECKSUM_SUFFIX = ".sha256"
FAILED_BUILDS = "failed_builds.json"
# compiler output meaning the machine, not the compiler or source, failed: not remembered
TRANSIENT = ("No space left on device", "Disk quota exceeded", "File size limit exceeded", "Cannot allocate memory",
             "Killed signal")

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {"loaded": None, "reason": None, "path": None, "library": None}


class BuildError(OSError):
    """The compile failed; ``remember`` is False when the cause was the machine's (a full
    disk, a killed compiler), not the compiler's or the source's."""

    def __init__(self, message: str, remember: bool = True):
        super().__init__(message)
        self.remember = remember


def library_path(environ=os.environ) -> str:
    """Where the built library for this source, jax/jaxlib and oneDNN install lives (the
    library finds oneDNN by an absolute path: two environments sharing the cache
    directory each get their own)."""
    import jax
    import jaxlib

    with open(SOURCE, "rb") as f:
        key = f.read() + f"{jaxlib.__version__} {jax.__version__} {onednn_prefix()}".encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    return os.path.join(config.cache_dir(environ), "onednn", f"jaxcnn_onednn_conv_{digest}.so")


def onednn_prefix() -> str | None:
    """The environment prefix the oneDNN pip packages installed headers and library into."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        if os.path.exists(os.path.join(prefix, "include", "oneapi", "dnnl", "dnnl.hpp")):
            return prefix
    return None


def compiler(environ=os.environ) -> list[str]:
    """The compiler command: ``$CXX`` split as a shell would, else ``c++``."""
    return shlex.split(environ.get("CXX") or "c++")


def compiler_identity(environ=os.environ) -> str:
    """``$CXX`` and the executable it resolves to, with that file's size and mtime: a new
    or upgraded compiler has another identity (so a remembered failure is retried)."""
    cxx = compiler(environ)
    found = shutil.which(cxx[0]) if cxx else None
    if found is None:
        return f"{shlex.join(cxx)} (not found)"
    real = os.path.realpath(found)
    try:
        info = os.stat(real)
        return f"{shlex.join(cxx)} -> {real} {info.st_size} {info.st_mtime_ns}"
    except OSError:
        return f"{shlex.join(cxx)} -> {real}"


def failure_key(path: str | None = None, environ=os.environ) -> str:
    """The key of a failed build in :data:`FAILED_BUILDS`: the library's name (source,
    jax/jaxlib and oneDNN install) and :func:`compiler_identity`."""
    path = path or library_path(environ)
    return f"{os.path.basename(path)} | {compiler_identity(environ)}"


def compile_command(output: str) -> list[str]:
    """The C++ compiler command (``$CXX`` or ``c++``) that builds the oneDNN custom-call
    library at ``output``."""
    import jax
    prefix = onednn_prefix()
    where = [] if prefix is None else [f"-I{os.path.join(prefix, 'include')}", f"-L{os.path.join(prefix, 'lib')}",
                                       f"-Wl,-rpath,{os.path.join(prefix, 'lib')}"]
    return compiler() + ["-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}", *where,
                         SOURCE, "-o", output, "-ldnnl"]


sha256_of = config.file_sha256       # what is recorded beside a built library


def verify(path: str) -> str | None:
    """None when ``path`` holds exactly the bytes its checksum file records, else why not
    (missing, no checksum, a different checksum -- a truncated or damaged copy)."""
    if not os.path.isfile(path):
        return "not built"
    try:
        recorded = config.read_regular_file(path + CHECKSUM_SUFFIX, 4096).decode("ascii", "replace").split()
    except OSError:
        return "no checksum recorded beside it"
    actual = sha256_of(path)
    if not recorded or recorded[0] != actual:
        return f"its sha256 does not match the one recorded ({os.path.getsize(path)} bytes: truncated or damaged)"
    return None


_write_atomic = config.write_atomic


def _build(path: str) -> None:
    """Compile to a temporary name, record its checksum, then rename: a reader sees no
    library or a whole one (and a whole one's checksum)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        try:
            out = subprocess.run(compile_command(tmp), capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except FileNotFoundError:
            raise BuildError(f"compiler {shlex.join(compiler())!r} not found (set $CXX)") from None
        except subprocess.TimeoutExpired:
            raise BuildError(f"compiling {os.path.basename(SOURCE)} took over {COMPILE_TIMEOUT_S} s") from None
        if out.returncode != 0:
            text = (out.stderr or out.stdout).strip()
            lines = text.splitlines()
            first_error = next((ln for ln in lines if "error" in ln), lines[0] if lines else "")
            message = f"compiling {os.path.basename(SOURCE)} failed: {first_error.strip() or f'exit {out.returncode}'}"
            raise BuildError(message, remember=out.returncode > 0 and not any(t in text for t in TRANSIENT))
        if os.path.getsize(tmp) == 0:
            raise BuildError(f"the compiler wrote an empty {os.path.basename(path)}", remember=False)
        _write_atomic(path + CHECKSUM_SUFFIX, f"{sha256_of(tmp)}  {os.path.basename(path)}\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def _build_lock(directory: str):
    """Hold ``directory/.lock`` exclusively (one builder at a time across processes).
    Where it cannot be taken (no ``fcntl``, a read-only cache) the block runs unlocked:
    loading a good library needs no lock, and a build there fails on its own."""
    try:
        import fcntl
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)                                # closing releases the lock


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the ``tmp*.so`` files in ``directory`` (call under :func:`_build_lock`:
    then no build is writing one, so each was left by a killed build); returns them."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if name.startswith("tmp") and name.endswith(".so"):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _failures_path(directory: str) -> str:
    return os.path.join(directory, FAILED_BUILDS)


def remembered_failure(key: str, directory: str) -> str | None:
    """The reason recorded for a failed build under ``key``, or None."""
    try:
        known = json.loads(config.read_regular_file(_failures_path(directory)))
    except (OSError, ValueError):
        return None
    entry = known.get(key) if isinstance(known, dict) else None
    return entry.get("reason") if isinstance(entry, dict) and isinstance(entry.get("reason"), str) else None


def _remember_failure(key: str, directory: str, message: str) -> None:
    path = _failures_path(directory)
    try:
        known = json.loads(config.read_regular_file(path))
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    known[key] = {"reason": message}
    try:
        _write_atomic(path, json.dumps(known, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass                                        # unwritable cache: the next process tries again


def _remove(*paths: str) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def _ensure_built(path: str) -> None:
    """Leave a verified library at ``path`` or raise OSError (BuildError) saying why not."""
    directory = os.path.dirname(path)
    with _build_lock(directory):
        remove_stale_temporaries(directory)
        problem = verify(path)
        if problem is None:
            return
        damaged = problem if os.path.exists(path) else None
        if damaged:
            # never dlopen it; a failed rebuild must not leave it for the next process either
            _remove(path, path + CHECKSUM_SUFFIX)
        key = failure_key(path)
        earlier = remembered_failure(key, directory)
        if earlier is not None:
            raise BuildError(f"{earlier} (remembered in {_failures_path(directory)}; delete it to retry)")
        try:
            _build(path)
        except BuildError as e:
            if e.remember:
                _remember_failure(key, directory, str(e))
            what = f"the cached {os.path.basename(path)} was removed ({damaged}) and rebuilding it failed: {e}" \
                if damaged else f"oneDNN convolution unavailable: {e}"
            log.warning("jaxcnn: %s; using XLA's convolutions", what)
            raise
        if damaged:
            log.warning("jaxcnn: rebuilt %s: the cached copy was not loaded (%s)", path, damaged)


def load() -> bool:
    """Build if needed, load and register the handlers; True when the oneDNN path can be
    used in this process (the answer is remembered)."""
    with _lock:
        if _state["loaded"] is None:
            _state["loaded"] = _load()
        return _state["loaded"]


def _load() -> bool:
    if not config.flag(ENV):
        _state["reason"] = f"oneDNN switched off by {ENV}={os.environ.get(ENV)}"
        return False
    try:
        import jax
        path = library_path()
        _ensure_built(path)
        # GNU OpenMP's threads spin after every parallel region by default, taking cores
        # from the XLA fusions that follow each convolution: fmnist_cnn's step took
        # 182-206 ms so and 148-164 ms with passive waiting, at no cost to the convolutions
        # themselves. Read once, when libgomp loads (with the library below); a value the
        # user set wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        lib = ctypes.cdll.LoadLibrary(path)
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except (OSError, subprocess.SubprocessError, AttributeError) as e:
        _state["reason"] = f"oneDNN convolution unavailable: {' '.join(str(e).split())}"
        return False
    _state["path"], _state["library"] = path, lib
    return True


def library():
    """The loaded library's ``ctypes`` handle (oneDNN's own functions are found through it,
    by ``dlsym`` of its dependencies); None unless :func:`load` returned True."""
    return _state["library"] if load() else None


def reason() -> str | None:
    """Why :func:`load` returned False (None if it did not, or was not called)."""
    return _state["reason"]


def describe(mode: str = "auto", conv_choice: str = "onednn") -> str:
    """One line saying which convolution a run's float32 channels-last convs use and why:
    ``convolutions: oneDNN (<library path>)`` or ``convolutions: XLA's (<why not oneDNN>)``.

    ``mode``: the backprop mode (only ``"auto"`` uses oneDNN); ``conv_choice``: the
    auto table's entry for ``conv`` (``jaxcnn.dispatch.auto_table()["conv"]``). Builds
    and loads the library when they would use it (what the run would do anyway)."""
    if mode != "auto":
        return f"convolutions: XLA's (backprop mode {mode!r} does not use oneDNN)"
    if conv_choice != "onednn":
        return f"convolutions: XLA's (the auto table chooses {conv_choice!r} for conv)"
    if load():
        return f"convolutions: oneDNN ({_state['path']})"
    return f"convolutions: XLA's ({reason()})"
