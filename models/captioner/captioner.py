"""What captioning needs of a model, whichever engine runs it: an encoder, a stepper for beam
search, the vocabulary and the manifest; ``Captioner.caption`` is beamcap's one path from uint8
pixels to N-best captions. Without Keras: the OpenVINO engines run without TensorFlow. The
engines, and the rule that picks one, are ``models.captioner.engines``.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from models.captioner.beam_search import Stepper, beam_search
from models.captioner.manifest import Manifest
from models.captioner.vocabulary import Vocabulary
from models.faults import ModelFault, StageFailed


class Encoder(Protocol):
    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, S, S, 3] -> float32 features [B, D]; :class:`ModelFault` if not finite."""


@dataclasses.dataclass(frozen=True)
class Caption:
    """One decoded caption: its text, token ids (no ``<start>``/``<end>``) and beam scores."""

    text: str
    tokens: tuple[int, ...]
    log_prob: float
    score: float


@dataclasses.dataclass
class Captioner:
    encoder: Encoder
    stepper: Stepper
    vocabulary: Vocabulary
    manifest: Manifest
    precision: str = "fp32"
    engine: dict = dataclasses.field(default_factory=dict)  # its Choice's record, once chosen

    def engine_record(self) -> dict:
        """The engine's :meth:`~models.captioner.engines.Choice.record` (a method: a model
        shared across processes is reached through a proxy, which forwards calls only)."""
        return self.engine

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    def caption(self, images: np.ndarray, **search) -> list[list[Caption]]:
        """uint8 images [B, S, S, 3] -> N-best captions per image, best first (``search``:
        ``beam_search``'s keyword arguments).

        An error raised while encoding comes as :class:`StageFailed` ``("encode", error)``, so
        that a job can tell the two halves apart. Non-finite features or scores raise
        :class:`ModelFault`: no image makes a sound model return NaN."""
        try:
            features = self.encoder.encode(images)
        except ModelFault:
            raise
        except Exception as error:
            raise StageFailed("encode", error) from error
        return self.caption_features(features, **search)

    def caption_features(self, features: np.ndarray, **search) -> list[list[Caption]]:
        """``caption`` from features already encoded: beam search and the vocabulary."""
        hypotheses = beam_search(self.stepper, features, **search)
        scores = [value for image in hypotheses for h in image for value in (h.log_prob, h.score)]
        if not np.isfinite(scores).all():
            raise ModelFault(f"model {self.model_id}: the decoder returned non-finite scores")
        decode = self.vocabulary.decode
        return [
            [Caption(decode(h.tokens), h.tokens, h.log_prob, h.score) for h in image]
            for image in hypotheses
        ]
