"""What the benchmarks say of the CPU they ran on: its SIMD flags, and the caps that hold the
libraries to fewer instructions (an AVX-512 CPU running an AVX2-only one's kernels)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# What caps the instruction set that oneDNN (TensorFlow, OpenVINO), OpenBLAS and NumPy use:
# with all three, an AVX-512 CPU runs the kernels an AVX2-only one would (docs/performance.md).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
SIMD = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_flags() -> set[str]:
    return set(cpuinfo().split())


def bf16_units() -> bool:
    """Whether oneDNN may use bf16 instructions here (none on AVX2 CPUs, nor under a cap)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}) and not os.environ.get(ISA_CAPS[0])


def machine() -> str:
    """The CPU's name, cores and SIMD flags, and the caps in effect."""
    name = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    flags = cpu_flags()
    simd = [flag for flag in SIMD if flag in flags]
    caps = [f"{var}={os.environ[var]}" for var in ISA_CAPS if os.environ.get(var)]
    capped = f" (capped: {', '.join(caps)})" if caps else ""
    return f"{name}, {os.cpu_count()} cores, {' '.join(simd)}{capped}"
