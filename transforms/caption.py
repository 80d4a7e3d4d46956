"""Encode and caption images in one fused stage: no pixels or features cross a shuffle.

The model bundle is loaded once per worker process (``apache_beam.utils.shared.Shared``) and
reused by every thread and bundle; each batch runs the encoder and then one batched beam search.
"""

from __future__ import annotations

import logging
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from models.beam_search import beam_search
from models.bundle import load_bundle
from transforms.batching import batch_and_apply, load_shared, run_batch
from transforms.caption_sink import caption_row
from transforms.decode import DecodedImage
from transforms.failures import failure

log = logging.getLogger(__name__)


class _CaptionBatch(beam.DoFn):
    PROGRESS_SECONDS = 30.0

    def __init__(
        self, model: str, search: dict, run_id: str, encoder_settings: dict, handle: shared.Shared
    ):
        self.model = model
        self.search = search
        self.run_id = run_id
        self.encoder_settings = encoder_settings  # precision, batch_size
        self._handle = handle
        self.captioned = Metrics.counter(self.__class__, "images_captioned")
        self.encode_failed = Metrics.counter(self.__class__, "images_encode_failed")
        self.caption_failed = Metrics.counter(self.__class__, "images_caption_failed")
        self.batch_sizes = Metrics.distribution(self.__class__, "caption_batch_size")

    def setup(self):
        self.bundle = load_shared(
            self._handle,
            (self.model, *sorted(self.encoder_settings.items())),
            lambda: load_bundle(self.model, **self.encoder_settings),
        )
        self._count, self._started = 0, time.time()
        self._last_log = self._started

    def process(self, batch: list[DecodedImage]):
        self.batch_sizes.update(len(batch))
        images, features, failed = run_batch(
            lambda xs: self.bundle.encoder.encode(np.stack([x.pixels for x in xs])),
            batch,
            "encode",
        )
        self.encode_failed.inc(len(failed))
        yield from failed
        if not images:
            return
        by_uri = dict(zip((x.uri for x in images), features, strict=True))
        images, hypotheses, failed = run_batch(
            lambda xs: beam_search(
                self.bundle.stepper, np.stack([by_uri[x.uri] for x in xs]), **self.search
            ),
            images,
            "caption",
        )
        self.caption_failed.inc(len(failed))
        yield from failed
        for image, best in zip(images, hypotheses, strict=True):
            if not best:
                self.caption_failed.inc()
                yield failure(image.uri, "caption", "beam search found no caption")
                continue
            self.captioned.inc()
            yield caption_row(
                image, best, self.bundle.vocabulary, self.bundle.model_id, self.run_id
            )
        self._report(len(images))

    def _report(self, count):
        self._count += count
        now = time.time()
        if now - self._last_log >= self.PROGRESS_SECONDS:
            self._last_log = now
            log.info(
                "captioned %d images in this worker (%.1f images/s)",
                self._count,
                self._count / (now - self._started),
            )


class CaptionImages(beam.PTransform):
    """DecodedImage -> caption rows (``CAPTIONS_SCHEMA``); returns (rows, failures)."""

    def __init__(
        self,
        model: str,
        *,
        run_id: str,
        search: dict,
        precision: str = "fp32",
        min_batch_size: int = 8,
        max_batch_size: int = 32,
    ):
        super().__init__()
        self.model, self.run_id, self.search, self.precision = model, run_id, search, precision
        self.min_batch_size, self.max_batch_size = min_batch_size, max_batch_size

    def expand(self, images):
        return batch_and_apply(
            images,
            _CaptionBatch(
                self.model,
                self.search,
                self.run_id,
                {"precision": self.precision, "batch_size": self.max_batch_size},
                shared.Shared(),
            ),
            label="EncodeAndCaption",
            min_batch_size=self.min_batch_size,
            max_batch_size=self.max_batch_size,
        )
