"""Every engine a bundle can run on, and the one rule that picks one. The rule runs where the
model loads (each worker, for its own CPU); a launch only refuses an engine the bundle lacks.

Engines, by ``--precision``:
  ``fp32``, ``fp16``  the bundle's Keras models (``models.captioner.bundle``), on TensorFlow or
                      JAX, in that compute type;
  ``bf16``            on a machine that shows no GPU, the bundle's OpenVINO bf16 engine where it
                      has one (``beamcap quantize`` builds it); else the Keras models in bf16;
  ``int8``            the bundle's OpenVINO int8 engine (``models.captioner.openvino_engine``);
  ``auto``            on a GPU, fp32. On a CPU, the fastest of the bundle's OpenVINO engines
                      that passed its fidelity check and that this CPU runs well (bf16: AVX512_BF16
                      or AMX; int8: VNNI, AMX or AVX2), by the images/s ``beamcap quantize``
                      measured; else fp32. An engine that failed its check is never chosen by
                      ``auto``, only by its own name.

A new engine is one module with a loader plus its line in :data:`LOADERS` (and, for ``auto``,
in :data:`CPU_UNITS`).
"""

from __future__ import annotations

import dataclasses

from models import hardware
from models.captioner.manifest import KERAS_PARTS, VOCAB, Manifest
from models.configs import PRECISIONS as KERAS_PRECISIONS

AUTO = "auto"
KERAS, OPENVINO = "keras", "openvino"
PRECISIONS = (AUTO, *KERAS_PRECISIONS, "int8")
# The OpenVINO engines ``beamcap quantize`` builds, and whether this CPU runs each well
CPU_UNITS = {"int8": hardware.int8_units, "bf16": hardware.bf16_units}
PRECISION_HELP = (
    "the engine: auto (on CPUs the fastest of the bundle's engines made by `beamcap quantize` "
    "that passed its check and this CPU runs well: int8 with VNNI/AMX/AVX2, bf16 with "
    "AVX512_BF16/AMX; else, and on GPUs, fp32), int8 (the bundle's OpenVINO int8 engine), "
    "bf16 (its OpenVINO bf16 engine on CPUs, Keras in bf16 where it has none or on GPUs), "
    "fp32 (Keras on TensorFlow), fp16 (Keras, older GPUs)"
)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The engine a model runs on: its ``precision``, its ``runtime`` and why it was chosen."""

    precision: str
    runtime: str
    reason: str

    def record(self) -> dict:
        """What a run records of it: the choice, and the CPU it was made on."""
        return {
            **dataclasses.asdict(self),
            "cpu": hardware.cpu_name(),
            "cpu_flags": hardware.simd_flags(),
        }


def choose(precision: str, manifest: Manifest, *, gpu: bool | None = None) -> Choice:
    """The engine for ``precision`` on this machine (``gpu``: whether the model runs on a GPU,
    by default whether this machine shows one), by the rule in the module docstring."""
    gpu = hardware.gpu_visible() if gpu is None else gpu
    if precision == "int8":
        return Choice("int8", OPENVINO, "asked for")
    if precision == "bf16" and not gpu and not manifest.engine_problem("bf16"):
        return Choice("bf16", OPENVINO, "asked for; the bundle's bf16 engine")
    if precision != AUTO:
        return Choice(precision, KERAS, "asked for")
    if gpu:
        return Choice("fp32", KERAS, "auto on a GPU")
    candidates = [name for name in CPU_UNITS if _usable(manifest, name)]
    if not candidates:
        return Choice(
            "fp32", KERAS, "auto: no engine of the bundle passed its check and suits this CPU"
        )
    fastest = max(candidates, key=lambda name: _speed(manifest, name))
    others = ", ".join(name for name in candidates if name != fastest)
    beaten = f" (faster than {others})" if others else ""
    return Choice(fastest, OPENVINO, f"auto: passed its check, suits this CPU{beaten}")


def _usable(manifest: Manifest, precision: str) -> bool:
    if manifest.engine_problem(precision):
        return False
    return manifest.engines[precision].fidelity.passed and CPU_UNITS[precision]()


def _speed(manifest: Manifest, precision: str) -> float:
    """The images/s ``beamcap quantize`` measured the engine at; engines built before speeds
    were recorded (int8 alone) rank by :data:`CPU_UNITS`' order."""
    speed = manifest.engines[precision].speed
    return speed.images_per_second if speed else -list(CPU_UNITS).index(precision)


def refuse_missing(precision: str, manifest: Manifest, uri: str) -> None:
    """A launch's check: an OpenVINO engine asked for by name that the bundle cannot serve is
    refused (:class:`BundleError`), naming the command that makes one."""
    if precision == "int8":
        manifest.check_engine(uri, precision)


def parts_read(choice: Choice, manifest: Manifest) -> list[str]:
    """The bundle files the engine of ``choice`` reads: a launch checks those alone (a
    bundle's other engines may weigh hundreds of MB)."""
    if choice.runtime == OPENVINO:
        return [*manifest.engines[choice.precision].files, VOCAB]
    return list(KERAS_PARTS)


def load_captioner(
    uri: str,
    choice: Choice | str = AUTO,
    *,
    batch_size: int | None = None,
    manifest: Manifest | None = None,
):
    """A bundle's :class:`~models.captioner.captioner.Captioner` on the engine of ``choice``
    (a :class:`Choice`, or a ``--precision`` made one here by :func:`choose`), holding the
    choice's record; ``manifest``: the bundle's, where the caller has read it already."""
    manifest = Manifest.read(uri) if manifest is None else manifest
    if not isinstance(choice, Choice):
        choice = choose(choice, manifest)
    captioner = LOADERS[choice.runtime](uri, choice.precision, batch_size, manifest)
    captioner.engine = choice.record()
    return captioner


def _load_keras(uri: str, precision: str, batch_size: int | None, manifest: Manifest):
    from models.backend import load_keras

    load_keras()
    from models.captioner.bundle import load_bundle

    return load_bundle(uri, precision=precision, batch_size=batch_size, manifest=manifest)


def _load_openvino(uri: str, precision: str, batch_size: int | None, manifest: Manifest):
    from models.captioner.openvino_engine import load_engine

    return load_engine(uri, precision, manifest=manifest)


LOADERS = {KERAS: _load_keras, OPENVINO: _load_openvino}
