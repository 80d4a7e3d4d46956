"""A model bundle's manifest, typed, and its file checks, without Keras: what a launcher
verifies before any worker starts (``beamcap inspect`` and every job share
:func:`verify_bundle`).

``manifest.json`` is read into frozen dataclasses (:class:`Manifest` and its sections) by
:meth:`Manifest.read`, older format versions upgraded in one place (:func:`_upgraded`), and
written back by :meth:`Manifest.to_json`; every reader uses their attributes. Free-form records
(training figures, a pretraining's or a calibration's provenance) stay plain dicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from models import storage
from models.faults import BundleError

FORMAT = "beamcap-bundle"
# 2: the encoder section may hold keys beyond the spec (phase, fine_tuning);
# 3: it may name a preprocessing other than the plain resize (im2txt's), which older readers
#    would silently skip;
# 4: the decoder section names its kind (``decoder.kind``; without it: show_and_tell), which
#    older readers would take for a Show-and-Tell setting. Every bundle is written as 4.
FORMAT_VERSION = 4
MANIFEST, ENCODER_WEIGHTS, DECODER_WEIGHTS, VOCAB = (
    "manifest.json",
    "encoder.weights.h5",
    "decoder.weights.h5",
    "vocab.txt",
)
KERAS_PARTS = (ENCODER_WEIGHTS, DECODER_WEIGHTS, VOCAB)  # the files the Keras models read
DEFAULT_DECODER = "show_and_tell"  # the kind of a decoder section that names none (format < 4)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fields(cls, data: dict) -> tuple[dict, dict]:
    """``data`` split into ``cls``'s fields and the rest."""
    names = {field.name for field in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}, {
        k: v for k, v in data.items() if k not in names
    }


def _without_none(data: dict) -> dict:
    return {key: value for key, value in data.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class EncoderSection:
    """The encoder: its spec (``models.captioner.encoder.EncoderSpec``'s fields), the weights'
    fingerprint, the preprocessing it needs, and where its weights came from."""

    weights: str
    image_size: int
    architecture: str
    fingerprint: str
    pooling: str = "avg"
    preprocessing: dict | None = None
    phase: int | None = None  # 1: as initialised, 2: fine-tuned with the decoder
    fine_tuning: dict | None = None
    pretraining: dict | None = None
    extras: dict = dataclasses.field(default_factory=dict)  # keys of later beamcaps, kept

    @classmethod
    def from_json(cls, data: dict) -> EncoderSection:
        known, extras = _fields(cls, data)
        return cls(**known, extras=extras)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        extras = data.pop("extras")
        return {**_without_none(data), **extras}

    @property
    def spec(self) -> dict:
        """The ``EncoderSpec`` fields."""
        return {
            "weights": self.weights,
            "image_size": self.image_size,
            "architecture": self.architecture,
            "pooling": self.pooling,
        }


@dataclasses.dataclass(frozen=True)
class DecoderSection:
    """The decoder: its kind (an entry of ``models.captioner.bundle.DECODERS``), its
    hyper-parameters (its kind's config fields) and the weights' fingerprint."""

    kind: str
    config: dict
    fingerprint: str

    @classmethod
    def from_json(cls, data: dict) -> DecoderSection:
        config = {k: v for k, v in data.items() if k not in ("kind", "fingerprint")}
        return cls(data["kind"], config, data["fingerprint"])

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.config, "fingerprint": self.fingerprint}


@dataclasses.dataclass(frozen=True)
class VocabularySection:
    size: int
    special_tokens: dict

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """An engine against the Keras fp32 models on images it was not calibrated on."""

    images: int
    feature_cosine_mean: float
    feature_cosine_min: float
    same_best_caption: float
    passed: bool  # met the gate (``models.captioner.engine_build``): ``auto`` may choose it
    search: dict


@dataclasses.dataclass(frozen=True)
class Speed:
    """An engine's images/s, encoding and searching, and fp32's, on the CPU named."""

    images_per_second: float
    fp32_images_per_second: float
    images: int
    batch_size: int
    cpu: str
    cpu_flags: list


@dataclasses.dataclass(frozen=True)
class EngineSection:
    """An engine ``beamcap quantize`` made: its files (``parts``: part -> [xml, weights]),
    what made it from which weights, its fidelity and (since #42) its speed."""

    runtime: str
    versions: dict
    encoder: str
    decoder: str
    built_from: dict
    created_at: str
    fidelity: Fidelity
    parts: dict
    files: list
    speed: Speed | None = None
    calibration: dict | None = None

    @classmethod
    def from_json(cls, data: dict) -> EngineSection:
        known, _ = _fields(cls, data)
        speed = data.get("speed")
        return cls(
            **known
            | {
                "fidelity": Fidelity(**data["fidelity"]),
                "speed": Speed(**speed) if speed else None,
                "parts": {part: list(names) for part, names in data["parts"].items()},
            }
        )

    def to_json(self) -> dict:
        data = _without_none(dataclasses.asdict(self))
        order = ("runtime", "versions", "encoder", "decoder", "built_from", "created_at")
        return {key: data[key] for key in (*order, *data) if key in data}


