"""``beamcap features``: images + captions -> TFRecord features, vocabulary, dataset.json.

Captions are grouped per image, each image goes to train/val/test by a stable hash of its name,
the vocabulary is built from the train captions inside the pipeline, and images are read, decoded
and encoded in batches by the caption job's own transforms. Output in ``--output``:
``{train,val,test}-*.tfrecord``, ``vocab.txt``, ``encoder.weights.h5``, ``failures-*.parquet``
and ``dataset.json``, written last, once everything else is. ``--with-images`` also stores each
image's resized pixels (PNG, ``image/data``) for phase-2 training (``train --train-encoder``).

    beamcap features --images data/synth/Images --captions data/synth/captions.txt \\
        --output data/features --encoder-weights random:0 --image-size 299
    python -m pipeline.features ... --runner DataflowRunner --project P --region R \\
        --temp_location gs://B/tmp --sdk_container_image IMAGE   # same flags on Dataflow
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import posixpath
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from models import storage
from models.encoder import DEFAULT_IMAGE_SIZE, EncoderSpec, ImageEncoder
from models.feature_records import FeatureRecord, encode_png, split_for
from pipeline.options import (
    JobFlags,
    add_precision_flag,
    configure_logging,
    parse_job_options,
    prepare_output_dir,
)
from transforms.captions import BuildVocabulary, ReadCaptions
from transforms.decode import ReadAndDecode
from transforms.encode import EncodeImages
from transforms.failures import WriteFailures
from transforms.match import MatchImages
from transforms.tfrecords import WriteFeatureRecords, count_record

DATASET_JSON = "dataset.json"
ENCODER_WEIGHTS = "encoder.weights.h5"
VOCAB = "vocab.txt"


class FeaturesFlags(JobFlags):
    REQUIRED = ("--images", "--captions", "--output")
    PRESET_SECTION = "features"

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group("features job")
        group.add_argument(
            "--images",
            help="image directory (searched recursively), glob pattern, or "
            "comma-separated list of them; local or gs://",
        )
        group.add_argument(
            "--captions",
            help="captions file: Flickr8k captions.txt (CSV), Flickr8k.token.txt, "
            "or COCO captions JSON (chosen by file name)",
        )
        group.add_argument(
            "--output",
            help="output directory (local or gs://); must be empty or new",
        )
        group.add_argument(
            "--encoder-weights",
            default="random:0",
            help="imagenet (Keras download), random:SEED (offline), or a weights "
            "file path / gs:// URI (default: %(default)s)",
        )
        group.add_argument(
            "--image-size",
            type=int,
            default=DEFAULT_IMAGE_SIZE,
            help="encoder input size in pixels, >= 75 (default: %(default)s)",
        )
        group.add_argument(
            "--val-fraction",
            type=float,
            default=0.1,
            help="share of images in the validation split (default: %(default)s)",
        )
        group.add_argument(
            "--test-fraction",
            type=float,
            default=0.1,
            help="share of images in the test split (default: %(default)s)",
        )
        group.add_argument(
            "--min-word-count",
            type=int,
            default=1,
            help="words seen fewer times in train captions become <unk> (default: %(default)s)",
        )
        group.add_argument(
            "--max-vocab-size",
            type=int,
            default=None,
            help="cap on the vocabulary, special tokens included (default: none)",
        )
        group.add_argument(
            "--skip-bad-lines",
            action="store_true",
            help="skip and count malformed caption lines instead of failing",
        )
        group.add_argument(
            "--batch-size",
            type=int,
            default=32,
            help="largest encoder batch (default: %(default)s)",
        )
        add_precision_flag(group)
        group.add_argument(
            "--with-images",
            action="store_true",
            help="also store each image's resized pixels (PNG, image/data) in its record, for "
            "phase-2 training of the encoder (beamcap train --train-encoder)",
        )
        group.add_argument(
            "--overwrite", action="store_true", help="delete what --output holds before writing"
        )


def route_joined(item, *, val_fraction: float, test_fraction: float):
    """CoGroupByKey result -> (uri, (image_id, split, captions)), or a tally of what is off."""
    image_id, grouped = item
    uris, captions = sorted(grouped["uris"]), list(grouped["captions"])
    if not uris:
        yield beam.pvalue.TaggedOutput("tally", ("captions_without_image", len(captions)))
        return
    if not captions:
        yield beam.pvalue.TaggedOutput("tally", ("images_without_captions", len(uris)))
        return
    if len(uris) > 1:
        yield beam.pvalue.TaggedOutput("tally", ("duplicate_image_names", len(uris) - 1))
    split = split_for(image_id, val_fraction=val_fraction, test_fraction=test_fraction)
    yield uris[0], (image_id, split, captions)


def attach_image_data(image):
    """DecodedImage -> the same with its pixels, PNG-encoded, appended to the payload (what
    ``--with-images`` stores as ``image/data``)."""
    return dataclasses.replace(image, payload=(*image.payload, encode_png(image.pixels)))


def to_record(image, vocabulary, fingerprint: str):
    image_id, split, captions, *image_data = image.payload
    record = FeatureRecord(
        image_id=image_id,
        uri=image.uri,
        features=image.features,
        fingerprint=fingerprint,
        caption_ids=[vocabulary.encode(caption) for caption in captions],
        caption_texts=captions,
        image_data=image_data[0] if image_data else None,
    )
    return split, record


def write_dataset_json(_, *, output, tally, files, vocabulary, spec, fingerprint, settings):
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
    vocabulary.save(FileSystems.join(output, VOCAB))
    dataset = {
        "format_version": 1,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "counts": counts,
        "encoder": {**spec, "fingerprint": fingerprint, "weights_file": ENCODER_WEIGHTS},
        "vocabulary": {"size": len(vocabulary), "file": VOCAB},
        "files": sorted(posixpath.basename(f) for f in files),
        "settings": settings,
    }
    storage.write_text(FileSystems.join(output, DATASET_JSON), json.dumps(dataset, indent=2))
    return counts


def build(pipeline, job, *, spec: EncoderSpec, weights_file: str, fingerprint: str):
    """The features job's graph."""
    fractions = dict(val_fraction=job.val_fraction, test_fraction=job.test_fraction)
    captions, skipped = pipeline | "ReadCaptions" >> ReadCaptions(
        job.captions, skip_bad_lines=job.skip_bad_lines
    )
    images = (
        pipeline
        | "MatchImages" >> MatchImages(job.images.split(","))
        | "KeyByName" >> beam.Map(lambda uri: (posixpath.basename(uri), uri))
    )
    routed = (
        {"uris": images, "captions": captions}
        | "JoinCaptions" >> beam.CoGroupByKey()
        | "Route" >> beam.FlatMap(route_joined, **fractions).with_outputs("tally", main="tasks")
    )
    vocabulary = (
        routed.tasks
        | "TrainCaptions" >> beam.FlatMap(lambda task: task[1][2] if task[1][1] == "train" else [])
        | "BuildVocabulary"
        >> BuildVocabulary(min_count=job.min_word_count, max_size=job.max_vocab_size)
    )
    decoded = (
        routed.tasks
        | "Redistribute" >> beam.Reshuffle()
        | "ReadAndDecode"
        >> beam.ParDo(ReadAndDecode(spec.image_size)).with_outputs("failures", main="decoded")
    )
    to_encode = decoded.decoded
    if getattr(job, "with_images", False):
        to_encode = to_encode | "AttachImageData" >> beam.Map(attach_image_data)
    encoded, encode_failures = to_encode | "EncodeImages" >> EncodeImages(
        spec, weights_file=weights_file, precision=job.precision, max_batch_size=job.batch_size
    )
    records = encoded | "ToRecords" >> beam.Map(
        to_record, vocabulary=beam.pvalue.AsSingleton(vocabulary), fingerprint=fingerprint
    )
    files = records | "WriteRecords" >> WriteFeatureRecords(job.output)
    failures = (decoded.failures, encode_failures) | "AllFailures" >> beam.Flatten()
    failure_files = failures | "WriteFailures" >> WriteFailures(
        FileSystems.join(job.output, "failures"), run_id="features"
    )
    tally = (
        (
            records | "TallyRecords" >> beam.FlatMap(count_record),
            failures | "TallyFailures" >> beam.Map(lambda _: ("failed_images", 1)),
            skipped | "TallySkipped" >> beam.Map(lambda _: ("skipped_lines", 1)),
            routed.tally,
        )
        | "AllTallies" >> beam.Flatten()
        | "SumTallies" >> beam.CombinePerKey(sum)
    )
    settings = {
        "images": job.images,
        "captions": job.captions,
        **fractions,
        "min_word_count": job.min_word_count,
        "max_vocab_size": job.max_vocab_size,
        "with_images": bool(getattr(job, "with_images", False)),
    }
    return (
        pipeline
        | "Commit" >> beam.Create([None])
        | "WriteDatasetJson"
        >> beam.Map(
            write_dataset_json,
            output=job.output,
            tally=beam.pvalue.AsDict(tally),
            files=beam.pvalue.AsList((files, failure_files) | "AllFiles" >> beam.Flatten()),
            vocabulary=beam.pvalue.AsSingleton(vocabulary),
            spec={
                "architecture": spec.architecture,
                "image_size": spec.image_size,
                "pooling": spec.pooling,
                "weights": spec.weights,
            },
            fingerprint=fingerprint,
            settings=settings,
        )
    )


def run(argv: list[str]) -> dict:
    """Runs the job; returns dataset.json's contents."""
    job, options = parse_job_options(
        FeaturesFlags, argv, prog="beamcap features", description=__doc__
    )
    prepare_output_dir(job.output, overwrite=job.overwrite)
    spec = EncoderSpec(weights=job.encoder_weights, image_size=job.image_size)
    encoder = ImageEncoder(spec)
    weights_file = FileSystems.join(job.output, ENCODER_WEIGHTS)
    encoder.save_weights(weights_file)  # workers load this copy: one download, same weights
    logging.info("encoder %s fingerprint %s", spec, encoder.fingerprint[:12])
    started = time.time()
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, job, spec=spec, weights_file=weights_file, fingerprint=encoder.fingerprint)
    dataset = json.loads(storage.read_text(FileSystems.join(job.output, DATASET_JSON)))
    logging.info(
        "features written to %s in %.0fs: %s", job.output, time.time() - started, dataset["counts"]
    )
    return dataset


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    dataset = run(sys.argv[1:] if argv is None else argv)
    print(json.dumps(dataset["counts"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
