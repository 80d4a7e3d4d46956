"""The model stages, on Beam's ``RunInference``: a ``ModelHandler`` per model (the bundle for
captions, the encoder for features), with Beam's batching, model sharing and inference metrics.

Failures of an image are data; faults of the run stop it. The rule, applied to every batch:
  * a batch that raises is retried one image at a time, so that only the images at fault fail
    (they become failure records of their stage);
  * if every image of a batch of two or more fails on its own as well, the fault is the run's
    (a broken model, a device error, memory): :class:`RunFault` is raised and the run fails;
  * a model that returns non-finite values (``ModelFault``, or beam search's
    ``FloatingPointError`` on NaN log-probabilities) or a ``MemoryError`` fails the run at
    once: no decodable image causes those.
The caption job adds a last guard on the whole run (``--max-failed-fraction``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from typing import Generic

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from models.backend import load_keras
from models.faults import ModelFault, RunFault, StageFailed
from transforms.caption_schema import caption_row
from transforms.content import rows_per_copy
from transforms.decode import DecodedImage, Payload
from transforms.failures import FAILURES, failure

METRICS_NAMESPACE = "beamcap"
ENGINES = "engines"


def isolate_faults(function: Callable[[list], list], items: Sequence) -> list:
    """``function(items)`` -> one result per item; on an error, item by item. Returns, per item,
    its result or the exception it raised alone; raises :class:`RunFault` where the rule in
    this module's docstring says the fault is the run's."""
    items = list(items)
    try:
        return _checked(function(items), items)
    except Exception as error:  # noqa: BLE001 - sorted out below
        _raise_if_run_fault(error)
        if len(items) == 1:
            return [error]
    outcomes = []
    for item in items:
        try:
            outcomes += _checked(function([item]), [item])
        except Exception as error:  # noqa: BLE001
            _raise_if_run_fault(error)
            outcomes.append(error)
    if all(isinstance(outcome, Exception) for outcome in outcomes):
        first = outcomes[0].error if isinstance(outcomes[0], StageFailed) else outcomes[0]
        raise RunFault(
            f"all {len(items)} images of a batch failed, each on its own too: "
            f"{type(first).__name__}: {first}"
        ) from first
    return outcomes


def _checked(results, items) -> list:
    results = list(results)
    if len(results) != len(items):
        raise RunFault(f"the model returned {len(results)} results for {len(items)} images")
    return results


def _raise_if_run_fault(error: Exception) -> None:
    cause = error.error if isinstance(error, StageFailed) else error
    if isinstance(cause, (ModelFault, FloatingPointError, MemoryError)):  # named by its type
        raise RunFault(f"{type(cause).__name__}: {cause}") from error
    if isinstance(error, RunFault):
        raise error


class _ImageHandler(ModelHandler):
    """What both handlers share: batches of :class:`DecodedImage`, one outcome per image."""

    def __init__(self, *, min_batch_size: int, max_batch_size: int, share_across_processes):
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            model_copies=1 if share_across_processes else None,
        )

    @property
    def max_batch_size(self) -> int:
        """The batch shape the model is compiled for (Beam's batching setting)."""
        return self.batch_elements_kwargs()["max_batch_size"]

    def run_inference(self, batch: Sequence[DecodedImage], model, inference_args=None):
        outcomes = isolate_faults(
            lambda images: self.infer(model, np.stack([image.pixels for image in images])), batch
        )
        pairs = zip(batch, outcomes, strict=True)
        return [PredictionResult(image, outcome) for image, outcome in pairs]

    def get_num_bytes(self, batch: Sequence[DecodedImage]) -> int:
        return sum(image.pixels.nbytes for image in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


class BundleHandler(_ImageHandler):
    """Loads a model bundle's captioner on the engine that ``precision`` gives on this worker
    (``models.captioner.engines``); each batch is encoded and beam-searched
    (``Captioner.caption``), its results labelled with the engine's record (their
    ``model_id``), which the job tallies into ``summary.json``."""

    def __init__(self, uri: str, *, model_id: str, search: dict, precision: str, **batching):
        super().__init__(**batching)
        self.uri, self.model_id, self.search, self.precision = uri, model_id, search, precision

    def load_model(self):
        from models.captioner.engines import choose, load_captioner
        from models.captioner.manifest import Manifest

        manifest = Manifest.read(self.uri)
        choice = choose(self.precision, manifest)
        logging.info(
            "engine: %s on %s (--precision %s: %s)",
            choice.precision, choice.runtime, self.precision, choice.reason,
        )  # fmt: skip
        captioner = load_captioner(
            self.uri, choice, batch_size=self.max_batch_size, manifest=manifest
        )
        if captioner.model_id != self.model_id:
            raise RunFault(
                f"{self.uri} now holds model {captioner.model_id}, not {self.model_id} as at launch"
            )
        return captioner

    def run_inference(self, batch, model, inference_args=None):
        engine = json.dumps(model.engine_record(), sort_keys=True)
        results = super().run_inference(batch, model, inference_args)
        return [result._replace(model_id=engine) for result in results]

    def infer(self, captioner, pixels):
        return captioner.caption(pixels, **self.search)


class EncoderHandler(_ImageHandler):
    """Loads an InceptionV3 encoder; each batch becomes 2048-d features."""

    def __init__(self, spec, *, weights_file: str, precision: str, **batching):
        super().__init__(**batching)
        self.spec, self.weights_file, self.precision = spec, weights_file, precision

    def load_model(self):
        load_keras()
        from models.captioner.encoder import ImageEncoder

        return ImageEncoder(
            self.spec,
            weights_file=self.weights_file,
            precision=self.precision,
            batch_size=self.max_batch_size,
        )

    def infer(self, encoder, pixels):
        return encoder.encode(pixels)


class _SplitOutcomes(beam.DoFn):
    """PredictionResult -> ``to_output(image, result)``, or a failure record: of its stage for
    a :class:`StageFailed`, else of ``default_stage``; and, to :data:`ENGINES`, the engine
    that made each output where the handler labels its results."""

    def __init__(self, to_output: Callable, default_stage: str):
        self.to_output, self.default_stage = to_output, default_stage

    def process(self, result: PredictionResult):
        image, outcome = result.example, result.inference
        if isinstance(outcome, StageFailed):
            yield failure(image.uri, outcome.stage, outcome.error, payload=image.payload)
        elif isinstance(outcome, Exception):
            yield failure(image.uri, self.default_stage, outcome, payload=image.payload)
        else:
            yield self.to_output(image, outcome)
            if result.model_id:
                yield beam.pvalue.TaggedOutput(ENGINES, result.model_id)


def run_model(images, handler: ModelHandler, to_output: Callable, *, stage: str):
    """``RunInference`` with ``handler``, then outcomes split; returns (outputs, failures,
    engines: one element per output, :class:`_SplitOutcomes`)."""
    split = (
        images
        | "RunInference" >> RunInference(handler, metrics_namespace=METRICS_NAMESPACE)
        | "SplitOutcomes"
        >> beam.ParDo(_SplitOutcomes(to_output, stage)).with_outputs(FAILURES, ENGINES, main="main")
    )
    return split.main, split[FAILURES], split[ENGINES]


class CaptionImages(beam.PTransform):
    """DecodedImage -> caption rows (``CAPTIONS_SCHEMA``), and one for each copy its payload
    names (``transforms.content.Source``); returns (rows, failures, engines: the record of
    the engine that captioned each image, as JSON)."""

    def __init__(self, handler: BundleHandler, *, run_id: str):
        super().__init__()
        self.handler, self.run_id = handler, run_id

    def expand(self, images):
        model_id, run_id = self.handler.model_id, self.run_id

        def rows(image, captions):
            row = caption_row(image, captions, model_id, run_id)
            return rows_per_copy(row, image.payload, run_id)

        rows, failures, engines = run_model(images, self.handler, rows, stage="caption")
        return rows | "RowsPerCopy" >> beam.FlatMap(lambda each: each), failures, engines


@dataclasses.dataclass(frozen=True)
class EncodedImage(Generic[Payload]):
    uri: str
    features: np.ndarray  # float32 [2048]
    width: int
    height: int
    payload: Payload | None = None  # the DecodedImage's


def _encoded(image: DecodedImage, features: np.ndarray) -> EncodedImage:
    return EncodedImage(image.uri, features, image.width, image.height, image.payload)


class EncodeImages(beam.PTransform):
    """DecodedImage -> EncodedImage; returns (encoded, failures)."""

    def __init__(self, handler: EncoderHandler):
        super().__init__()
        self.handler = handler

    def expand(self, images):
        encoded, failures, _ = run_model(images, self.handler, _encoded, stage="encode")
        return encoded, failures
