"""Making a bundle's OpenVINO engines (``beamcap quantize``): export its Keras models once,
quantize the encoder to int8 on calibration images (NNCF's post-training quantization), keep the
float32 export for the bf16 engine, measure each engine against the Keras fp32 models on other
images (fidelity and speed), and store them in the bundle. Needs TensorFlow and NNCF; workers
only load what this writes (``models.captioner.openvino_engine``)."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from models import hardware, storage
from models.captioner.captioner import Captioner
from models.captioner.manifest import (
    BundleError,
    EngineSection,
    Fidelity,
    Manifest,
    Speed,
    sha256,
)
from models.captioner.openvino_engine import ENCODERS, START, STEP, parts_of

# The fidelity an engine must show against the Keras fp32 models to be chosen by ``auto``
MIN_COSINE, MIN_SAME_CAPTION = 0.99, 0.90


def file_names(part: str, xml: bytes, weights: bytes) -> tuple[str, str]:
    """A part's two file names, by its content: a new engine never overwrites the old one's."""
    digest = sha256(xml + weights)[:12]
    return f"{part}.{digest}.xml", f"{part}.{digest}.bin"


def export(model, folder: Path, name: str):
    """A Keras model -> an OpenVINO model, through Keras' own export."""
    import openvino as ov

    path = str(folder / f"{name}.xml")
    model.export(path, format="openvino", verbose=False)
    return ov.Core().read_model(path)


def buildable() -> list[str]:
    """The engines to make here: int8 always, bf16 where this CPU has bf16 units to check it
    on (elsewhere OpenVINO would run it in f32, and the check would measure that)."""
    if hardware.bf16_units():
        return ["int8", "bf16"]
    logging.warning(
        "no bf16 engine: this CPU has no bf16 units (AVX512_BF16 or AMX) to check one on; "
        "quantize on one that has them to make it"
    )
    return ["int8"]


