"""What differs between im2txt's two training phases: the model fit, its data, how an epoch is
counted, and how the validation sample becomes features."""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from models.captioner.decoder import Decoder, masked_cross_entropy
from models.captioner.encoder import ImageEncoder
from models.configs import TrainConfig
from models.training.inputs import Sample, caption_pairs, image_caption_batches, read_sample
from models.training.joint import JointCaptioner, resolve_batchnorm, set_batchnorm

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Phase:
    """A phase ready for ``model.fit``."""

    number: int
    model: keras.Model
    train_data: object
    val_data: object | None
    steps: int  # batches per epoch, for the progress lines
    steps_per_epoch: int | None  # what Keras is told; None: the data's own length
    per_epoch: int  # examples per epoch
    seen_key: str  # "captions_seen" or "images_seen"
    sample: Sample
    featurize: Callable[[np.ndarray], np.ndarray]
    batchnorm: str | None = None  # phase 2: "train" or "frozen"


def decoder_phase(
    decoder: Decoder, train_files, val_files, counts: dict, config: TrainConfig
) -> Phase:
    """Phase 1: the decoder alone, one example per (features, caption) pair."""
    model = decoder.training_model
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clip_norm),
        loss=masked_cross_entropy,
    )
    dim = decoder.config.feature_dim
    train_data = caption_pairs(
        train_files,
        dim,
        captions=counts["train_captions"],
        batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
    )
    val_data = None
    if val_files and counts["val_captions"]:
        val_data = caption_pairs(
            val_files, dim, captions=counts["val_captions"], batch_size=config.batch_size
        )
    return Phase(
        number=1,
        model=model,
        train_data=train_data,
        val_data=val_data,
        steps=math.ceil(counts["train_captions"] / config.batch_size),
        steps_per_epoch=None,
        per_epoch=counts["train_captions"],
        seen_key="captions_seen",
        sample=read_sample(val_files, config.bleu_sample),
        featurize=lambda features: features,
    )


# Over 60 lines: one recipe, read in order: the joint model with its two optimizers and
# BatchNorm's mode, its inputs, and the Phase that carries them, all from the same config.
def joint_phase(
    encoder: ImageEncoder,
    decoder: Decoder,
    train_files,
    val_files,
    counts: dict,
    config: TrainConfig,
) -> Phase:
    """Phase 2: encoder and decoder together on the records' pixels, one row per image."""
    batchnorm = resolve_batchnorm(config.encoder_batchnorm, encoder.spec.weights)
    set_batchnorm(encoder.backbone, batchnorm)
    model = JointCaptioner(
        encoder,
        decoder,
        encoder_optimizer=keras.optimizers.Adam(
            config.encoder_learning_rate, clipnorm=config.clip_norm
        ),
    )
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clip_norm))
    size = encoder.spec.image_size
    model((np.zeros((1, size, size, 3), np.uint8), np.zeros((1, 1, 2), np.int32)))
    model.build_optimizers()
    steps = max(
        1, math.ceil((config.images_per_epoch or counts["train_images"]) / config.batch_size)
    )
    train_data = image_caption_batches(
        train_files,
        size,
        batch_size=config.batch_size,
        shuffle_buffer=min(config.shuffle_buffer, 10_000),
        seed=config.seed,
        repeat=True,
        captions_per_image=config.captions_per_image,
    )
    val_data = None
    if val_files and counts["val_images"]:
        val_data = image_caption_batches(
            val_files, size, batch_size=config.batch_size, count=counts["val_images"]
        )
    log.info(
        "phase 2: encoder %s (%s, BatchNorm %s, lr %g) and decoder (lr %g) on %dpx pixels; "
        "%d images per epoch",
        encoder.spec.weights,
        encoder.precision,
        batchnorm,
        config.encoder_learning_rate,
        config.learning_rate,
        size,
        steps * config.batch_size,
    )

    def featurize(pixels):
        return np.asarray(encoder.model.predict(pixels, batch_size=64, verbose=0), np.float32)

    return Phase(
        number=2,
        model=model,
        train_data=train_data,
        val_data=val_data,
        steps=steps,
        steps_per_epoch=steps,
        per_epoch=steps * config.batch_size,
        seen_key="images_seen",
        sample=read_sample(val_files, config.bleu_sample, pixels=True),
        featurize=featurize,
        batchnorm=batchnorm,
    )


def fine_tuned(
    encoder: ImageEncoder, phase: Phase, config: TrainConfig, *, extras: dict, origin: dict
) -> tuple[ImageEncoder, dict]:
    """After phase 2: the trained backbone reloaded into a plain float32 encoder (what
    ``load_bundle`` builds) and the manifest's encoder extras that say how it was trained.
    ``origin``: the starting bundle's ``model_id`` and encoder ``fingerprint`` and the images
    trained on in this run."""
    with tempfile.TemporaryDirectory() as tmp:
        trained = str(Path(tmp, "encoder.weights.h5"))
        encoder.backbone.save_weights(trained)
        plain = ImageEncoder(encoder.spec, weights_file=trained)
    earlier = int(extras.get("fine_tuning", {}).get("images_seen", 0))
    return plain, {
        "phase": 2,
        "fine_tuning": {
            "from_model": origin["model_id"],
            "from_fingerprint": origin["fingerprint"],
            "images_seen": origin["images_seen"] + earlier,
            "learning_rate": config.encoder_learning_rate,
            "batchnorm": phase.batchnorm,
            "precision": encoder.precision,
        },
    }
