"""Keras callbacks of a training run: validation captions, examples seen, time budget, progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import keras

from models.captioner.beam_search import beam_search
from models.captioner.decoder import DecoderStepper
from models.captioner.vocabulary import Vocabulary
from models.configs import TrainConfig
from models.evaluation.metrics import caption_scores
from models.training.inputs import Sample

log = logging.getLogger(__name__)

# Scores captions of validation images beyond BLEU-4: (image ids, captions) -> {name: score}.
Judge = Callable[[list[str], list[str]], dict[str, float]]


def decode_captions(
    stepper: DecoderStepper, vocabulary: Vocabulary, features, *, beam_size, max_length
) -> list[str]:
    best = beam_search(
        stepper, features, beam_size=beam_size, max_length=max_length, num_candidates=1
    )
    return [vocabulary.decode(image[0].tokens) if image else "" for image in best]


class Validation(keras.callbacks.Callback):
    """Validation BLEU-4 (and the ``judge``'s scores, ``val_``-prefixed) after each epoch;
    ``stepper`` shares the decoder's variables, so one stepper (and its compiled step) serves
    every epoch. ``featurize`` maps the sample's inputs to features (the identity in phase 1;
    the encoder being trained, in inference mode, in phase 2)."""

    def __init__(
        self,
        stepper: DecoderStepper,
        vocabulary: Vocabulary,
        sample: Sample,
        config: TrainConfig,
        *,
        featurize: Callable,
        judge: Judge | None,
    ):
        super().__init__()
        self.stepper, self.vocabulary, self.sample = stepper, vocabulary, sample
        self.config, self.featurize, self.judge = config, featurize, judge

    def evaluate(self) -> dict:
        captions, bleu4 = [], float("nan")
        if self.sample.image_ids:
            captions = decode_captions(
                self.stepper,
                self.vocabulary,
                self.featurize(self.sample.inputs),
                beam_size=self.config.beam_size,
                max_length=self.config.max_length,
            )
            bleu4 = caption_scores(captions, self.sample.references)["bleu4"]
        judged = self.judge(self.sample.image_ids, captions) if self.judge else {}
        return {"val_bleu4": bleu4, **{f"val_{key}": value for key, value in judged.items()}}

    def on_epoch_end(self, epoch, logs=None):
        logs.update(self.evaluate())


class Seen(keras.callbacks.Callback):
    """Adds ``key`` (images or captions trained on since the first run began) and ``minutes``
    (training time, resumed runs included) to each epoch's logs, for the learning curve."""

    def __init__(self, key: str, batch_size: int, *, per_epoch: int | None, seen=0, minutes=0.0):
        super().__init__()
        self.key, self.batch_size, self.per_epoch = key, batch_size, per_epoch
        self.seen, self.minutes = seen, minutes

    def on_epoch_begin(self, epoch, logs=None):
        self.steps, self.started = 0, time.time()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        full = self.per_epoch is not None and self.steps * self.batch_size >= self.per_epoch
        self.seen += self.per_epoch if full else self.steps * self.batch_size
        self.minutes += (time.time() - self.started) / 60
        logs[self.key] = float(self.seen)
        logs["minutes"] = round(self.minutes, 2)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after ``seconds``: mid-epoch, that epoch is cut short, then validated,
    checkpointed and logged as usual."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.stopped_early = seconds, False

    def on_train_begin(self, logs=None):
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.started > self.seconds:
            self.model.stop_training, self.stopped_early = True, True


class Progress(keras.callbacks.Callback):
    """A log line every ``interval`` seconds and at each epoch's end."""

    def __init__(self, steps: int, batch_size: int, interval: float = 10.0, unit="captions"):
        super().__init__()
        self.steps, self.batch_size, self.interval = steps, batch_size, interval
        self.unit = unit

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch + 1, time.time()
        self.last = self.started

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if now - self.last >= self.interval:
            self.last = now
            rate = (batch + 1) * self.batch_size / (now - self.started)
            log.info(
                "epoch %d step %d/%d loss %.4f (%.0f %s/s)",
                self.epoch,
                batch + 1,
                self.steps,
                logs["loss"],
                rate,
                self.unit,
            )

    def on_epoch_end(self, epoch, logs=None):
        log.info(
            "epoch %d done in %.0fs: %s",
            self.epoch,
            time.time() - self.started,
            ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())),
        )
