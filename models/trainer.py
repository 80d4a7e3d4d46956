"""Fit Show and Tell on the ``beamcap features`` output, in im2txt's two phases.

Phase 1 (default): the decoder on precomputed features of a frozen encoder. Teacher forcing over
one example per image-caption pair (shuffled, padded per batch, prefetched by ``tf.data``),
masked cross-entropy, Adam with gradient-norm clipping.

Phase 2 (``train_encoder=True``, usually with ``init_from`` a phase-1 bundle): the encoder and
the decoder together on the records' pixels (features written ``--with-images``), through
:class:`models.joint.JointCaptioner`: one CNN pass per image for all of its captions, the
encoder with its own Adam and learning rate, BatchNorm trained or frozen (``encoder_batchnorm``),
bfloat16 compute if asked (``encoder_precision``). The train split is repeated and shuffled
without end; an "epoch" is ``images_per_epoch`` images, the interval between evaluations.

Both phases, every epoch: validation loss, validation BLEU-4 (and, given the synthetic
``val_scenes``, attribute accuracy) on a sample decoded with beam search, a checkpoint
(``keras.callbacks.BackupAndRestore``: rerunning after an interruption resumes from the last
finished epoch), early stopping on the validation loss, and a stop once ``time_budget_minutes``
have passed. At the end: ``loss.png``, ``metrics.json`` (with the per-epoch history, examples
seen included) and the model bundle, encoder weights included, in the output directory. A
phase-2 bundle records ``phase: 2`` and its fine-tuning settings in the manifest's encoder
section; the caption job reads it like any other.

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
from models.bundle import load_bundle, save_bundle
from models.configs import DecoderConfig, SettingsError, TrainConfig
from models.decoder import DecoderStepper, ShowAndTell, masked_cross_entropy
from models.encoder import EncoderSpec, ImageEncoder
from models.feature_records import decode_example, decode_png, parse_example, parse_image_example
from models.joint import JointCaptioner, resolve_batchnorm, set_batchnorm
from models.metrics import caption_scores
from models.synthetic import ATTRIBUTE_FIELDS, attribute_scores, read_scenes
from models.vocabulary import Vocabulary

log = logging.getLogger(__name__)


def _shards(data_dir: str, split: str) -> list[str]:
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


def decode_captions(
    stepper: DecoderStepper, vocabulary: Vocabulary, features, *, beam_size, max_length
) -> list[str]:
    best = beam_search(
        stepper, features, beam_size=beam_size, max_length=max_length, num_candidates=1
    )
    return [vocabulary.decode(image[0].tokens) if image else "" for image in best]


def bleu4(
    stepper: DecoderStepper, vocabulary: Vocabulary, features, references, *, beam_size, max_length
) -> float:
    if not len(features):
        return float("nan")
    captions = decode_captions(
        stepper, vocabulary, features, beam_size=beam_size, max_length=max_length
    )
    return caption_scores(captions, references)["bleu4"]


def _val(scores: dict) -> dict:
    return {f"val_{key}": value for key, value in scores.items()}


class _Validation(keras.callbacks.Callback):
    """Validation BLEU-4 (and attribute accuracy, given scenes) after each epoch; ``stepper``
    shares the decoder's variables, so one stepper (and its compiled step) serves every epoch.
    ``featurize`` maps the sample's inputs to features (the identity in phase 1; the encoder
    being trained, in inference mode, in phase 2)."""

    def __init__(
        self,
        stepper,
        vocabulary,
        sample: Sample,
        config: TrainConfig,
        *,
        featurize,
        scenes: dict | None,
    ):
        super().__init__()
        self.stepper, self.vocabulary, self.sample, self.config = (
            stepper,
            vocabulary,
            sample,
            config,
        )
        self.featurize, self.scenes = featurize, scenes
        self.last_captions: list[str] = []

    def evaluate(self) -> dict:
        if not self.sample.image_ids:
            return {
                "val_bleu4": float("nan"),
                **(_val(attribute_scores([])) if self.scenes is not None else {}),
            }
        features = self.featurize(self.sample.inputs)
        captions = decode_captions(
            self.stepper,
            self.vocabulary,
            features,
            beam_size=self.config.beam_size,
            max_length=self.config.max_length,
        )
        self.last_captions = captions
        result = {"val_bleu4": caption_scores(captions, self.sample.references)["bleu4"]}
        if self.scenes is not None:
            pairs = zip(self.sample.image_ids, captions, strict=True)
            judged = [(self.scenes[i], c) for i, c in pairs if i in self.scenes]
            result |= _val(attribute_scores(judged))
        return result

    def on_epoch_end(self, epoch, logs=None):
        logs.update(self.evaluate())


class _Seen(keras.callbacks.Callback):
    """Adds ``KEY`` (images or captions trained on since the first run began) and ``minutes``
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


