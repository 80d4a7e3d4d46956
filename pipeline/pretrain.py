"""``beamcap pretrain``: teach the encoder to see before the decoder learns from it.

Fits the encoder's backbone (InceptionV3 at ``--image-size``) as a classifier of labelled
images and writes its weights, for ``beamcap features --encoder-weights OUTPUT/encoder.weights.h5``
(and so ``train`` and phase 2), with ``pretraining.json`` beside them: the dataset, images
seen, held-out accuracy per head and the weights' fingerprint, which the bundle's manifest
keeps. ``--data`` is a ``beamcap synth`` dataset (multi-head: per column present, colour,
shape, size, row), a folder of class folders (ImageNet's layout) or a CSV of
``image,label[;label...]``.

    beamcap pretrain --data data/synth --output data/pretrained --config demo
    beamcap pretrain --data data/synth --output data/pretrained --stages stem:42496 \\
        --images 12800
    beamcap pretrain --data photos-by-class/ --output data/pretrained --image-size 299 \\
        --time-budget-minutes 60
    beamcap features --images data/synth/Images --captions data/synth/captions.txt \\
        --output data/features --encoder-weights data/pretrained/encoder.weights.h5 ...

``--stages stem:N`` first trains the encoder's stem alone for N images, with heads on its
flattened grid, then the whole encoder: from scratch, InceptionV3 learns the scenes' shapes
this way in minutes, where whole it stays at chance for over 60,000 images (docs/training.md).

Images are split by file name as ``beamcap features`` splits them: the ``val`` split is the
held-out set of the learning curve, the ``test`` split is never read. Rerun the same command
after an interruption to resume from the last evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models import storage
from models.backend import load_keras
from models.captioner.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, check_input_size
from models.configs import PRETRAIN_PRECISIONS, PretrainConfig, SettingsError, setting
from models.datasets.labels import LabelSet, labelled
from models.datasets.splits import split_for
from models.hardware import training_precision
from pipeline.settings import parse_job
from transforms.decode import decode_image

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PretrainSettings(PretrainConfig):
    data: str = setting(
        None,
        "labelled images: a `beamcap synth` dataset, a folder of class folders, or a CSV of "
        "image,label[;label...] (local or gs://)",
        type=str,
        required=True,
        uris=True,
    )
    output: str = setting(
        None,
        "directory for encoder.weights.h5, pretraining.json, metrics.json and accuracy.png",
        type=str,
        required=True,
        uris=True,
    )
    encoder: str = setting(
        DEFAULT_ARCHITECTURE, "encoder architecture", choices=tuple(ARCHITECTURES)
    )
    image_size: int = setting(299, "encoder input size in pixels (the bundle's)", minimum=75)
    encoder_weights: str = setting(
        "random:0",
        "starting weights: random:SEED, imagenet (connected machines), or a weights file to go "
        "on from",
    )
    val_fraction: float = setting(
        0.1, "share of images held out for the accuracy curve", minimum=0.0, maximum=0.5
    )
    test_fraction: float = setting(
        0.1,
        "share of images never read (the test split `beamcap features` draws with this value)",
        minimum=0.0,
        maximum=0.5,
    )
    precision: str = setting(
        "auto",
        "compute type: auto (bf16 where the CPU has AVX512_BF16 or AMX, or on a GPU; else fp32)",
        choices=PRETRAIN_PRECISIONS,
    )
    checkpoint_dir: str = setting(
        None,
        "local folder for checkpoints; rerunning the same command resumes from it (default: "
        "OUTPUT/checkpoints for a local output)",
        type=str,
    )

    def check(self) -> None:
        check_input_size(self.encoder, self.image_size)
        if self.val_fraction + self.test_fraction >= 1:
            raise SettingsError("--val-fraction and --test-fraction must add up to under 1")

    @property
    def config(self) -> PretrainConfig:
        names = [f.name for f in dataclasses.fields(PretrainConfig)]
        return PretrainConfig(**{name: getattr(self, name) for name in names})


def split_uris(labels: LabelSet, settings: PretrainSettings) -> dict[str, list[str]]:
    """The labelled images by split, split by file name as ``beamcap features`` does."""
    fractions = {"val_fraction": settings.val_fraction, "test_fraction": settings.test_fraction}
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for uri in sorted(labels.labels):
        splits[split_for(posixpath.basename(uri), **fractions)].append(uri)
    return splits


def decode_all(uris: list[str], size: int, preprocessing: dict | None):
    """Reads and decodes ``uris`` as the caption job does, on a thread per core: (uint8
    images, the URIs decoded, {URI: reason} of those that could not be)."""

    def one(uri):
        try:
            return decode_image(storage.read_bytes(uri), size, preprocessing=preprocessing)[0]
        except Exception as error:  # noqa: BLE001 - a bad file is skipped and named, not fatal
            return f"{type(error).__name__}: {error}"

    images, kept, failed = [], [], {}
    last = started = time.time()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for count, (uri, result) in enumerate(zip(uris, pool.map(one, uris), strict=True), start=1):
            if isinstance(result, str):
                failed[uri] = result
            else:
                images.append(result)
                kept.append(uri)
            if time.time() - last >= 10:
                last = time.time()
                log.info(
                    "decoded %d of %d images (%.0f/s)", count, len(uris), count / (last - started)
                )
    empty = np.zeros((0, size, size, 3), np.uint8)
    return (np.stack(images) if images else empty), kept, failed


def examples_of(labels: LabelSet, uris: list[str], settings: PretrainSettings, preprocessing):
    from models.training.pretrain import Examples

    images, kept, failed = decode_all(uris, settings.image_size, preprocessing)
    for uri, reason in list(failed.items())[:5]:
        log.warning("skipped %s: %s", uri, reason)
    columns = {
        head.name: np.array([labels.labels[uri].get(head.name, -1) for uri in kept], np.int32)
        for head in labels.heads
    }
    return Examples(images, columns), failed


def main(argv: list[str] | None = None) -> int:
    job = parse_job(
        PretrainSettings,
        sys.argv[1:] if argv is None else argv,
        prog="beamcap pretrain",
        description=__doc__,
        section="pretrain",
        beam=False,
    )
    settings = job.settings
    labels = labelled(settings.data)
    splits = split_uris(labels, settings)
    if len(splits["train"]) < settings.batch_size:
        raise SettingsError(
            f"--data: {settings.data} has {len(splits['train'])} training images, fewer than "
            f"one batch (--batch-size {settings.batch_size})"
        )
    log.info(
        "%s: %d train, %d held out", labels.describe(), len(splits["train"]), len(splits["val"])
    )
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    load_keras()  # TensorFlow, quietly, once the flags and the data are good
    from models.captioner.encoder import EncoderSpec
    from models.training.pretrain import pretrain

    spec = EncoderSpec(settings.encoder_weights, settings.image_size, settings.encoder)
    preprocessing = spec.entry.preprocessing
    train_examples, train_failed = examples_of(labels, splits["train"], settings, preprocessing)
    val_examples, val_failed = examples_of(labels, splits["val"], settings, preprocessing)
    precision = training_precision() if settings.precision == "auto" else settings.precision
    dataset = {
        "data": settings.data,
        "kind": labels.kind,
        "heads": {head.name: list(head.classes) for head in labels.heads},
        "train_images": len(train_examples),
        "held_out_images": len(val_examples),
        "unreadable_images": len(train_failed) + len(val_failed),
    }
    provenance = pretrain(
        spec,
        labels.heads,
        train_examples,
        val_examples,
        settings.output,
        config=settings.config,
        precision=precision,
        dataset=dataset,
        checkpoint_dir=settings.checkpoint_dir,
    )
    summary = {key: provenance[key] for key in ("images_seen", "minutes", "held_out_accuracy")}
    print(
        json.dumps(
            {"weights": storage.join(settings.output, provenance["weights_file"]), **summary},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["pretrain", *sys.argv[1:]]))