def quantized(encoder, calibration: np.ndarray):
    """The OpenVINO encoder in int8 (NNCF), its activations' ranges the calibration images'
    extremes (min-max), its first convolution left in float, so that it reads the pixels
    exactly. Of 300 checked images, the demo bundle's int8 kept 82 % of its best captions with
    NNCF's defaults (a mean of per-image extremes, which clipped the scaled pixels to +-0.94),
    91 % with min-max ranges and 93 % with both; the quality bundle's 94, 97 and 98 %."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ranges = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
    )
    ops = encoder.get_ordered_ops()
    first = next(op for op in ops if op.get_type_name() == "Convolution").get_friendly_name()
    return nncf.quantize(
        encoder,
        nncf.Dataset([image[None] for image in calibration]),
        subset_size=len(calibration),
        advanced_parameters=ranges,
        ignored_scope=nncf.IgnoredScope(names=[first]),
    )


def build_engines(bundle, calibration: np.ndarray, precisions) -> dict[str, dict]:
    """A Keras :class:`~models.captioner.bundle.Bundle` -> its OpenVINO engines ``precisions``
    (of ``int8``, ``bf16``), each part -> (xml, weights). ``calibration``: uint8 images
    [N, S, S, 3] as the caption job decodes them, N >= 1 (int8's)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="beamcap-engines-") as tmp:
        folder = Path(tmp)
        encoder = export(bundle.encoder.model, folder, "encoder")
        models = {
            START: export(bundle.stepper.initial_state_model, folder, "start"),
            STEP: export(bundle.stepper.step_model, folder, "step"),
            ENCODERS["bf16"][0]: encoder,
        }
        if "int8" in precisions:
            models[ENCODERS["int8"][0]] = quantized(encoder, calibration)
        saved = {}
        for part, model in models.items():
            ov.save_model(model, str(folder / f"{part}.xml"), compress_to_fp16=False)
            saved[part] = tuple((folder / f"{part}.{end}").read_bytes() for end in ("xml", "bin"))
    return {
        precision: {part: saved[part] for part in parts_of(precision)} for precision in precisions
    }


def engine_section(
    manifest: Manifest, precision: str, calibration: dict | None, measured: dict
) -> dict:
    """An :class:`EngineSection`'s fields but its files: what made the engine, from which
    weights, the ``calibration`` where it was calibrated (int8), and ``measured``
    (:func:`measure`'s fidelity and speed)."""
    import openvino as ov

    versions = {"openvino": ov.get_version()}
    if precision == "int8":
        import nncf

        versions["nncf"] = nncf.__version__
    encoder = {
        "int8": "int8 (NNCF post-training quantization: min-max ranges, first convolution float)",
        "bf16": "bf16",
    }[precision]
    return {
        "runtime": "openvino",
        "versions": versions,
        "encoder": encoder,
        "decoder": "float32",
        "built_from": manifest.built_from,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "calibration": calibration if precision == "int8" else None,
        **measured,
    }


def store_engine(uri: str, precision: str, engine: dict, section: dict) -> Manifest:
    """Writes the engine's files into the bundle at ``uri``, then its manifest (the files'
    sha256, ``engines.<precision>``: ``section`` with the parts' names), then removes the files
    of its earlier version that no engine uses any more; returns the manifest. A bundle whose
    weights changed since the engine was built from them is refused."""
    manifest = Manifest.read(uri)
    if section["built_from"] != manifest.built_from:
        raise BundleError(f"{uri} changed while its engine was being made: quantize it again")
    earlier = manifest.engines[precision].files if precision in manifest.engines else []
    names = {part: list(file_names(part, *files)) for part, files in engine.items()}
    files = dict(manifest.files)
    for part, contents in engine.items():
        for name, data in zip(names[part], contents, strict=True):
            storage.write_bytes(storage.join(uri, name), data)
            files[name] = sha256(data)
    listed = [name for part in parts_of(precision) for name in names[part]]
    made = EngineSection(**section, parts=names, files=listed)
    engines = {**manifest.engines, precision: made}
    stale = set(earlier) - {name for other in engines.values() for name in other.files}
    for name in stale:
        files.pop(name, None)
    manifest = dataclasses.replace(manifest, files=files, engines=engines)
    manifest.write(uri)
    for name in stale:
        storage.remove(storage.join(uri, name))
    return manifest


def feature_cosines(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each image's cosine between two engines' features [B, D]."""
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
    return (features * reference).sum(axis=1) / np.maximum(norms, 1e-12)


def measure(
    reference: Captioner,
    engines: dict[str, Captioner],
    images: np.ndarray,
    *,
    batch_size: int = 32,
    passes: int = 3,
    **search,
) -> dict[str, dict]:
    """Each engine against ``reference`` (the Keras fp32 models) on ``images``: ``fidelity``,
    the cosine of their features (mean, minimum) and the share of images whose best caption is
    the same (``search``: beam search's settings), ``passed`` when both meet the gate; and
    ``speed``, the images/s of encoding and searching, each engine's and fp32's, on this CPU.

    The fidelity pass also compiles and traces every batch shape; the speed is then each
    engine's fastest of ``passes`` timed passes over all ``images``, the engines taking turns
    (timeit's rule: the fastest run is the one least disturbed). One pass timed with the
    fidelity work once put the demo's bf16 ahead of its int8 (2.41x against 2.32x fp32), where
    seven passes give int8 385 images/s and bf16 321."""
    captioners = {"fp32": reference, **engines}
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    cosines, same = {name: [] for name in engines}, dict.fromkeys(engines, 0)
    for batch in batches:
        results = {
            name: _caption(captioner, batch, search) for name, captioner in captioners.items()
        }
        theirs, their_captions = results["fp32"]
        for name in engines:
            ours, our_captions = results[name]
            cosines[name] += list(feature_cosines(ours, theirs))
            pairs = zip(our_captions, their_captions, strict=True)
            same[name] += sum(a[0].tokens == b[0].tokens for a, b in pairs)
    seconds = dict.fromkeys(captioners, float("inf"))
    for _ in range(passes):
        for name, captioner in captioners.items():
            began = time.perf_counter()
            for batch in batches:
                _caption(captioner, batch, search)
            seconds[name] = min(seconds[name], time.perf_counter() - began)
    rate = {name: round(len(images) / seconds[name], 2) for name in captioners}
    cpu = {"cpu": hardware.cpu_name(), "cpu_flags": hardware.simd_flags()}
    return {
        name: {
            "fidelity": _fidelity(cosines[name], same[name] / len(images), search),
            "speed": Speed(rate[name], rate["fp32"], len(images), batch_size, **cpu),
        }
        for name in engines
    }


def _caption(captioner: Captioner, batch: np.ndarray, search: dict) -> tuple:
    """A batch's features and captions, as the caption job makes them."""
    features = captioner.encoder.encode(batch)
    return features, captioner.caption_features(features, **search)


def _fidelity(cosines: list[float], share: float, search: dict) -> Fidelity:
    mean, least = float(np.mean(cosines)), float(np.min(cosines))
    passed = mean >= MIN_COSINE and share >= MIN_SAME_CAPTION
    return Fidelity(len(cosines), round(mean, 6), round(least, 6), round(share, 4), passed, search)
