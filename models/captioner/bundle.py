"""The model bundle: everything captioning needs, in one directory (local or ``gs://``).

Files: ``manifest.json``, ``encoder.weights.h5``, ``decoder.weights.h5``, ``vocab.txt``. The
manifest records the format version, the encoder spec and weights fingerprint, the decoder's
kind (an entry of :data:`DECODERS`), hyper-parameters and fingerprint, the vocabulary's size and
special tokens, the training summary, and the sha256 of every file. Loading checks all of them
and names the part that does not match.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
from pathlib import Path

from models import storage
from models.captioner.captioner import Captioner
from models.captioner.decoder import Decoder, DecoderStepper, ShowAndTell
from models.captioner.encoder import EncoderSpec, ImageEncoder, weights_fingerprint
from models.captioner.manifest import (
    DECODER_WEIGHTS,
    ENCODER_WEIGHTS,
    KERAS_PARTS,
    MANIFEST,
    VOCAB,
    BundleError,
    DecoderSection,
    EncoderSection,
    Manifest,
    SourceSection,
    VocabularySection,
    read_checked,
    sha256,
)
from models.captioner.vocabulary import SPECIAL_TOKENS, Vocabulary

# The decoders a bundle can hold, by the manifest's ``decoder.kind`` (a manifest without one,
# written before kinds, holds a Show-and-Tell decoder: ``manifest.DEFAULT_DECODER``).
DECODERS: dict[str, type[Decoder]] = {ShowAndTell.kind: ShowAndTell}


@dataclasses.dataclass
class Bundle(Captioner):
    """A bundle's Keras models: a :class:`Captioner` (its ``stepper`` one ``DecoderStepper``,
    which caches its compiled top-k step for every batch) that also holds the ``decoder``,
    what training and saving need."""

    encoder: ImageEncoder
    decoder: Decoder = dataclasses.field(kw_only=True)


def save_bundle(
    uri: str,
    *,
    encoder: ImageEncoder,
    decoder: Decoder,
    vocabulary: Vocabulary,
    training: dict | None = None,
    encoder_extras: dict | None = None,
    source: dict | None = None,
) -> Manifest:
    """Writes a bundle to a directory path or ``gs://`` prefix; returns its manifest.

    The manifest's encoder section holds the spec, the architecture's ``preprocessing`` when it
    has one (what the caption job's decode stage reads), and ``encoder_extras``: ``phase`` (1:
    the encoder as initialised, 2: fine-tuned with the decoder) and, in phase 2, ``fine_tuning``
    (the bundle it started from, images seen, learning rate, BatchNorm mode, precision).
    ``source``: where imported weights came from (files, sha256, global step), as the
    manifest's ``source`` section.
    """
    if decoder.config.vocab_size != len(vocabulary):
        raise BundleError(
            f"decoder vocab_size {decoder.config.vocab_size} != vocabulary {len(vocabulary)}"
        )
    with tempfile.TemporaryDirectory(prefix="beamcap-bundle-") as tmp:
        encoder.backbone.save_weights(str(Path(tmp, ENCODER_WEIGHTS)))
        decoder.training_model.save_weights(str(Path(tmp, DECODER_WEIGHTS)))
        Path(tmp, VOCAB).write_text(vocabulary.to_text(), encoding="utf-8")
        files = {name: Path(tmp, name).read_bytes() for name in KERAS_PARTS}
    decoder_fingerprint = weights_fingerprint(decoder.training_model)
    encoder_section = {
        **dataclasses.asdict(encoder.spec),
        "fingerprint": encoder.fingerprint,
        "preprocessing": encoder.spec.entry.preprocessing or None,
        "phase": 1,
        **(encoder_extras or {}),
    }
    content = encoder.fingerprint + decoder_fingerprint + sha256(files[VOCAB])
    manifest = Manifest(
        model_id=f"{decoder.id_prefix}-{sha256(content.encode())[:12]}",
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        encoder=EncoderSection.from_json(encoder_section),
        decoder=DecoderSection(
            decoder.kind, dataclasses.asdict(decoder.config), decoder_fingerprint
        ),
        vocabulary=VocabularySection(
            len(vocabulary), {token: vocabulary.id(token) for token in SPECIAL_TOKENS}
        ),
        training=training or {},
        source=SourceSection(**source) if source else None,
        files={name: sha256(data) for name, data in files.items()},
    )
    for name, data in files.items():
        storage.write_bytes(storage.join(uri, name), data)
    manifest.write(uri)
    return manifest


def load_bundle(
    uri: str,
    *,
    precision: str = "fp32",
    batch_size: int | None = None,
    manifest: Manifest | None = None,
) -> Bundle:
    """Reads and verifies a bundle; raises :class:`BundleError` naming what does not match.

    ``precision`` and ``batch_size`` are passed to :class:`ImageEncoder`; ``manifest``: the
    bundle's, where the caller has read it already.
    """
    manifest = Manifest.read(uri) if manifest is None else manifest
    decoder_type = _decoder_type(uri, manifest.decoder.kind)
    with tempfile.TemporaryDirectory(prefix="beamcap-bundle-") as tmp:
        for name in KERAS_PARTS:
            Path(tmp, name).write_bytes(read_checked(uri, name, manifest))
        vocabulary = Vocabulary.from_text(
            Path(tmp, VOCAB).read_text(encoding="utf-8"), source=storage.join(uri, VOCAB)
        )
        encoder = ImageEncoder(
            EncoderSpec(**manifest.encoder.spec),
            weights_file=str(Path(tmp, ENCODER_WEIGHTS)),
            precision=precision,
            batch_size=batch_size,
        )
        decoder = decoder_type(decoder_type.config_type(**manifest.decoder.config))
        decoder.training_model.load_weights(str(Path(tmp, DECODER_WEIGHTS)))
    if len(vocabulary) != manifest.vocabulary.size:
        raise BundleError(
            f"{storage.join(uri, VOCAB)} has {len(vocabulary)} words, the manifest says "
            f"{manifest.vocabulary.size}"
        )
    for part, section, fingerprint in (
        (ENCODER_WEIGHTS, manifest.encoder, encoder.fingerprint),
        (DECODER_WEIGHTS, manifest.decoder, weights_fingerprint(decoder.training_model)),
    ):
        expected = section.fingerprint
        if fingerprint != expected:
            raise BundleError(
                f"{storage.join(uri, part)} holds weights with fingerprint {fingerprint[:12]}, "
                f"the manifest expects {expected[:12]}"
            )
    stepper = DecoderStepper(decoder, start_id=vocabulary.start_id, end_id=vocabulary.end_id)
    return Bundle(encoder, stepper, vocabulary, manifest, precision, decoder=decoder)


def _decoder_type(uri: str, kind: str) -> type[Decoder]:
    """The manifest's decoder class, from :data:`DECODERS` by its kind."""
    if kind not in DECODERS:
        raise BundleError(
            f"{storage.join(uri, MANIFEST)} names decoder kind {kind!r}, which this beamcap does "
            f"not know (it knows {', '.join(DECODERS)}): upgrade beamcap"
        )
    return DECODERS[kind]
