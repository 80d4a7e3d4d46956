"""A model bundle's manifest and file checks, without Keras: what a launcher verifies before
any worker starts (``beamcap inspect`` and every job share :func:`verify_bundle`)."""

from __future__ import annotations

import hashlib
import json

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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_part(uri: str, name: str) -> bytes:
    try:
        return storage.read_bytes(storage.join(uri, name))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise BundleError(f"{uri} is not a model bundle: it has no {name}") from error


def read_manifest(uri: str) -> dict:
    path = storage.join(uri, MANIFEST)
    try:
        manifest = json.loads(read_part(uri, MANIFEST))
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not JSON ({error.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not a beamcap bundle manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise BundleError(
            f"bundle {uri} has format version {manifest['format_version']}; this beamcap reads "
            f"up to {FORMAT_VERSION}: upgrade beamcap"
        )
    return manifest


def read_checked(uri: str, name: str, manifest: dict) -> bytes:
    """The bundle's file ``name``, once it matches the manifest's sha256."""
    data = read_part(uri, name)
    if sha256(data) != manifest["files"][name]:
        raise BundleError(
            f"{storage.join(uri, name)} does not match the manifest's sha256: the file was "
            "changed or comes from another bundle"
        )
    return data


def verify_bundle(uri: str, manifest: dict | None = None, names=None) -> dict:
    """The manifest (read here unless given), once every file it lists, or those in ``names``
    (the ones a job will read), is present and matches its sha256."""
    manifest = read_manifest(uri) if manifest is None else manifest
    for name in manifest["files"] if names is None else names:
        read_checked(uri, name, manifest)
    return manifest
