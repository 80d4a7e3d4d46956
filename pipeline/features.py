"""``beamcap features``: images + captions -> TFRecord features, vocabulary, dataset.json.

    ReadCaptions + MatchImages -> PairWithCaptions (join by name, split by stable hash)
    -> Reshuffle -> ReadAndDecode -> EncodeImages (RunInference: batched InceptionV3)
    -> ToRecords (vocabulary side input) -> WriteFeatureRecords;  train captions ->
    BuildVocabulary;  failures -> WriteFailures;  tallies + written files -> CommitRun

Output in ``--output``: ``{train,val,test}-*.tfrecord``, ``vocab.txt``, ``encoder.weights.h5``,
``failures-*.parquet``, then ``dataset.json`` and ``_SUCCESS`` once everything else is written;
a failed run leaves ``_FAILED`` with its reason instead. ``--with-images`` also stores each
image's resized pixels (PNG, ``image/data``) for phase-2 training (``train --train-encoder``).
See docs/architecture.md.

    beamcap features --images data/synth/Images --captions data/synth/captions.txt \\
        --output data/features --encoder-weights random:0 --image-size 299
    python -m pipeline.features ... --runner DataflowRunner --project P --region R \\
        --temp_location gs://B/tmp --sdk_container_image IMAGE   # same flags on Dataflow
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import posixpath
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from models import storage
from models.backend import load_keras
from models.captioner.architectures import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    architecture,
    check_input_size,
    random_seed,
)
from models.captioner.manifest import ENCODER_WEIGHTS, VOCAB  # the file names a bundle uses too
from models.configs import MIN_IMAGE_SIZE, PRECISION_HELP, PRECISIONS, SettingsError, setting
from pipeline import cluster_health
from pipeline.lifecycle import RunLifecycle
from pipeline.output_root import RunDir
from pipeline.settings import parse_job
from transforms.captions import BuildVocabulary, PairWithCaptions, ReadCaptions, train_captions
from transforms.commit import CommitRun
from transforms.decode import ReadAndDecode
from transforms.failures import WriteFailures
from transforms.inference import EncodeImages, EncoderHandler
from transforms.match import MatchImages
from transforms.progress import count
from transforms.tfrecords import WriteFeatureRecords, attach_image_data, count_record, to_record

DATASET_JSON = "dataset.json"


@dataclasses.dataclass(frozen=True)
class FeaturesSettings:
    images: str = setting(
        None,
        "images, image directories (searched recursively) or glob patterns, local or gs://, "
        "as many as you like",
        type=str,
        required=True,
        uris=True,
        many=True,
    )
    captions: str = setting(
        None,
        "captions file: Flickr8k captions.txt (CSV), Flickr8k.token.txt, or COCO captions "
        "JSON (chosen by file name)",
        type=str,
        required=True,
        uris=True,
    )
    output: str = setting(
        None,
        "output directory (local or gs://); must be empty or new",
        type=str,
        required=True,
        uris=True,
    )
    encoder: str = setting(
        DEFAULT_ARCHITECTURE,
        "encoder backbone, an entry of models/captioner/architectures.py",
        choices=tuple(ARCHITECTURES),
    )
    encoder_weights: str = setting(
        "random:0",
        "imagenet (Keras download), random:SEED (offline), or a weights file path / gs:// URI",
    )
    image_size: int = setting(
        299, "encoder input size in pixels", minimum=MIN_IMAGE_SIZE, maximum=1024
    )
    val_fraction: float = setting(
        0.1, "share of images in the validation split", minimum=0.0, maximum=0.5
    )
    test_fraction: float = setting(
        0.1, "share of images in the test split", minimum=0.0, maximum=0.5
    )
    min_word_count: int = setting(
        1, "words seen fewer times in train captions become <unk>", minimum=1
    )
    max_vocab_size: int = setting(
        None, "cap on the vocabulary, special tokens included (default: none)", type=int, minimum=5
    )
    skip_bad_lines: bool = setting(
        False, "skip and count malformed caption lines instead of failing"
    )
    batch_size: int = setting(32, "largest encoder batch", minimum=1, maximum=4096)
    with_images: bool = setting(
        False,
        "also store each image's resized pixels (PNG, image/data) in its record, for phase-2 "
        "training of the encoder (beamcap train --train-encoder)",
    )
    precision: str = setting("fp32", PRECISION_HELP, choices=PRECISIONS)
    overwrite: bool = setting(False, "delete what --output holds before writing")

    def check(self) -> None:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise SettingsError("--val-fraction plus --test-fraction must leave a train split")
        try:
            check_input_size(self.encoder, self.image_size)
        except ValueError as error:
            raise SettingsError(f"--image-size: {error}") from None
        weights = self.encoder_weights
        try:
            seed = random_seed(weights)
        except ValueError as error:
            raise SettingsError(f"--encoder-weights: {error}") from None
        if (
            seed is None
            and weights != "imagenet"
            and not storage.is_gcs(weights)
            and not os.path.isfile(weights)
        ):
            raise SettingsError(
                f"--encoder-weights: {weights} is neither imagenet, random:SEED "
                "nor an existing weights file"
            )
        if not storage.is_gcs(self.captions) and not os.path.isfile(self.captions):
            raise SettingsError(f"--captions: {self.captions} does not exist")


def prepare_output_dir(output: str, *, overwrite: bool) -> None:
    """Refuses to write into a directory that already holds files, unless ``overwrite``
    (Beam's file sinks can keep an earlier run's shards when a prefix is reused)."""
    existing = storage.glob(storage.join(output, "*"))  # its files; folders in it stay
    if existing and not overwrite:
        raise SettingsError(
            f"--output: {output} already holds {len(existing)} files (e.g. {existing[0]}); "
            "choose a new directory or pass --overwrite"
        )
    for path in existing:
        storage.remove(path)


def commit_dataset(tally, files, *, output, vocabulary, spec, fingerprint, settings) -> dict:
    """The features job's commit: vocab.txt, then ``OUTPUT`` committed with dataset.json
    (exactly once: ``pipeline.lifecycle``); returns the counts."""
    record = functools.partial(
        dataset_record, tally, files, output=output, vocabulary=vocabulary, spec=spec,
        fingerprint=fingerprint, settings=settings,
    )  # fmt: skip
    return RunLifecycle(RunDir(output)).commit(DATASET_JSON, record)["counts"]


def dataset_record(tally, files, *, output, vocabulary, spec, fingerprint, settings) -> dict:
    """dataset.json, once vocab.txt is written beside it."""
    counts = {
        key: int(tally.get(key, 0))
        for key in (
            "train_images",
            "train_captions",
            "val_images",
            "val_captions",
            "test_images",
            "test_captions",
            "failed_images",
            "captions_without_image",
            "images_without_captions",
            "duplicate_image_names",
            "skipped_lines",
        )
    }
    vocabulary.save(storage.join(output, VOCAB))
    dataset = {
        "format_version": 1,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "counts": counts,
        "encoder": {
            **spec,
            "feature_dim": architecture(spec["architecture"]).feature_dim,  # the records' width
            "fingerprint": fingerprint,
            "weights_file": ENCODER_WEIGHTS,
        },
        "vocabulary": {"size": len(vocabulary), "file": VOCAB},
        "files": sorted(posixpath.basename(f) for f in files),
        "settings": settings,
    }
    return dataset


# Over 60 lines: the features job's graph, one labelled step after another, as Beam shows it.
def build(pipeline, settings: FeaturesSettings, *, spec, weights_file: str, fingerprint: str):
    """The features job's graph."""
    fractions = dict(val_fraction=settings.val_fraction, test_fraction=settings.test_fraction)
    captions, skipped = pipeline | "ReadCaptions" >> ReadCaptions(
        settings.captions, skip_bad_lines=settings.skip_bad_lines
    )
    images = pipeline | "MatchImages" >> MatchImages(settings.images.split(","))
    tasks, routing_tally = (images, captions) | "PairWithCaptions" >> PairWithCaptions(**fractions)
    pixels = spec.entry.preprocessing  # None: beamcap's resize
    vocabulary = (
        tasks
        | "TrainCaptions" >> beam.FlatMap(train_captions)
        | "BuildVocabulary"
        >> BuildVocabulary(min_count=settings.min_word_count, max_size=settings.max_vocab_size)
    )
    decoded = (
        tasks
        | "Redistribute" >> beam.Reshuffle()
        | "ReadAndDecode"
        >> beam.ParDo(ReadAndDecode(spec.image_size, preprocessing=pixels)).with_outputs(
            "failures", main="decoded"
        )
    )
    handler = EncoderHandler(
        spec,
        weights_file=weights_file,
        precision=settings.precision,
        min_batch_size=min(8, settings.batch_size),
        max_batch_size=settings.batch_size,
        share_across_processes=False,
    )
    to_encode = decoded.decoded
    if settings.with_images:
        to_encode = to_encode | "AttachImageData" >> beam.Map(attach_image_data)
    encoded, encode_failures = to_encode | "EncodeImages" >> EncodeImages(handler)
    records = encoded | "ToRecords" >> beam.Map(
        to_record, vocabulary=beam.pvalue.AsSingleton(vocabulary), fingerprint=fingerprint
    )
    files = records | "WriteRecords" >> WriteFeatureRecords(settings.output)
    failures = (decoded.failures, encode_failures) | "AllFailures" >> beam.Flatten()
    failure_files = failures | "WriteFailures" >> WriteFailures(
        RunDir(settings.output).file("failures"), run_id="features"
    )
    tallies = [
        records | "TallyRecords" >> beam.FlatMap(count_record),
        count(failures, "failed_images", "TallyFailures"),
        count(skipped, "skipped_lines", "TallySkipped"),
        routing_tally,
    ]
    recorded = {
        "images": settings.images,
        "captions": settings.captions,
        **fractions,
        "min_word_count": settings.min_word_count,
        "max_vocab_size": settings.max_vocab_size,
        "with_images": settings.with_images,
    }
    from models.captioner.encoder import pretraining_of

    pretraining = pretraining_of(spec.weights, fingerprint)
    spec_fields = {
        **dataclasses.asdict(spec),
        **({"pretraining": pretraining} if pretraining else {}),
    }
    vocabulary_side = beam.pvalue.AsSingleton(vocabulary)

    def commit(tally, files, vocabulary):
        return commit_dataset(
            tally,
            files,
            output=settings.output,
            vocabulary=vocabulary,
            spec=spec_fields,
            fingerprint=fingerprint,
            settings=recorded,
        )

    return pipeline | "CommitRun" >> CommitRun(
        tallies=tallies,
        files=[files, failure_files],
        commit=commit,
        side_inputs={"vocabulary": vocabulary_side},
    )


