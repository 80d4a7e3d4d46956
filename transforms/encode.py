"""Batch decoded images and run the InceptionV3 encoder, one model per worker process."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from models.encoder import EncoderSpec, ImageEncoder
from transforms.decode import DecodedImage
from transforms.failures import FAILURES, failure


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    uri: str
    features: np.ndarray  # float32 [2048]
    width: int
    height: int
    payload: object = None


class _Holder:
    """Shared needs a weak-referenceable object."""

    def __init__(self, value):
        self.value = value


class _EncodeBatch(beam.DoFn):
    def __init__(self, spec: EncoderSpec, weights_file: str | None, handle: shared.Shared):
        self.spec = spec
        self.weights_file = weights_file
        self._handle = handle
        self.encoded = Metrics.counter(self.__class__, "images_encoded")
        self.failed = Metrics.counter(self.__class__, "images_encode_failed")
        self.batch_sizes = Metrics.distribution(self.__class__, "encode_batch_size")

    def setup(self):
        def load():
            return _Holder(ImageEncoder(self.spec, weights_file=self.weights_file))

        self.encoder = self._handle.acquire(load, tag=(self.spec, self.weights_file)).value

    def process(self, batch: list[DecodedImage]):
        self.batch_sizes.update(len(batch))
        try:
            features = self.encoder.encode(np.stack([image.pixels for image in batch]))
            results = list(zip(batch, features, strict=True))
        except Exception:  # noqa: BLE001 - retry one by one to isolate the image at fault
            results = []
            for image in batch:
                try:
                    results.append((image, self.encoder.encode(image.pixels[None])[0]))
                except Exception as error:  # noqa: BLE001
                    self.failed.inc()
                    yield failure(image.uri, "encode", error)
        for image, vector in results:
            self.encoded.inc()
            yield EncodedImage(image.uri, vector, image.width, image.height, image.payload)


class EncodeImages(beam.PTransform):
    """DecodedImage -> EncodedImage, batched; returns (encoded, failures)."""

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        weights_file: str | None = None,
        min_batch_size: int = 8,
        max_batch_size: int = 64,
    ):
        super().__init__()
        self.spec = spec
        self.weights_file = weights_file
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size

    def expand(self, images):
        results = (
            images
            | "Batch"
            >> beam.BatchElements(
                min_batch_size=self.min_batch_size, max_batch_size=self.max_batch_size
            )
            | "Encode"
            >> beam.ParDo(_EncodeBatch(self.spec, self.weights_file, shared.Shared())).with_outputs(
                FAILURES, main="encoded"
            )
        )
        return results.encoded, results[FAILURES]
