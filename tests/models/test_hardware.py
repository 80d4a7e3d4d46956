"""What the engine rule reads of the CPU: its SIMD flags, less those a oneDNN cap hides."""

from models import hardware

ZEN4 = frozenset({"fpu", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"})


def test_a_onednn_cap_hides_the_units_above_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: ZEN4)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert hardware.simd_flags() == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert hardware.bf16_units() and hardware.int8_units()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert hardware.simd_flags() == ["avx2", "avx512f", "avx512_vnni"]
    assert not hardware.bf16_units() and hardware.int8_units()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.simd_flags() == ["avx2"] and hardware.int8_units()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"fpu", "sse4_2"}))
    assert hardware.simd_flags() == [] and not hardware.int8_units()
