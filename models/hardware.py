"""What the machine running the model offers, read without importing a framework: the CPU's
flags from /proc/cpuinfo, whether oneDNN may use bf16 instructions, and a visible GPU."""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path

# Caps that hold oneDNN (TensorFlow, OpenVINO), OpenBLAS and NumPy to fewer instructions: with
# all three, an AVX-512 CPU runs the kernels an AVX2-only one would (docs/performance.md).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")


@functools.cache
def cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_flags() -> set[str]:
    return set(cpuinfo().split())


def bf16_units() -> bool:
    """Whether oneDNN may use bf16 instructions here (none on AVX2 CPUs, nor under a cap)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}) and not os.environ.get(ISA_CAPS[0])


def gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU to its processes (a device node, and
    ``CUDA_VISIBLE_DEVICES`` not hiding it)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1", "none", "NoDevFiles")
    return not hidden and bool(glob.glob("/dev/nvidia[0-9]*"))


def training_precision() -> str:
    """The compute type to train in: bf16 where there are bf16 units (a GPU, AVX512_BF16 or
    AMX), else fp32."""
    return "bf16" if gpu_visible() or bf16_units() else "fp32"
