"""Build (once per source and jaxlib version) and load the oneDNN convolution handlers.

``conv.cc`` is compiled on first use with the system C++ compiler (``$CXX``, else
``c++``) against jaxlib's XLA FFI headers and oneDNN 3.x -- the pip packages
``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` (jaxcnn's dependencies on x86-64 Linux,
installed under ``sys.prefix``), else a oneDNN 3 the compiler finds on its own -- into
``<jaxcnn cache dir>/onednn/`` (``$JAXCNN_CACHE_DIR``, else ``~/.cache/jaxcnn``), then
loaded and registered with XLA as three FFI targets. A later process finds the built
library and only loads it. Without a compiler or oneDNN nothing fails: :func:`load`
returns False, :func:`reason` says why, and "auto" keeps its other convolution.
``JAXCNN_ONEDNN=0`` switches the path off. Loading sets ``OMP_WAIT_POLICY=PASSIVE``
unless it is set (see :func:`_load`).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
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
}
_lock = threading.Lock()
_state: dict = {"loaded": None, "reason": None}


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


def compile_command(output: str) -> list[str]:
    import jax
    cxx = shlex.split(os.environ.get("CXX") or "c++")
    prefix = onednn_prefix()
    where = [] if prefix is None else [f"-I{os.path.join(prefix, 'include')}", f"-L{os.path.join(prefix, 'lib')}",
                                       f"-Wl,-rpath,{os.path.join(prefix, 'lib')}"]
    return cxx + ["-O2", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}", *where, SOURCE,
                  "-o", output, "-ldnnl"]


def _build(path: str) -> None:
    """Compile to a temporary name and rename: concurrent builders (pytest-xdist
    workers, several processes of one run) each finish with a whole file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        out = subprocess.run(compile_command(tmp), capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            lines = (out.stderr or out.stdout).strip().splitlines()
            first_error = next((ln for ln in lines if "error" in ln), lines[0] if lines else "")
            raise OSError(f"compiling {os.path.basename(SOURCE)} failed: {first_error.strip()}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load() -> bool:
    """Build if needed, load and register the handlers; True when the oneDNN path can be
    used in this process (the answer is remembered)."""
    with _lock:
        if _state["loaded"] is None:
            _state["loaded"] = _load()
        return _state["loaded"]


def _load() -> bool:
    if not config.flag(ENV):
        _state["reason"] = f"switched off by {ENV}=0"
        return False
    try:
        import jax
        path = library_path()
        if not os.path.exists(path):
            _build(path)
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
        _state["reason"] = f"oneDNN convolution unavailable: {e}"
        return False
    return True


def reason() -> str | None:
    """Why :func:`load` returned False (None if it did not, or was not called)."""
    return _state["reason"]
