"""What the machine running the model offers, read without importing a framework: the CPU's
name and SIMD flags from /proc/cpuinfo (less those a cap hides from oneDNN), the bf16 and int8
units beamcap's engines use, and a visible GPU."""

from __future__ import annotations

import functools
import glob
import os
import platform
from pathlib import Path

# Caps that hold oneDNN (TensorFlow, OpenVINO), OpenBLAS and NumPy to fewer instructions: with
# all three, an AVX-512 CPU runs the kernels an AVX2-only one would (docs/performance.md).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
# The SIMD flags that decide an engine's speed, each with the oneDNN ISA cap that still allows it
SIMD = {
    "avx2": "AVX2",
    "avx512f": "AVX512_CORE",
    "avx512_vnni": "AVX512_CORE_VNNI",
    "avx512_bf16": "AVX512_CORE_BF16",
    "amx_int8": "AVX512_CORE_AMX",
    "amx_bf16": "AVX512_CORE_AMX",
}
_CAP_ORDER = ("AVX2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX")


@functools.cache
def cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


@functools.cache
def cpu_flags() -> frozenset[str]:
    return frozenset(cpuinfo().split())


def cpu_name() -> str:
    lines = (line.split(":", 1) for line in cpuinfo().splitlines() if ":" in line)
    return next((value.strip() for key, value in lines if key.strip() == "model name"), "") or (
        platform.processor() or "unknown CPU"
    )


def simd_flags() -> list[str]:
    """The CPU's flags of :data:`SIMD` that oneDNN may use: all it has, unless
    ``ONEDNN_MAX_CPU_ISA`` caps it below some."""
    cap = os.environ.get(ISA_CAPS[0], "").upper()
    allowed = _CAP_ORDER[: _CAP_ORDER.index(cap) + 1] if cap in _CAP_ORDER else _CAP_ORDER
    flags = cpu_flags()
    return [flag for flag, isa in SIMD.items() if flag in flags and isa in allowed]


def bf16_units() -> bool:
    """Whether oneDNN may use bf16 instructions here (none on AVX2 CPUs, nor under a cap)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(simd_flags()))


def int8_units() -> bool:
    """Whether int8 inference beats fp32 here: VNNI or AMX, and AVX2 alone too (measured
    2.3-3.0x TensorFlow's fp32 on AVX2 kernels, docs/performance.md)."""
    return bool({"avx2", "avx512_vnni", "amx_int8"} & set(simd_flags()))


def gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU to its processes (a device node, and
    ``CUDA_VISIBLE_DEVICES`` not hiding it)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1", "none", "NoDevFiles")
    return not hidden and bool(glob.glob("/dev/nvidia[0-9]*"))


def training_precision() -> str:
    """The compute type to train in: bf16 where there are bf16 units (a GPU, AVX512_BF16 or
    AMX), else fp32."""
    return "bf16" if gpu_visible() or bf16_units() else "fp32"