class _TimeBudget(keras.callbacks.Callback):
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


class _Progress(keras.callbacks.Callback):
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


def headline(metrics: dict) -> dict:
    """The figures of a training run that its bundle's manifest records and ``beamcap train``
    prints."""
    keys = ("phase", "epochs_run", "best_epoch", "train_loss", "val_loss", "val_bleu4")
    keys += ("seconds", "images_seen", "captions_seen")
    return {key: metrics[key] for key in keys if key in metrics}


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
    """Loss per epoch; with a second panel, the validation caption metrics against the images
    (phase 2) or captions (phase 1) trained on: the learning curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    seen_key = next(
        (k for k in ("images_seen", "captions_seen") if history and k in history[0]), None
    )
    panels = 2 if seen_key else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    epochs = [row["epoch"] + 1 for row in history]
    axis = axes[0][0]
    axis.plot(epochs, [row["loss"] for row in history], marker="o", label="train")
    if history and "val_loss" in history[0]:
        axis.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    axis.set(xlabel="epoch", ylabel="masked cross-entropy", title="beamcap training loss")
    axis.legend()
    if seen_key:
        axis = axes[0][1]
        seen = [row[seen_key] for row in history]
        labels = {"val_attribute_accuracy": "attribute accuracy (every object right)"}
        for field in ATTRIBUTE_FIELDS:
            per = "image" if field == "count" else "object"
            labels[f"val_{field}_accuracy"] = f"{field} (per {per})"
        labels["val_bleu4"] = "BLEU-4"
        for key, label in labels.items():
            if key in history[0]:
                axis.plot(seen, [row[key] for row in history], marker="o", label=label)
        axis.set(
            xlabel=seen_key.replace("_", " "),
            ylabel="validation sample",
            ylim=(0, 1),
            title="validation captions (beam search)",
        )
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _check_encoder_file(encoder: ImageEncoder, data_dir: str, encoder_info: dict) -> None:
    if encoder.fingerprint != encoder_info["fingerprint"]:
        raise SettingsError(
            f"{data_dir}/{encoder_info['weights_file']} does not hold the weights the features "
            f"were computed with (fingerprint {encoder.fingerprint[:12]}, dataset.json says "
            f"{encoder_info['fingerprint'][:12]})"
        )


def _start_from_bundle(
    uri: str, vocabulary: Vocabulary, encoder_info: dict, *, phase: int, precision: str
):
    """The bundle's encoder and decoder, after checking it fits the data."""
    bundle = load_bundle(uri, precision=precision)
    if bundle.vocabulary.words != vocabulary.words:
        raise SettingsError(
            f"--init-from {uri} has another vocabulary ({len(bundle.vocabulary)} words) than the "
            f"features ({len(vocabulary)}): train phase 2 on the features phase 1 was trained on"
        )
    if bundle.encoder.spec.image_size != encoder_info["image_size"]:
        raise SettingsError(
            f"--init-from {uri} encodes {bundle.encoder.spec.image_size}px images, the features "
            f"hold {encoder_info['image_size']}px"
        )
    if phase == 1 and bundle.encoder.fingerprint != encoder_info["fingerprint"]:
        raise SettingsError(
            f"--init-from {uri} has another encoder (fingerprint "
            f"{bundle.encoder.fingerprint[:12]}) than the one the features were computed with "
            f"({encoder_info['fingerprint'][:12]}): its decoder cannot continue on these "
            "features; add --train-encoder (phase 2 reads pixels) or recompute the features"
        )
    return bundle


