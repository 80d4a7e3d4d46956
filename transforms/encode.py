"""Batch decoded images and run the InceptionV3 encoder, one model per worker process."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from models.encoder import EncoderSpec, ImageEncoder
from transforms.batching import batch_and_apply, load_shared, run_batch
from transforms.decode import DecodedImage


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    uri: str
    features: np.ndarray  # float32 [2048]
    width: int
    height: int
    payload: object = None


class _EncodeBatch(beam.DoFn):
    def __init__(
        self,
        spec: EncoderSpec,
        weights_file: str | None,
        encoder_settings: dict,
        handle: shared.Shared,
    ):
        self.spec = spec
        self.weights_file = weights_file
        self.encoder_settings = encoder_settings  # precision, batch_size
        self._handle = handle
        self.encoded = Metrics.counter(self.__class__, "images_encoded")
        self.failed = Metrics.counter(self.__class__, "images_encode_failed")
        self.batch_sizes = Metrics.distribution(self.__class__, "encode_batch_size")

    def setup(self):
        self.encoder = load_shared(
            self._handle,
            (self.spec, self.weights_file, *sorted(self.encoder_settings.items())),
            lambda: ImageEncoder(
                self.spec, weights_file=self.weights_file, **self.encoder_settings
            ),
        )

    def process(self, batch: list[DecodedImage]):
        self.batch_sizes.update(len(batch))
        images, features, failed = run_batch(
            lambda xs: self.encoder.encode(np.stack([x.pixels for x in xs])), batch, "encode"
        )
        self.failed.inc(len(failed))
        yield from failed
        for image, vector in zip(images, features, strict=True):
            self.encoded.inc()
            yield EncodedImage(image.uri, vector, image.width, image.height, image.payload)


class EncodeImages(beam.PTransform):
    """DecodedImage -> EncodedImage, batched; returns (encoded, failures)."""

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        weights_file: str | None = None,
        precision: str = "fp32",
        min_batch_size: int = 8,
        max_batch_size: int = 64,
    ):
        super().__init__()
        self.spec = spec
        self.weights_file = weights_file
        self.precision = precision
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size

    def expand(self, images):
        return batch_and_apply(
            images,
            _EncodeBatch(
                self.spec,
                self.weights_file,
                {"precision": self.precision, "batch_size": self.max_batch_size},
                shared.Shared(),
            ),
            label="Encode",
            min_batch_size=self.min_batch_size,
            max_batch_size=self.max_batch_size,
        )
