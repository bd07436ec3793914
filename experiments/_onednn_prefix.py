"""Point jaxcnn's oneDNN build at another install, for benchmarks comparing oneDNN
versions (``$JAXCNN_BENCH_ONEDNN_PREFIX``: a prefix with ``include/oneapi/dnnl`` and
``lib/libdnnl.so``, e.g. ``pip install --prefix /tmp/onednn26p onednn==2026.1.*
onednn-devel==2026.1.*``). Two oneDNN 3 libraries share one soname, so one process can
load only one: each version is timed in its own process. The prefix's ``lib`` must also
be on ``LD_LIBRARY_PATH`` (set before the process starts) when the library needs
runtimes beside it (2026.1's SYCL/TBB build does; its CPU engine is a SYCL device,
found through ``OCL_ICD_FILENAMES`` = the prefix's ``libintelocl.so``): :func:`env_for`
sets both for a child process."""
from __future__ import annotations

import os

ENV = "JAXCNN_BENCH_ONEDNN_PREFIX"


def apply(prefix: str | None = None) -> str | None:
    """Make :mod:`jaxcnn.kernels.onednn.build` compile against ``prefix`` (default:
    ``$JAXCNN_BENCH_ONEDNN_PREFIX``); returns the prefix in effect (None: the default)."""
    prefix = prefix or os.environ.get(ENV) or None
    if prefix:
        from jaxcnn.kernels.onednn import build
        build.onednn_prefix = lambda: prefix
    return prefix


def env_for(prefix: str | None, environ=os.environ) -> dict:
    """The environment of a child process that should use ``prefix`` (None: the default)."""
    env = {k: v for k, v in environ.items() if k != ENV}
    if prefix:
        env[ENV] = prefix
        lib = os.path.join(prefix, "lib")
        env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        ocl = os.path.join(lib, "libintelocl.so")
        if os.path.exists(ocl):     # a SYCL-runtime oneDNN: its CPU engine is this OpenCL CPU device
            env["OCL_ICD_FILENAMES"] = ocl
    return env


def version() -> str:
    """The loaded oneDNN's version, from the library itself (after onednn.load())."""
    import ctypes
    try:
        lib = ctypes.CDLL("libdnnl.so.3")

        class V(ctypes.Structure):
            _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                        ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]
        lib.dnnl_version.restype = ctypes.POINTER(V)
        v = lib.dnnl_version().contents
        return f"{v.major}.{v.minor}.{v.patch}"
    except OSError:
        return "unknown"
