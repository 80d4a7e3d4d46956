"""What the benchmarks say of the CPU they ran on: its SIMD flags, and the caps that hold the
libraries to fewer instructions (an AVX-512 CPU running an AVX2-only one's kernels)."""

from __future__ import annotations

import os
import platform

from models.hardware import ISA_CAPS, bf16_units, cpu_flags, cpuinfo  # noqa: F401

SIMD = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


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
