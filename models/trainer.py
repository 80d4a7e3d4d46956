"""Fit the Show-and-Tell decoder on precomputed features (the ``beamcap features`` output).

Teacher forcing over one example per image-caption pair (shuffled, padded per batch, prefetched
by ``tf.data``), masked cross-entropy, Adam with gradient-norm clipping. Every epoch: validation
loss, validation BLEU-4 on a sample decoded with beam search, a checkpoint
(``keras.callbacks.BackupAndRestore``: rerunning after an interruption resumes from the last
finished epoch), and early stopping on the validation loss. At the end: ``loss.png``,
``metrics.json`` and the model bundle, encoder weights included, in the output directory.

Training needs Keras' TensorFlow backend (``tf.data``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from models import storage
from models.beam_search import beam_search
from models.bundle import save_bundle
from models.configs import DecoderConfig, TrainConfig
from models.decoder import DecoderStepper, ShowAndTell, masked_cross_entropy
from models.encoder import EncoderSpec, ImageEncoder
from models.feature_records import decode_example, parse_example
from models.metrics import caption_scores
from models.vocabulary import Vocabulary

log = logging.getLogger(__name__)


def _shards(data_dir: str, split: str) -> list[str]:
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(storage.join(data_dir, f"{split}-*.tfrecord")))


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


def read_sample(files: list[str], count: int) -> tuple[np.ndarray, list[list[str]]]:
    """The first ``count`` images of a split: features and reference captions."""
    import tensorflow as tf

    features, references = [], []
    for record in tf.data.TFRecordDataset(files).take(count).as_numpy_iterator():
        example = decode_example(record)
        features.append(example.features)
        references.append(example.caption_texts)
    return np.array(features, np.float32).reshape(len(features), -1), references


def bleu4(
    stepper: DecoderStepper, vocabulary: Vocabulary, features, references, *, beam_size, max_length
) -> float:
    if not len(features):
        return float("nan")
    best = beam_search(
        stepper, features, beam_size=beam_size, max_length=max_length, num_candidates=1
    )
    captions = [vocabulary.decode(image[0].tokens) if image else "" for image in best]
    return caption_scores(captions, references)["bleu4"]


class _ValidationBleu(keras.callbacks.Callback):
    """Validation BLEU-4 after each epoch; ``stepper`` shares the decoder's variables, so one
    stepper (and its compiled step) serves every epoch."""

    def __init__(self, stepper, vocabulary, sample, config: TrainConfig):
        super().__init__()
        self.stepper, self.vocabulary, self.sample, self.config = (
            stepper,
            vocabulary,
            sample,
            config,
        )

    def on_epoch_end(self, epoch, logs=None):
        logs["val_bleu4"] = bleu4(
            self.stepper,
            self.vocabulary,
            *self.sample,
            beam_size=self.config.beam_size,
            max_length=self.config.max_length,
        )


class _Progress(keras.callbacks.Callback):
    """A log line every ``interval`` seconds and at each epoch's end."""

    def __init__(self, steps: int, batch_size: int, interval: float = 10.0):
        super().__init__()
        self.steps, self.batch_size, self.interval = steps, batch_size, interval

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch + 1, time.time()
        self.last = self.started

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if now - self.last >= self.interval:
            self.last = now
            rate = (batch + 1) * self.batch_size / (now - self.started)
            log.info(
                "epoch %d step %d/%d loss %.4f (%.0f captions/s)",
                self.epoch,
                batch + 1,
                self.steps,
                logs["loss"],
                rate,
            )

    def on_epoch_end(self, epoch, logs=None):
        log.info(
            "epoch %d done in %.0fs: %s",
            self.epoch,
            time.time() - self.started,
            ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())),
        )


