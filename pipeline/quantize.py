"""``beamcap quantize``: add the int8 CPU engine to a model bundle, calibrated on your images.

    beamcap quantize --model data/im2txt --calibration photos/
    beamcap quantize --model gs://B/models/v1 --calibration gs://B/incoming/ \\
        --calibration-images 500

Exports the bundle's encoder and decoder to OpenVINO, quantizes the encoder to int8 on
``--calibration-images`` of the images (NNCF's post-training quantization: images like the ones
you will caption, never blank ones), then compares the engine with the fp32 model on
``--check-images`` others: the cosine of their features and the share of identical best
captions. The engine and those figures go into the bundle (its model id does not change).
Where it meets the gate (mean cosine >= 0.99, >= 90 % identical best captions), ``beamcap
caption`` uses it by default on CPUs (``--precision auto``); below it, only when asked with
``--precision int8``. Run it again to replace the engine.
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
from models.captioner.manifest import KERAS_PARTS, verify_bundle
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
    beam_size: int = setting(3, "the check's beam width: as you will caption", minimum=1)
    max_length: int = setting(20, "the check's longest caption, <end> included", minimum=1)

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


def decode_sample(uris: list[str], count: int, manifest: dict) -> np.ndarray:
    """The first ``count`` of ``uris`` that decode, as the caption job decodes them for this
    bundle: uint8 [N, S, S, 3]. Files that are not images are passed over."""
    from transforms.decode import decode_image

    encoder = manifest["encoder"]
    size, preprocessing = encoder["image_size"], encoder.get("preprocessing")
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


def add_int8_engine(
    model: str,
    calibration: list[str],
    *,
    calibration_images: int = 300,
    check_images: int = 100,
    search: dict | None = None,
) -> dict:
    """Builds, checks and stores the bundle's int8 engine (see the module docstring); returns
    the manifest's ``engines.int8`` section."""
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
    from models.captioner.bundle import load_bundle
    from models.captioner.openvino_engine import (
        build_int8_engine,
        engine_section,
        int8_captioner,
        measure_fidelity,
        store_int8_engine,
    )

    bundle = load_bundle(model)
    print(f"quantizing the encoder on {len(sample)} images ...", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is results'
        parts = build_int8_engine(bundle, sample)
    engine = int8_captioner(parts, bundle.vocabulary, manifest)
    print(f"comparing with the fp32 model on {len(check)} images ...", file=sys.stderr)
    search = search or {"beam_size": 3, "max_length": 20}  # the caption job's defaults
    fidelity = measure_fidelity(bundle, engine, check, **search)
    calibrated = {"images": len(sample), "sources": calibration}
    section = engine_section(manifest, calibrated, {**fidelity, "search": search})
    return store_int8_engine(model, parts, section)["engines"]["int8"]


def describe(section: dict) -> str:
    """The engine's fidelity in one line, and what ``--precision auto`` makes of it."""
    fidelity = section["fidelity"]
    figures = (
        f"feature cosine {fidelity['feature_cosine_mean']:.4f} "
        f"(min {fidelity['feature_cosine_min']:.4f}), same best caption "
        f"{fidelity['same_best_caption']:.0%} of {fidelity['images']} images"
    )
    if fidelity["passed"]:
        return f"int8 engine: {figures}: the default on CPUs (--precision auto)"
    from models.captioner.openvino_engine import MIN_COSINE, MIN_SAME_CAPTION

    return (
        f"int8 engine: {figures}: below the gate (cosine >= {MIN_COSINE}, >= "
        f"{MIN_SAME_CAPTION:.0%} same captions), so --precision auto keeps fp32 for this "
        "bundle; --precision int8 still uses it"
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
    section = add_int8_engine(
        settings.model,
        settings.calibration.split(","),
        calibration_images=settings.calibration_images,
        check_images=settings.check_images,
        search=settings.search,
    )
    print(f"wrote it into {settings.model}")
    print(describe(section))
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["quantize", *sys.argv[1:]]))