@dataclasses.dataclass(frozen=True)
class SourceSection:
    """Where imported weights came from (``beamcap import-im2txt``)."""

    format: str
    kind: str
    files: dict
    global_step: int | None = None
    vocabulary: dict | None = None


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A bundle's ``manifest.json``."""

    model_id: str
    created_at: str
    encoder: EncoderSection
    decoder: DecoderSection
    vocabulary: VocabularySection
    files: dict  # name -> sha256 of every file of the bundle
    training: dict = dataclasses.field(default_factory=dict)
    engines: dict = dataclasses.field(default_factory=dict)  # precision -> EngineSection
    source: SourceSection | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def read(cls, uri: str) -> Manifest:
        """The bundle's manifest; :class:`BundleError` where it is missing, not JSON, not a
        bundle's or of a newer format."""
        path = storage.join(uri, MANIFEST)
        try:
            data = json.loads(read_part(uri, MANIFEST))
        except json.JSONDecodeError as error:
            raise BundleError(f"{path} is not JSON ({error.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError(f"{path} is not a beamcap bundle manifest")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise BundleError(
                f"bundle {uri} has format version {data['format_version']}; this beamcap reads "
                f"up to {FORMAT_VERSION}: upgrade beamcap"
            )
        try:
            return cls.from_json(_upgraded(data))
        except (KeyError, TypeError) as error:
            raise BundleError(f"{path} lacks a part of a bundle manifest ({error})") from None

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        source = data.get("source")
        return cls(
            model_id=data["model_id"],
            created_at=data["created_at"],
            encoder=EncoderSection.from_json(data["encoder"]),
            decoder=DecoderSection.from_json(data["decoder"]),
            vocabulary=VocabularySection(**data["vocabulary"]),
            files=dict(data["files"]),
            training=data.get("training", {}),
            engines={
                name: EngineSection.from_json(engine)
                for name, engine in data.get("engines", {}).items()
            },
            source=SourceSection(**source) if source else None,
            format_version=data["format_version"],
        )

    def to_json(self) -> dict[str, Any]:
        engines = {name: engine.to_json() for name, engine in self.engines.items()}
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "model_id": self.model_id,
            "created_at": self.created_at,
            "encoder": self.encoder.to_json(),
            "decoder": self.decoder.to_json(),
            "vocabulary": self.vocabulary.to_json(),
            "training": self.training,
            **({"source": _without_none(dataclasses.asdict(self.source))} if self.source else {}),
            "files": self.files,
            **({"engines": engines} if engines else {}),
        }

    def write(self, uri: str) -> None:
        storage.write_text(storage.join(uri, MANIFEST), json.dumps(self.to_json(), indent=2) + "\n")

    @property
    def built_from(self) -> dict:
        """The Keras weights an engine is made of: the encoder's and decoder's fingerprints."""
        return {"encoder": self.encoder.fingerprint, "decoder": self.decoder.fingerprint}

    def check_engine(self, uri: str, precision: str) -> None:
        """A :class:`BundleError` naming the command that makes the engine ``precision``, where
        the bundle at ``uri`` cannot serve it (:meth:`engine_problem`): the one message for a
        launch that asks for it by name and a worker that loads it."""
        problem = self.engine_problem(precision)
        if problem:
            raise BundleError(
                f"--precision {precision}: {uri} {problem}; make one with `beamcap quantize "
                f"--model {uri} --calibration IMAGES`"
            )

    def engine_problem(self, precision: str) -> str | None:
        """Why the bundle's engine ``precision`` cannot serve it (it has none, or one built
        from other weights than the bundle's), or None when it can."""
        engine = self.engines.get(precision)
        if engine is None:
            return f"has no {precision} engine"
        if engine.built_from != self.built_from:
            article = "an" if precision[0] in "aeiou" else "a"
            return f"has {article} {precision} engine built from other weights than its own"
        return None


def _upgraded(data: dict) -> dict:
    """A manifest of any format this beamcap reads, as format :data:`FORMAT_VERSION` holds it:
    1 has no encoder ``phase`` (1), 1-3 no decoder ``kind`` (show_and_tell)."""
    encoder = {"phase": 1, **data["encoder"]}
    decoder = {"kind": DEFAULT_DECODER, **data["decoder"]}
    return {**data, "format_version": data.get("format_version", 1), "encoder": encoder,
            "decoder": decoder}  # fmt: skip


def read_part(uri: str, name: str) -> bytes:
    try:
        return storage.read_bytes(storage.join(uri, name))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise BundleError(f"{uri} is not a model bundle: it has no {name}") from error


def read_checked(uri: str, name: str, manifest: Manifest) -> bytes:
    """The bundle's file ``name``, once it matches the manifest's sha256."""
    data = read_part(uri, name)
    if sha256(data) != manifest.files[name]:
        raise BundleError(
            f"{storage.join(uri, name)} does not match the manifest's sha256: the file was "
            "changed or comes from another bundle"
        )
    return data


def verify_bundle(uri: str, manifest: Manifest | None = None, names=None) -> Manifest:
    """The manifest (read here unless given), once every file it lists, or those in ``names``
    (the ones a job will read), is present and matches its sha256."""
    manifest = Manifest.read(uri) if manifest is None else manifest
    for name in manifest.files if names is None else names:
        read_checked(uri, name, manifest)
    return manifest