def run(argv: list[str]) -> dict:
    """Runs the job; returns dataset.json's contents. Raises ``SettingsError`` before anything
    starts, ``RunFailed`` (with ``OUTPUT/_FAILED``) when the run fails."""
    job = parse_job(
        FeaturesSettings, argv, prog="beamcap features", description=__doc__, section="features"
    )
    settings = job.settings
    cluster_health.check_slots(cluster_health.cluster_of(PipelineOptions(job.beam_args)))
    prepare_output_dir(settings.output, overwrite=settings.overwrite)
    load_keras()  # TensorFlow, quietly, once the flags are good
    from models.captioner.encoder import EncoderSpec, ImageEncoder

    spec = EncoderSpec(
        weights=settings.encoder_weights,
        image_size=settings.image_size,
        architecture=settings.encoder,
    )
    encoder = ImageEncoder(spec)
    weights_file = storage.join(settings.output, ENCODER_WEIGHTS)
    encoder.save_weights(weights_file)  # workers load this copy: one download, same weights
    logging.info("encoder %s fingerprint %s", spec, encoder.fingerprint[:12])
    started = time.time()
    pipeline = beam.Pipeline(options=PipelineOptions(job.beam_args))
    build(pipeline, settings, spec=spec, weights_file=weights_file, fingerprint=encoder.fingerprint)
    RunLifecycle(RunDir(settings.output)).run(pipeline)
    dataset = RunDir(settings.output).record(DATASET_JSON)
    logging.info(
        "features written to %s in %.0fs: %s",
        settings.output,
        time.time() - started,
        dataset["counts"],
    )
    return dataset


def main(argv: list[str] | None = None) -> int:
    dataset = run(sys.argv[1:] if argv is None else argv)
    print(json.dumps(dataset["counts"], indent=2))
    return 0


if __name__ == "__main__":
    from pipeline.cli import bound_exit
    from pipeline.cli import main as beamcap

    sys.exit(bound_exit(beamcap(["features", *sys.argv[1:]])))
