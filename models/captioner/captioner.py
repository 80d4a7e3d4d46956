"""What captioning needs of a model, whichever engine runs it: an encoder, a stepper for beam
search, the vocabulary and the manifest; ``Captioner.caption`` is beamcap's one path from uint8
pixels to N-best captions. Without Keras: the int8 engine runs without TensorFlow.

Engines, by ``--precision``:
  ``fp32``, ``bf16``, ``fp16``  the bundle's Keras models (``models.captioner.bundle``), on
                               TensorFlow or JAX, in that compute type;
  ``int8``                     the bundle's int8 engine on OpenVINO
                               (``models.captioner.openvino_engine``): the encoder quantized to
                               int8, the decoder's steps in float32;
  ``auto``                     int8 where the bundle holds an engine, built from its weights,
                               that passed its fidelity check, and the job runs on no GPU
                               (none visible here, none asked of the runner), else fp32.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from models.captioner.beam_search import Stepper, beam_search
from models.captioner.manifest import KERAS_PARTS, VOCAB
from models.captioner.vocabulary import Vocabulary
from models.configs import PRECISIONS as KERAS_PRECISIONS
from models.faults import ModelFault, StageFailed
from models.hardware import gpu_visible

INT8 = "int8"
AUTO = "auto"
PRECISIONS = (AUTO, *KERAS_PRECISIONS, INT8)
PRECISION_HELP = (
    "the engine: auto (int8 where the bundle holds an int8 engine of its own weights that "
    "passed its check and the job wants no GPU: none visible where it is launched, no "
    "accelerator asked of the runner; else fp32), int8 (the bundle's OpenVINO engine, made by "
    "`beamcap quantize`), fp32 (Keras on TensorFlow), bf16 (Keras, on CPUs with "
    "AVX512_BF16/AMX and on GPUs), fp16 (Keras, older GPUs)"
)


class Encoder(Protocol):
    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, S, S, 3] -> float32 features [B, D]; :class:`ModelFault` if not finite."""


@dataclasses.dataclass(frozen=True)
class Caption:
    """One decoded caption: its text, token ids (no ``<start>``/``<end>``) and beam scores."""

    text: str
    tokens: tuple[int, ...]
    log_prob: float
    score: float


@dataclasses.dataclass
class Captioner:
    encoder: Encoder
    stepper: Stepper
    vocabulary: Vocabulary
    manifest: dict
    precision: str = "fp32"

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    def caption(self, images: np.ndarray, **search) -> list[list[Caption]]:
        """uint8 images [B, S, S, 3] -> N-best captions per image, best first (``search``:
        ``beam_search``'s keyword arguments).

        An error raised while encoding comes as :class:`StageFailed` ``("encode", error)``, so
        that a job can tell the two halves apart. Non-finite features or scores raise
        :class:`ModelFault`: no image makes a sound model return NaN."""
        try:
            features = self.encoder.encode(images)
        except ModelFault:
            raise
        except Exception as error:
            raise StageFailed("encode", error) from error
        return self.caption_features(features, **search)

    def caption_features(self, features: np.ndarray, **search) -> list[list[Caption]]:
        """``caption`` from features already encoded: beam search and the vocabulary."""
        hypotheses = beam_search(self.stepper, features, **search)
        scores = [value for image in hypotheses for h in image for value in (h.log_prob, h.score)]
        if not np.isfinite(scores).all():
            raise ModelFault(f"model {self.model_id}: the decoder returned non-finite scores")
        decode = self.vocabulary.decode
        return [
            [Caption(decode(h.tokens), h.tokens, h.log_prob, h.score) for h in image]
            for image in hypotheses
        ]


def checked_images(images, image_size: int) -> np.ndarray:
    """``images`` as uint8 [B, image_size, image_size, 3] with B >= 1, or a ValueError: what
    every encoder takes."""
    images = np.asarray(images)
    expected = (image_size, image_size, 3)
    if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
        raise ValueError(
            f"encode needs uint8 images of shape [B, {expected}], got {images.dtype} {images.shape}"
        )
    if not len(images):
        raise ValueError("an empty batch has nothing to encode")
    return images


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Pads the first axis to ``rows`` with zeros (a no-op when already that long)."""
    if len(array) == rows:
        return array
    padding = np.zeros((rows - len(array), *array.shape[1:]), array.dtype)
    return np.concatenate([array, padding])


def built_from(manifest: dict) -> dict:
    """The Keras weights an engine is made of: the manifest's encoder and decoder
    fingerprints."""
    return {part: manifest[part]["fingerprint"] for part in ("encoder", "decoder")}


def int8_problem(manifest: dict) -> str | None:
    """Why the bundle's int8 engine cannot serve it (it has none, or one built from other
    weights than the bundle's), or None when it can."""
    section = manifest.get("engines", {}).get(INT8)
    if section is None:
        return "has no int8 engine"
    if section.get("built_from") != built_from(manifest):
        return "has an int8 engine built from other weights than its own"
    return None


def resolve_precision(precision: str, manifest: dict, *, gpu: bool | None = None) -> str:
    """``auto`` made concrete for a bundle (see the module docstring; ``gpu``: whether the
    job runs on GPUs, by default whether this machine shows one); others as they are."""
    if precision != AUTO:
        return precision
    gpu = gpu_visible() if gpu is None else gpu
    engine = manifest.get("engines", {}).get(INT8, {})
    passed = int8_problem(manifest) is None and engine.get("fidelity", {}).get("passed")
    return INT8 if passed and not gpu else "fp32"


def parts_read(precision: str, manifest: dict) -> list[str]:
    """The bundle files the engine of ``precision`` (a concrete one: ``auto`` resolved)
    reads: a launch checks those alone (a bundle's other engine may weigh hundreds of MB)."""
    if precision == INT8:
        return [*manifest["engines"][INT8]["files"], VOCAB]
    return list(KERAS_PARTS)


def load_captioner(uri: str, *, precision: str = "fp32", batch_size: int | None = None):
    """A bundle's :class:`Captioner` for ``precision``, a concrete one (the launch resolves
    ``auto``, :func:`resolve_precision`, so that every worker runs the same engine)."""
    if precision == INT8:
        from models.captioner.openvino_engine import load_int8

        return load_int8(uri)
    from models.backend import load_keras

    load_keras()
    from models.captioner.bundle import load_bundle

    return load_bundle(uri, precision=precision, batch_size=batch_size)
