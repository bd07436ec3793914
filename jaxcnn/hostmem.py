"""Keep freed host memory in the process, so XLA:CPU's per-step buffers are not re-faulted.

XLA:CPU allocates the temporaries of every execution as one block (fmnist_cnn's train
step at batch 128: 136 MB) with ``posix_memalign`` from the worker thread that runs it.
glibc serves a block that large from a thread's arena with a fresh ``mmap`` and unmaps
it on ``free``, so every step touched ~35,000 new pages, each faulted in and zeroed by
the kernel. Measured (``experiments/bench_epoch.py``, the CLI's loop on Fashion-MNIST,
interleaved rounds): 154 ms per step and 34,900 page faults without this, 126 ms and
none with it -- from 0.82x to 1.07x PyTorch's loop.

:func:`keep_freed_memory` sets three glibc ``mallopt`` options: one arena for all
threads (``M_ARENA_MAX=1``: the main heap, which can hold blocks of any size), no
per-allocation ``mmap`` (``M_MMAP_MAX=0``) and no trimming of the heap's top
(``M_TRIM_THRESHOLD``). The heap grows to the few blocks the executions in flight need
and then recycles them. The cost: the process keeps its peak heap instead of returning
freed memory to the system (a few times one step's temporaries), and threads share one
malloc lock, which XLA's parallel compile contends for: mobilenet_v2's first step
(batch 128) built in 5.3 s with the policy and 4.5 s without it on a 2-core AMD EPYC
(before ``train.grad_norm`` took ~350 kernels out of it), while cifar_resnet18's
bfloat16 step ran 20% slower without one arena (``experiments/bench_compile.py``,
docs/performance.md).

It acts on threads that allocate for the first time afterwards, so it has to run before
jax starts its threads (before the first computation). The ``jaxcnn`` command calls it
at startup; a script that wants the same calls it first thing, or starts Python with
``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615``.
``JAXCNN_KEEP_HOST_MEMORY=0`` opts out of the command's call. On a C library other than
glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

from . import config

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8   # glibc's <malloc.h>
TRIM_THRESHOLD = -1        # M_TRIM_THRESHOLD takes an int; glibc reads -1 as SIZE_MAX: never trim

_applied: bool | None = None


def keep_freed_memory(environ=os.environ) -> bool:
    """Apply the policy above once; True if it is in effect (now or from an earlier call),
    False on another C library, when opted out, or if glibc refused an option."""
    global _applied
    if _applied is not None:
        return _applied
    if not config.flag("JAXCNN_KEEP_HOST_MEMORY", environ) or not _glibc():
        _applied = False
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _applied = False
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success, 0 on an invalid value
    _applied = all(mallopt(option, value) == 1 for option, value in
                   ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _applied


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):   # not a GNU C library
        return False


def applied() -> bool:
    """Whether :func:`keep_freed_memory` is in effect in this process."""
    return bool(_applied)