def _encoder_extras(manifest_encoder: dict) -> dict:
    """The manifest's encoder keys beyond the spec and fingerprint (phase, fine_tuning)."""
    known = {f.name for f in dataclasses.fields(EncoderSpec)} | {"fingerprint"}
    return {k: v for k, v in manifest_encoder.items() if k not in known}


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
    encoder_info = dataset["encoder"]
    phase = 2 if config.train_encoder else 1
    if phase == 2 and not dataset.get("settings", {}).get("with_images"):
        raise SettingsError(
            f"{data_dir} holds no images: phase 2 (--train-encoder) trains on pixels; write the "
            "features with `beamcap features ... --with-images`"
        )
    keras.utils.set_random_seed(config.seed)
    precision = config.encoder_precision if phase == 2 else "fp32"
    bundle = None
    if config.init_from:
        bundle = _start_from_bundle(
            config.init_from, vocabulary, encoder_info, phase=phase, precision=precision
        )
        encoder, decoder = bundle.encoder, bundle.decoder
        wanted = {k: v for k, v in (decoder_config or {}).items() if k != "vocab_size"}
        ignored = {k: v for k, v in wanted.items() if getattr(decoder.config, k) != v}
        if ignored:
            log.warning(
                "decoder settings %s ignored: the decoder comes from %s", ignored, config.init_from
            )
        extras = _encoder_extras(bundle.manifest["encoder"])
    else:
        encoder = ImageEncoder(
            EncoderSpec(encoder_info["weights"], encoder_info["image_size"]),
            weights_file=storage.join(data_dir, encoder_info["weights_file"]),
            precision=precision,
        )
        _check_encoder_file(encoder, data_dir, encoder_info)
        decoder_settings = {**(decoder_config or {}), "vocab_size": len(vocabulary)}
        decoder = ShowAndTell(DecoderConfig(**decoder_settings))
        extras = {"phase": 1}
    initial_fingerprint = encoder.fingerprint
    feature_dim = decoder.config.feature_dim
    image_size = encoder.spec.image_size
    batchnorm = None

    if phase == 1:
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
                val_files,
                feature_dim,
                captions=counts["val_captions"],
                batch_size=config.batch_size,
            )
        steps = math.ceil(counts["train_captions"] / config.batch_size)
        steps_per_epoch, per_epoch, seen_key = None, counts["train_captions"], "captions_seen"
        sample = read_sample(val_files, config.bleu_sample)

        def featurize(inputs):
            return inputs

    else:
        batchnorm = resolve_batchnorm(config.encoder_batchnorm, encoder.spec.weights)
        set_batchnorm(encoder.backbone, batchnorm)
        model = JointCaptioner(
            encoder,
            decoder,
            encoder_optimizer=keras.optimizers.Adam(
                config.encoder_learning_rate, clipnorm=config.clip_norm
            ),
        )
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clip_norm)
        )
        model((np.zeros((1, image_size, image_size, 3), np.uint8), np.zeros((1, 1, 2), np.int32)))
        model.build_optimizers()
        per_epoch = config.images_per_epoch or counts["train_images"]
        steps = steps_per_epoch = max(1, math.ceil(per_epoch / config.batch_size))
        per_epoch, seen_key = steps * config.batch_size, "images_seen"
        train_data = image_caption_batches(
            train_files,
            image_size,
            batch_size=config.batch_size,
            shuffle_buffer=min(config.shuffle_buffer, 10_000),
            seed=config.seed,
            repeat=True,
            captions_per_image=config.captions_per_image,
        )
        val_data = None
        if val_files and counts["val_images"]:
            val_data = image_caption_batches(
                val_files, image_size, batch_size=config.batch_size, count=counts["val_images"]
            )
        sample = read_sample(val_files, config.bleu_sample, pixels=True)
        log.info(
            "phase 2: encoder %s (%s, BatchNorm %s, lr %g) and decoder (lr %g) on %dpx pixels; "
            "%d images per epoch",
            encoder.spec.weights,
            precision,
            batchnorm,
            config.encoder_learning_rate,
            config.learning_rate,
            image_size,
            per_epoch,
        )

        def featurize(inputs):
            return np.asarray(encoder.model.predict(inputs, batch_size=64, verbose=0), np.float32)

    scenes = None
    if config.val_scenes:
        scenes = {scene.image: scene for scene in read_scenes(config.val_scenes)}

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
    validation = _Validation(
        stepper, vocabulary, sample, config, featurize=featurize, scenes=scenes
    )
    resumed_from = _history(history_csv)
    last = resumed_from[-1] if resumed_from else {}
    budget = _TimeBudget(config.time_budget_minutes * 60) if config.time_budget_minutes else None
    callbacks = [
        validation,
        _Seen(
            seen_key,
            config.batch_size,
            per_epoch=per_epoch,
            seen=int(last.get(seen_key, 0)),
            minutes=last.get("minutes", 0.0),
        ),
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.BackupAndRestore(str(backup)),  # deleted when training completes
        _Progress(steps, config.batch_size, unit=seen_key.split("_")[0]),
        *([budget] if budget else []),
    ]
    if resumed_from:
        log.info("resuming after epoch %d (checkpoint in %s)", last["epoch"] + 1, work)
    started = time.time()
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )  # tf.data shuffles
    seconds = time.time() - started

    history = _history(history_csv)
    best = min(history, key=lambda row: row.get(monitor, math.inf))
    final = validation.evaluate()
    metrics = {
        "phase": phase,
        "epochs_run": len(history),
        "best_epoch": best["epoch"] + 1,
        "train_loss": best["loss"],
        "val_loss": best.get("val_loss"),
        "val_bleu4": final["val_bleu4"],
        **({"val_attribute_accuracy": final["val_attribute_accuracy"]} if scenes else {}),
        "val_bleu_sample": len(sample.references),
        seen_key: int(history[-1][seen_key]) if history else 0,
        "seconds": round(seconds, 1),
        "stopped_by_time_budget": bool(budget and budget.stopped_early),
        "resumed_after_epoch": last["epoch"] + 1 if resumed_from else None,
        "init_from": config.init_from or None,
        "dataset": counts,
        "config": dataclasses.asdict(config),
        "decoder": dataclasses.asdict(decoder.config),
        "history": history,
    }
    if phase == 2:
        # The trained backbone, reloaded into a plain float32 encoder: what load_bundle builds.
        with tempfile.TemporaryDirectory() as tmp:
            trained = str(Path(tmp, "encoder.weights.h5"))
            encoder.backbone.save_weights(trained)
            encoder = ImageEncoder(encoder.spec, weights_file=trained)
        extras = {
            "phase": 2,
            "fine_tuning": {
                "from_model": bundle.model_id if bundle else None,
                "from_fingerprint": initial_fingerprint,
                "images_seen": metrics["images_seen"]
                + int(extras.get("fine_tuning", {}).get("images_seen", 0)),
                "learning_rate": config.encoder_learning_rate,
                "batchnorm": batchnorm,
                "precision": precision,
            },
        }
        metrics["encoder_batchnorm"] = batchnorm
    manifest = save_bundle(
        output,
        encoder=encoder,
        decoder=decoder,
        vocabulary=vocabulary,
        training={**headline(metrics), "data": data_dir, "init_from": config.init_from or None},
        encoder_extras=extras,
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
