"""``beamcap quantize``: add the CPU engines (int8, bf16) to a model bundle, checked on your images.

    beamcap quantize --model data/im2txt --calibration photos/
    beamcap quantize --model gs://B/models/v1 --calibration gs://B/incoming/ \\
        --calibration-images 500

Exports the bundle's encoder and decoder to OpenVINO and makes its CPU engines: int8, the
encoder quantized on ``--calibration-images`` of the images (NNCF's post-training quantization:
images like the ones you will caption, never blank ones), and bf16, the encoder at OpenVINO's
bf16 precision (made only on a CPU with bf16 units, AVX512_BF16 or AMX, where it can be
checked). Each is compared with the fp32 model on ``--check-images`` others: the cosine of their
features, the share of identical best captions, and the images/s of each on this CPU. The
engines and those figures go into the bundle (its model id does not change). ``beamcap caption
--precision auto`` runs, on each worker's CPU, the fastest engine that met the gate (mean cosine
>= 0.99, >= 90 % identical best captions) and that CPU runs well; one below it runs only when
asked by name (``--precision int8``). Run it again to replace the engines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import logging
import sys

import numpy as np

from models import storage
from models.captioner.beam_search import BEAM_SIZE, MAX_LENGTH
from models.captioner.manifest import KERAS_PARTS, EngineSection, Manifest, verify_bundle
from models.configs import SettingsError, setting
from pipeline.settings import parse_job

MISSING_NNCF = "beamcap quantize needs NNCF: pip install 'beamcap[quantize]'"


@dataclasses.dataclass(frozen=True)
class QuantizeSettings:
    model: str = setting(
        None, "the model bundle to add the engine to (local or gs://)", type=str, required=True
    )
    calibration: str = setting(
        None,
        "images, folders (searched recursively) or globs, local or gs://: photos like the ones "
        "you will caption",
        type=str,
        required=True,
        uris=True,
        many=True,
    )
    calibration_images: int = setting(300, "images to calibrate on", minimum=1, maximum=100_000)
    check_images: int = setting(
        100, "further images to compare the engine with the fp32 model on", minimum=1
    )
    beam_size: int = setting(BEAM_SIZE, "the check's beam width: as you will caption", minimum=1)
    max_length: int = setting(MAX_LENGTH, "the check's longest caption, <end> included", minimum=1)

    @property
    def search(self) -> dict:
        return {"beam_size": self.beam_size, "max_length": self.max_length}


def list_images(values: list[str]) -> list[str]:
    """Files named by ``values`` (files, folders searched recursively, globs; local or
    ``gs://``), in a stable order that mixes the folders (so a sample of them is not one
    folder's); a value that names nothing is refused."""
    found = []
    for value in values:
        if any(char in value for char in "*?["):
            matched = storage.glob(value)
        elif storage.exists(value):
            matched = [value]
        else:
            matched = [path for path, _ in storage.files_under(value)]
        if not matched:
            raise SettingsError(f"--calibration: {value} holds no file")
        found += matched
    return sorted(set(found), key=lambda uri: hashlib.sha1(uri.encode()).hexdigest())


def decode_sample(uris: list[str], count: int, manifest: Manifest) -> np.ndarray:
    """The first ``count`` of ``uris`` that decode, as the caption job decodes them for this
    bundle: uint8 [N, S, S, 3]. Files that are not images are passed over."""
    from transforms.decode import decode_image

    size, preprocessing = manifest.encoder.image_size, manifest.encoder.preprocessing
    images, skipped = [], 0
    for uri in uris:
        if len(images) == count:
            break
        try:
            data = storage.read_bytes(uri)
            images.append(decode_image(data, size, preprocessing=preprocessing)[0])
        except Exception:  # noqa: BLE001 - not an image, truncated...: the next one
            skipped += 1
    if len(images) < 2:
        raise SettingsError(
            f"--calibration: {len(images)} of {len(images) + skipped} files decode as images; "
            "at least 2 are needed"
        )
    if skipped:
        logging.info("passed over %d files that are not images", skipped)
    return np.stack(images)


def add_engines(
    model: str,
    calibration: list[str],
    *,
    calibration_images: int = 300,
    check_images: int = 100,
    search: dict | None = None,
) -> dict[str, EngineSection]:
    """Builds, checks and stores the bundle's CPU engines (see the module docstring); returns
    the manifest's ``engines`` sections of those made."""
    if not importlib.util.find_spec("nncf"):
        raise SettingsError(MISSING_NNCF)
    manifest = verify_bundle(model, names=KERAS_PARTS)  # its Keras models: what it reads
    images = decode_sample(list_images(calibration), calibration_images + check_images, manifest)
    if len(images) < calibration_images + check_images:  # fewer than asked: 3/4 calibrate
        calibration_images = max(1, len(images) * 3 // 4)
        logging.warning(
            "only %d images decode: %d to calibrate on, %d to check",
            len(images),
            calibration_images,
            len(images) - calibration_images,
        )
    sample, check = images[:calibration_images], images[calibration_images:]
    from models.backend import load_keras

    load_keras()
    from models.captioner import engine_build
    from models.captioner.bundle import load_bundle
    from models.captioner.openvino_engine import openvino_captioner

    bundle, precisions = load_bundle(model, manifest=manifest), engine_build.buildable()
    print(f"making the {' and '.join(precisions)} engines, calibrated on {len(sample)} images "
          "...", file=sys.stderr)  # fmt: skip
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is results'
        built = engine_build.build_engines(bundle, sample, precisions)
    engines = {
        precision: openvino_captioner(parts.__getitem__, bundle.vocabulary, manifest, precision)
        for precision, parts in built.items()
    }
    print(f"comparing with the fp32 model on {len(check)} images ...", file=sys.stderr)
    measured = engine_build.measure(bundle, engines, check, **(search or {}))
    calibrated = {"images": len(sample), "sources": calibration}
    sections = {}
    for precision, parts in built.items():
        section = engine_build.engine_section(manifest, precision, calibrated, measured[precision])
        stored = engine_build.store_engine(model, precision, parts, section)
        sections[precision] = stored.engines[precision]
    return sections


def describe(precision: str, section: EngineSection) -> str:
    """An engine's fidelity and speed in one line, and what ``--precision auto`` makes of it."""
    from models.captioner.engine_build import MIN_COSINE, MIN_SAME_CAPTION

    fidelity, speed = section.fidelity, section.speed
    figures = (
        f"feature cosine {fidelity.feature_cosine_mean:.4f} "
        f"(min {fidelity.feature_cosine_min:.4f}), same best caption "
        f"{fidelity.same_best_caption:.0%} of {fidelity.images} images"
    )
    if speed:
        ratio = speed.images_per_second / speed.fp32_images_per_second
        figures += (
            f"; {speed.images_per_second:.1f} images/s = {ratio:.2f}x fp32 on "
            f"{speed.cpu} ({' '.join(speed.cpu_flags)})"
        )
    if fidelity.passed:
        return f"{precision} engine: {figures}: --precision auto may run it on CPUs"
    return (
        f"{precision} engine: {figures}: below the gate (cosine >= {MIN_COSINE}, >= "
        f"{MIN_SAME_CAPTION:.0%} same captions), so --precision auto never runs it; "
        f"--precision {precision} still does"
    )


def main(argv: list[str] | None = None) -> int:
    job = parse_job(
        QuantizeSettings,
        sys.argv[1:] if argv is None else argv,
        prog="beamcap quantize",
        description=__doc__,
        section="quantize",
        beam=False,
    )
    settings = job.settings
    sections = add_engines(
        settings.model,
        settings.calibration.split(","),
        calibration_images=settings.calibration_images,
        check_images=settings.check_images,
        search=settings.search,
    )
    print(f"wrote {' and '.join(sections)} into {settings.model}")
    for precision, section in sections.items():
        print(describe(precision, section))
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["quantize", *sys.argv[1:]]))
