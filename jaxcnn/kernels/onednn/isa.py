"""What this CPU lets oneDNN do: its instruction set, as oneDNN itself reports it.

Two of jaxcnn's oneDNN paths need more than AVX2, and on a CPU without it they are not
taken: their callers keep XLA's ops (bfloat16: the same function to bfloat16's rounding;
int8: the same integers, exactly):

* **bfloat16** (:func:`bfloat16`): oneDNN's bfloat16 convolutions, their gradients and
  batch normalisation need AVX-512 with native bfloat16 (``avx512_core_bf16``: Cooper
  Lake, Sapphire Rapids and later; AMX). On an AVX2 CPU (an AMD EPYC Zen 3 machine, seen
  here) oneDNN 3.2 creates no bfloat16 convolution at all ("could not create a primitive
  descriptor for a convolution forward propagation primitive"), so ``--precision bf16``
  failed there; it now runs XLA's bfloat16 convolutions.
* **exact int8** (:func:`exact_int8`): oneDNN sums int8 products exactly in int32 only with
  VNNI (``vpdpbusd``: ``avx2_vnni``, ``avx512_core_vnni`` and later) or AMX. Without them
  its int8 kernels add pairs of u8 x s8 products into int16 with saturation (oneDNN's
  "Nuances of int8 computations"), and a convolution of full-range int8 operands came out
  up to 58.6 away from lax's exact int32 sums on that machine: the int8 path there keeps
  lax's exact integer ops (slow, but what the fake-quant simulation promises).

The answer is oneDNN's ``dnnl_get_effective_cpu_isa``, which honours ``ONEDNN_MAX_CPU_ISA``
(oneDNN reads it once, at its first primitive): ``ONEDNN_MAX_CPU_ISA=AVX2`` makes a bigger
CPU take the fallbacks, which is how the tests run them on every machine. Asked once and
remembered.
"""
from __future__ import annotations

import functools

from . import build

# dnnl_cpu_isa_t (oneapi/dnnl/dnnl_types.h): each ISA's value holds the bits of those it
# extends, so "has X" is ``isa & X == X``.
ISA_NAMES = {0x0: "default", 0x1: "sse41", 0x3: "avx", 0x7: "avx2", 0xF: "avx2_vnni", 0x1F: "avx2_vnni_2",
             0x27: "avx512_core", 0x67: "avx512_core_vnni", 0xE7: "avx512_core_bf16", 0x1EF: "avx512_core_fp16",
             0xFEF: "avx512_core_amx", 0x1FEF: "avx512_core_amx_fp16"}
AVX2_VNNI, AVX512_CORE_VNNI, AVX512_CORE_BF16 = 0xF, 0x67, 0xE7


@functools.cache
def cpu_isa() -> int | None:
    """oneDNN's effective ISA (a ``dnnl_cpu_isa_t`` value), None when the library is not
    loaded."""
    lib = build.library()
    try:
        return None if lib is None else int(lib.dnnl_get_effective_cpu_isa())
    except AttributeError:      # a oneDNN without the query: take no path that needs more than AVX2
        return None


def _has(isa: int | None, bits: int) -> bool:
    return isa is not None and isa & bits == bits


def name(isa: int | None = None) -> str:
    """The ISA's oneDNN name (``"avx2"``, ``"avx512_core_amx"``; default: this CPU's),
    ``"unavailable"`` without the library."""
    isa = cpu_isa() if isa is None else isa
    return "unavailable" if isa is None else ISA_NAMES.get(isa, hex(isa))


def bfloat16(isa: int | None = None) -> bool:
    """True when oneDNN runs jaxcnn's bfloat16 primitives natively here (default: this CPU)."""
    return _has(cpu_isa() if isa is None else isa, AVX512_CORE_BF16)


def exact_int8(isa: int | None = None) -> bool:
    """True when oneDNN's int8 products sum exactly in int32 here: VNNI or AMX."""
    isa = cpu_isa() if isa is None else isa
    return _has(isa, AVX2_VNNI) or _has(isa, AVX512_CORE_VNNI)


def describe_bfloat16() -> str:
    """One line saying where a bfloat16 run's convolutions run and why (what ``jaxcnn train
    --precision bf16`` prints)."""
    if bfloat16():
        return f"bfloat16: oneDNN's kernels (CPU ISA {name()})"
    why = "oneDNN unavailable" if cpu_isa() is None else \
        f"this CPU's oneDNN ISA is {name()}; its bfloat16 kernels need {ISA_NAMES[AVX512_CORE_BF16]}"
    return f"bfloat16: XLA's convolutions ({why})"
