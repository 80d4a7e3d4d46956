"""The feature TFRecord contract (docs/architecture.md): one ``tf.train.SequenceExample`` per image.

Context: ``image/id`` (bytes), ``image/uri`` (bytes), ``image/features`` (float list),
``encoder/fingerprint`` (bytes), and with ``beamcap features --with-images`` ``image/data``: the
image as the encoder saw it (resized uint8 RGB, PNG-encoded: lossless, so phase-2 training sees
exactly the pixels the caption job's decoder produces; im2txt keeps the JPEG file there).
Feature lists: ``caption/ids`` (one int64 list per caption) and ``caption/text`` (one bytes list
per caption, holding the original caption).

The features pipeline writes these with :func:`encode_example`; the trainer reads them with
:func:`parse_example` (phase 1: features) or :func:`parse_image_example` (phase 2: pixels) inside
``tf.data``. They need TensorFlow, imported on first use.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np


@dataclasses.dataclass
class FeatureRecord:
    image_id: str
    uri: str
    features: np.ndarray  # float32 [D]
    fingerprint: str
    caption_ids: list[list[int]]
    caption_texts: list[str]
    image_data: bytes | None = None  # PNG of the resized pixels (``--with-images``)


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [S, S, 3] -> PNG bytes (lossless)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), np.uint8)


def encode_example(record: FeatureRecord) -> bytes:
    import tensorflow as tf

    def bytes_feature(value: str):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    context = tf.train.Features(
        feature={
            "image/id": bytes_feature(record.image_id),
            "image/uri": bytes_feature(record.uri),
            "image/features": tf.train.Feature(
                float_list=tf.train.FloatList(value=np.asarray(record.features, np.float32))
            ),
            "encoder/fingerprint": bytes_feature(record.fingerprint),
            **(
                {
                    "image/data": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[record.image_data])
                    )
                }
                if record.image_data is not None
                else {}
            ),
        }
    )
    feature_lists = tf.train.FeatureLists(
        feature_list={
            "caption/ids": tf.train.FeatureList(
                feature=[
                    tf.train.Feature(int64_list=tf.train.Int64List(value=ids))
                    for ids in record.caption_ids
                ]
            ),
            "caption/text": tf.train.FeatureList(
                feature=[bytes_feature(text) for text in record.caption_texts]
            ),
        }
    )
    return tf.train.SequenceExample(
        context=context, feature_lists=feature_lists
    ).SerializeToString()


def decode_example(serialized: bytes) -> FeatureRecord:
    """Plain-Python parse of one record (for tests and tools; training uses ``parse_example``)."""
    import tensorflow as tf

    example = tf.train.SequenceExample.FromString(serialized)
    context = example.context.feature
    lists = example.feature_lists.feature_list
    return FeatureRecord(
        image_id=context["image/id"].bytes_list.value[0].decode("utf-8"),
        uri=context["image/uri"].bytes_list.value[0].decode("utf-8"),
        features=np.array(context["image/features"].float_list.value, np.float32),
        fingerprint=context["encoder/fingerprint"].bytes_list.value[0].decode("utf-8"),
        caption_ids=[list(f.int64_list.value) for f in lists["caption/ids"].feature],
        caption_texts=[
            f.bytes_list.value[0].decode("utf-8") for f in lists["caption/text"].feature
        ],
        image_data=context["image/data"].bytes_list.value[0] if "image/data" in context else None,
    )


def parse_example(serialized, feature_dim: int):
    """``tf.data`` map function: -> (features [D], caption ids as a RaggedTensor [C, None])."""
    import tensorflow as tf

    context, sequences = tf.io.parse_single_sequence_example(
        serialized,
        context_features={"image/features": tf.io.FixedLenFeature([feature_dim], tf.float32)},
        sequence_features={"caption/ids": tf.io.RaggedFeature(tf.int64)},
    )
    return context["image/features"], sequences["caption/ids"]


def parse_image_example(serialized, image_size: int):
    """``tf.data`` map function for phase 2: -> (uint8 image [S, S, 3], caption ids as a
    RaggedTensor [C, None]). Records written without ``--with-images`` fail here."""
    import tensorflow as tf

    context, sequences = tf.io.parse_single_sequence_example(
        serialized,
        context_features={"image/data": tf.io.FixedLenFeature([], tf.string)},
        sequence_features={"caption/ids": tf.io.RaggedFeature(tf.int64)},
    )
    image = tf.io.decode_png(context["image/data"], channels=3)
    return tf.ensure_shape(image, [image_size, image_size, 3]), sequences["caption/ids"]
