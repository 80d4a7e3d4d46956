"""What the benchmarks say of the CPU they ran on: its SIMD flags, and the caps that hold the
libraries to fewer instructions (an AVX-512 CPU running an AVX2-only one's kernels)."""

from __future__ import annotations

import os

from models.hardware import ISA_CAPS, bf16_units, cpu_name, simd_flags  # noqa: F401


def machine() -> str:
    """The CPU's name, cores and the SIMD flags oneDNN may use, and the caps in effect."""
    caps = [f"{var}={os.environ[var]}" for var in ISA_CAPS if os.environ.get(var)]
    capped = f" (capped: {', '.join(caps)})" if caps else ""
    return f"{cpu_name()}, {os.cpu_count()} cores, {' '.join(simd_flags())}{capped}"


if __name__ == "__main__":
    print(machine())
