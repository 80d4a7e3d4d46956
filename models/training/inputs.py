"""The trainer's inputs: tf.data pipelines over the feature TFRecords, and the validation sample."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from models import storage
from models.datasets.feature_records import (
    decode_example,
    decode_png,
    parse_example,
    parse_image_example,
)


def shards(data_dir: str, split: str) -> list[str]:
    return storage.glob(storage.join(data_dir, f"{split}-*.tfrecord"))


def caption_pairs(
    files: list[str], feature_dim: int, *, captions: int, batch_size: int, shuffle_buffer=0, seed=0
):
    """tf.data of ((features [B, D], tokens [B, T]), targets [B, T-1]), one row per caption;
    ``captions`` (from dataset.json) gives Keras the epoch's length."""
    import tensorflow as tf

    pairs = (
        tf.data.TFRecordDataset(files)
        .map(lambda record: parse_example(record, feature_dim))
        .flat_map(
            lambda features, ids: tf.data.Dataset.from_tensor_slices(ids).map(
                lambda caption: (features, tf.cast(caption, tf.int32))
            )
        )
    )
    if shuffle_buffer:
        pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return (
        pairs.padded_batch(batch_size, padded_shapes=([feature_dim], [None]))
        .map(lambda features, tokens: ((features, tokens), tokens[:, 1:]))
        .apply(tf.data.experimental.assert_cardinality(math.ceil(captions / batch_size)))
        .prefetch(tf.data.AUTOTUNE)
    )


def image_caption_batches(
    files: list[str],
    image_size: int,
    *,
    batch_size: int,
    shuffle_buffer=0,
    seed=0,
    repeat=False,
    captions_per_image=0,
    count=None,
):
    """Phase 2's tf.data: ((images [B, S, S, 3] uint8, tokens [B, C, T]), targets [B, C, T-1]),
    one row per image with its captions (zero rows pad images with fewer); with
    ``captions_per_image`` k > 0, k of them drawn at random. ``repeat``: shuffled without end,
    full batches only (the trainer counts images by steps); otherwise ``count`` (the split's
    images) gives Keras the number of batches."""
    import tensorflow as tf

    def pick(image, ids):
        if captions_per_image:
            order = tf.random.shuffle(tf.range(ids.nrows()))[:captions_per_image]
            ids = tf.gather(ids, order)
        return image, tf.cast(ids.to_tensor(), tf.int32)

    records = tf.data.TFRecordDataset(files)
    if repeat:
        records = records.repeat()
    if shuffle_buffer:  # serialized records: PNG bytes are smaller than decoded pixels
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    images = records.map(
        lambda record: parse_image_example(record, image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    ).map(pick)
    batches = images.padded_batch(
        batch_size,
        padded_shapes=([image_size, image_size, 3], [None, None]),
        drop_remainder=repeat,
    ).map(lambda images, tokens: ((images, tokens), tokens[:, :, 1:]))
    if not repeat and count is not None:
        batches = batches.apply(
            tf.data.experimental.assert_cardinality(math.ceil(count / batch_size))
        )
    return batches.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class Sample:
    """Validation images decoded with beam search after every epoch: their encoder input
    (features in phase 1, pixels in phase 2), ids and reference captions."""

    inputs: np.ndarray
    image_ids: list[str]
    references: list[list[str]]


def read_sample(files: list[str], count: int, *, pixels: bool = False) -> Sample:
    """The first ``count`` images of a split: features (or pixels) and reference captions."""
    import tensorflow as tf

    inputs, ids, references = [], [], []
    if files:
        for record in tf.data.TFRecordDataset(files).take(count).as_numpy_iterator():
            example = decode_example(record)
            inputs.append(decode_png(example.image_data) if pixels else example.features)
            ids.append(example.image_id)
            references.append(example.caption_texts)
    array = np.array(inputs, np.uint8 if pixels else np.float32)
    return Sample(array if len(inputs) else np.zeros((0, 1), np.float32), ids, references)
