"""The feature TFRecord sink: sharded ``SequenceExample`` files per split."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from models.datasets.feature_records import FeatureRecord, encode_example, encode_png
from models.datasets.splits import SPLITS


class WriteFeatureRecords(beam.PTransform):
    """``(split, FeatureRecord)`` -> ``OUTPUT/{split}-SSSSS-of-NNNNN.tfrecord``.

    Returns a PCollection of the written file names (for publish-after-write).
    """

    def __init__(self, output: str):
        super().__init__()
        self.output = output

    def expand(self, records):
        by_split = records | "BySplit" >> beam.Partition(
            lambda item, _: SPLITS.index(item[0]), len(SPLITS)
        )
        written = []
        for split, items in zip(SPLITS, by_split, strict=True):
            written.append(
                items
                | f"Encode{split.title()}" >> beam.Map(lambda item: encode_example(item[1]))
                | f"Write{split.title()}"
                >> beam.io.WriteToTFRecord(
                    FileSystems.join(self.output, split),
                    file_name_suffix=".tfrecord",
                )
            )
        return written | "Files" >> beam.Flatten()


def attach_image_data(image):
    """DecodedImage carrying an ``ImageTask`` -> the same with its pixels, PNG-encoded, in the
    task (what ``features --with-images`` stores as ``image/data``)."""
    task = dataclasses.replace(image.payload, image_data=encode_png(image.pixels))
    return dataclasses.replace(image, payload=task)


def to_record(image, vocabulary, fingerprint: str) -> tuple[str, FeatureRecord]:
    """An encoded image carrying an ``ImageTask`` -> ``(split, FeatureRecord)``."""
    task = image.payload
    record = FeatureRecord(
        image_id=task.image_id,
        uri=image.uri,
        features=image.features,
        fingerprint=fingerprint,
        caption_ids=[vocabulary.encode(caption) for caption in task.captions],
        caption_texts=list(task.captions),
        image_data=task.image_data,
    )
    return task.split, record


def count_record(item: tuple[str, FeatureRecord]):
    """Tally pairs for dataset.json: images and captions per split."""
    split, record = item
    yield f"{split}_images", 1
    yield f"{split}_captions", len(record.caption_ids)