def _history(path: Path) -> list[dict]:
    """Per-epoch rows of the CSV log, the last row of each epoch kept (a resumed run may
    repeat the epoch it was interrupted in)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    return [
        {key: (int(v) if key == "epoch" else float(v)) for key, v in rows[e].items()}
        for e in sorted(rows)
    ]


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [row["epoch"] + 1 for row in history]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(epochs, [row["loss"] for row in history], marker="o", label="train")
    axis.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    axis.set(xlabel="epoch", ylabel="masked cross-entropy", title="beamcap decoder training")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def train(
    data_dir: str,
    output: str,
    *,
    decoder_config: dict | None = None,
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | None = None,
) -> dict:
    """Trains, writes the bundle and reports to ``output``; returns the metrics."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("training uses tf.data: run it with KERAS_BACKEND=tensorflow")
    dataset = json.loads(storage.read_text(storage.join(data_dir, "dataset.json")))
    vocabulary = Vocabulary.load(storage.join(data_dir, dataset["vocabulary"]["file"]))
    train_files, val_files = _shards(data_dir, "train"), _shards(data_dir, "val")
    if not train_files:
        raise FileNotFoundError(f"no train-*.tfrecord in {data_dir}")
    counts = dataset["counts"]
    keras.utils.set_random_seed(config.seed)
    decoder_settings = {**(decoder_config or {}), "vocab_size": len(vocabulary)}
    decoder = ShowAndTell(DecoderConfig(**decoder_settings))
    feature_dim = decoder.config.feature_dim
    model = decoder.training_model
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clip_norm),
        loss=masked_cross_entropy,
    )
    train_data = caption_pairs(
        train_files,
        feature_dim,
        captions=counts["train_captions"],
        batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
    )
    val_data = None
    if val_files and counts["val_captions"]:
        val_data = caption_pairs(
            val_files, feature_dim, captions=counts["val_captions"], batch_size=config.batch_size
        )
    steps = math.ceil(counts["train_captions"] / config.batch_size)
    sample = read_sample(val_files, config.bleu_sample) if val_files else (np.zeros((0, 1)), [])

    local_output = Path(output) if not storage.is_gcs(output) else None
    work = Path(
        checkpoint_dir
        or (
            local_output / "checkpoints"
            if local_output
            else tempfile.mkdtemp(prefix="beamcap-train-")
        )
    )
    work.mkdir(parents=True, exist_ok=True)
    history_csv, backup = work / "history.csv", work / "backup"
    if history_csv.exists() and not backup.exists():
        history_csv.unlink()  # left by a run that stopped before its first checkpoint
    monitor = "val_loss" if val_data is not None else "loss"
    stepper = DecoderStepper(decoder, start_id=vocabulary.start_id, end_id=vocabulary.end_id)
    callbacks = [
        _ValidationBleu(stepper, vocabulary, sample, config),
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.BackupAndRestore(str(backup)),  # deleted when training completes
        _Progress(steps, config.batch_size),
    ]
    resumed_from = _history(history_csv)
    if resumed_from:
        log.info("resuming after epoch %d (checkpoint in %s)", resumed_from[-1]["epoch"] + 1, work)
    started = time.time()
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )  # tf.data shuffles
    seconds = time.time() - started

    history = _history(history_csv)
    best = min(history, key=lambda row: row.get(monitor, math.inf))
    final_bleu = bleu4(
        stepper, vocabulary, *sample, beam_size=config.beam_size, max_length=config.max_length
    )
    metrics = {
        "epochs_run": len(history),
        "best_epoch": best["epoch"] + 1,
        "train_loss": best["loss"],
        "val_loss": best.get("val_loss"),
        "val_bleu4": final_bleu,
        "val_bleu_sample": len(sample[1]),
        "seconds": round(seconds, 1),
        "resumed_after_epoch": resumed_from[-1]["epoch"] + 1 if resumed_from else None,
        "dataset": counts,
        "config": dataclasses.asdict(config),
        "decoder": dataclasses.asdict(decoder.config),
        "history": history,
    }
    encoder_info = dataset["encoder"]
    encoder = ImageEncoder(
        EncoderSpec(encoder_info["weights"], encoder_info["image_size"]),
        weights_file=storage.join(data_dir, encoder_info["weights_file"]),
    )
    if encoder.fingerprint != encoder_info["fingerprint"]:
        raise ValueError(
            f"{data_dir}/{encoder_info['weights_file']} does not hold the weights the features "
            f"were computed with (fingerprint {encoder.fingerprint[:12]}, dataset.json says "
            f"{encoder_info['fingerprint'][:12]})"
        )
    summary = {
        k: metrics[k]
        for k in ("epochs_run", "best_epoch", "train_loss", "val_loss", "val_bleu4", "seconds")
    }
    manifest = save_bundle(
        output,
        encoder=encoder,
        decoder=decoder,
        vocabulary=vocabulary,
        training={**summary, "data": data_dir},
    )
    metrics["model_id"] = manifest["model_id"]
    with tempfile.TemporaryDirectory() as tmp:
        _plot(history, Path(tmp, "loss.png"))
        storage.write_bytes(storage.join(output, "loss.png"), Path(tmp, "loss.png").read_bytes())
    storage.write_text(storage.join(output, "metrics.json"), json.dumps(metrics, indent=2))
    history_csv.unlink()  # now in metrics.json; a rerun starts afresh
    if not any(work.iterdir()):
        work.rmdir()
    return metrics
