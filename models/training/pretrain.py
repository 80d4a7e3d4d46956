"""Encoder pretraining: the bundle's backbone fitted as a classifier of labelled images.

Show and Tell's CNN was an ImageNet classifier before it was an encoder; a random one
describes almost nothing. ``pretrain`` puts one softmax head per label (``Head``) on the
backbone's pooled features (the features the decoder will read), trains it with a masked
cross-entropy, and keeps the backbone: its weights file is what ``beamcap features
--encoder-weights`` takes. Held-out accuracy per head group is measured every
``images_per_eval`` images (the learning curve); a rerun of an interrupted run resumes from its
last evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from keras.layers import BatchNormalization

from models import storage
from models.captioner.encoder import (
    PRETRAINING,
    EncoderSpec,
    ImageEncoder,
    preprocess,
    weights_fingerprint,
)
from models.captioner.manifest import ENCODER_WEIGHTS  # the name a bundle gives them too
from models.configs import PretrainConfig, SettingsError
from models.datasets.labels import Head
from models.training.callbacks import Progress, Seen, TimeBudget
from models.training.curve import plot_curve, read_history
from models.training.trainer import work_dir

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Examples:
    """Decoded images (uint8 [N, S, S, 3]) and their labels per head (int [N]; -1: none)."""

    images: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def masked_softmax_loss(labels, logits):
    """Mean sparse cross-entropy over the rows labelled for this head (label >= 0)."""
    labels = keras.ops.reshape(keras.ops.cast(labels, "int32"), (-1,))
    mask = keras.ops.cast(labels >= 0, "float32")
    losses = keras.losses.sparse_categorical_crossentropy(
        keras.ops.maximum(labels, 0), logits, from_logits=True
    )
    return keras.ops.sum(losses * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def classifier(encoder: ImageEncoder, heads: tuple[Head, ...]) -> keras.Model:
    """uint8 images -> {head: logits}: the encoder's backbone, average-pooled as the caption
    features are, then one dense softmax layer per head (in float32 whatever the policy)."""
    size = encoder.spec.image_size
    images = keras.Input((size, size, 3), dtype="uint8", name="images")
    grid = encoder.backbone(preprocess(images, encoder.spec.architecture))
    pooled = keras.ops.cast(keras.layers.GlobalAveragePooling2D()(grid), "float32")
    outputs = {
        head.name: keras.layers.Dense(len(head.classes), dtype="float32", name=head.name)(pooled)
        for head in heads
    }
    return keras.Model(images, outputs, name="pretraining_classifier")


def held_out_accuracy(model: keras.Model, heads, examples: Examples) -> dict[str, float]:
    """Accuracy per head group over the labelled rows of ``examples``, in inference mode."""
    predicted = model.predict(examples.images, batch_size=128, verbose=0)
    hits: dict[str, list[np.ndarray]] = {}
    for head in heads:
        labels = examples.labels[head.name]
        labelled = labels >= 0
        right = predicted[head.name].argmax(-1)[labelled] == labels[labelled]
        hits.setdefault(head.group, []).append(right)
    return {group: float(np.concatenate(parts).mean()) for group, parts in hits.items()}


def recalibrate_batchnorm(
    model: keras.Model, backbone: keras.Model, images: np.ndarray, *, batch_size: int
) -> None:
    """Sets the moving statistics of ``backbone``'s BatchNorm layers to those of the current
    weights, from forward passes of ``model`` (which holds it) in training mode over ``images``
    (momentum 0.8 for them: the last batches count). The moving averages of training lag
    weights that still move fast, and the features job runs the encoder in inference mode, on
    exactly those statistics."""
    layers = [layer for layer in backbone.layers if isinstance(layer, BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.8
    try:
        for start in range(0, len(images) - batch_size + 1, batch_size):
            model(images[start : start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


class HeldOut(keras.callbacks.Callback):
    """After each epoch: ``backbone``'s BatchNorm statistics recalibrated on ``calibration``
    images, then ``val_GROUP_accuracy`` for every head group and their mean
    (``val_mean_accuracy``, what picks the weights kept) added to the logs."""

    def __init__(
        self, heads, examples: Examples, backbone: keras.Model, calibration: np.ndarray, batch_size
    ):
        super().__init__()
        self.heads, self.examples, self.backbone = heads, examples, backbone
        self.calibration, self.batch_size = calibration, batch_size

    def on_epoch_end(self, epoch, logs=None):
        recalibrate_batchnorm(
            self.model, self.backbone, self.calibration, batch_size=self.batch_size
        )
        if len(self.examples):
            scores = held_out_accuracy(self.model, self.heads, self.examples)
            logs.update({f"val_{group}_accuracy": value for group, value in scores.items()})
            logs["val_mean_accuracy"] = float(np.mean(list(scores.values())))


class ImagesBudget(keras.callbacks.Callback):
    """Stops training once ``images`` have been seen (``Seen``'s count, resumed runs included)."""

    def __init__(self, images: int, seen: Seen):
        super().__init__()
        self.images, self.seen = images, seen

    def on_epoch_end(self, epoch, logs=None):
        if self.images and self.seen.seen >= self.images:
            self.model.stop_training = True


CALIBRATION_BATCHES = 30  # training batches that set the BatchNorm statistics after an epoch


def best_weights_kept() -> keras.callbacks.EarlyStopping:
    """Keeps the weights of the best ``val_mean_accuracy`` for the end of training (an early
    stop that never stops): inference-mode accuracy swings between evaluations while the
    weights still move fast."""
    return keras.callbacks.EarlyStopping(
        monitor="val_mean_accuracy", mode="max", patience=10**9, restore_best_weights=True
    )


def batches(examples: Examples, batch_size: int, seed: int):
    """Shuffled, repeated batches of (images, {head: labels}), as a tf.data pipeline."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((examples.images, examples.labels))
    data = data.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True).repeat()
    return data.batch(batch_size, drop_remainder=True).prefetch(2)


STAGE_UNITS = 256  # the ReLU layer between a stage's flattened grid and its heads


def stage_layer(backbone: keras.Model, name: str) -> keras.layers.Layer:
    """The backbone's layer ``name``; ``stem`` is InceptionV3's stem, its last max-pool before
    the first Inception block (7x7x192 at 75 px). SettingsError, in one line, for another."""
    names = [layer.name for layer in backbone.layers]
    if name == "stem" and "mixed0" in names:
        below = backbone.layers[: names.index("mixed0")]
        return [layer for layer in below if isinstance(layer, keras.layers.MaxPooling2D)][-1]
    if name in names:
        return backbone.get_layer(name)
    blocks = ", ".join(n for n in names if n.startswith("mixed") and "_" not in n)
    raise SettingsError(f"--stages: the encoder has no layer {name!r} (stem, {blocks})")


def grid_classifier(encoder: ImageEncoder, heads: tuple[Head, ...], layer: str) -> keras.Model:
    """uint8 images -> {head: logits} read from the flattened grid of the backbone's ``layer``
    through one ReLU layer: a stage that trains the layers below ``layer`` alone. Position
    survives the flattening, so they learn what the heads ask without carrying it through the
    blocks above (docs/training.md: shape at 75 px)."""
    size = encoder.spec.image_size
    backbone = encoder.backbone
    below = keras.Model(backbone.inputs, stage_layer(backbone, layer).output)
    images = keras.Input((size, size, 3), dtype="uint8", name="images")
    grid = below(preprocess(images, encoder.spec.architecture))
    hidden = keras.layers.Dense(STAGE_UNITS, activation="relu")(keras.layers.Flatten()(grid))
    outputs = {
        head.name: keras.layers.Dense(len(head.classes), dtype="float32", name=head.name)(hidden)
        for head in heads
    }
    return keras.Model(images, outputs, name=f"pretraining_stage_{layer}")


@dataclasses.dataclass
class Phase:
    """One fit of the pretraining: a stage's grid classifier or the whole encoder's."""

    name: str  # the stage's layer, or ENCODER
    model: keras.Model
    images: int  # this phase's images budget; 0: none
    work: Path  # its checkpoints and history
    keep_best: bool = False  # the whole encoder's: the best evaluation's weights are kept


ENCODER = "encoder"  # the last phase's name: the whole encoder, its pooled features
NOTHING_SEEN = {"images_seen": 0, "minutes": 0.0}  # the offset of the first phase


def fit_phase(
    phase: Phase, heads, train_examples: Examples, val_examples: Examples, backbone, config,
    *, offset: dict,
) -> tuple[list[dict], keras.callbacks.EarlyStopping | None]:  # fmt: skip
    """Fits ``phase.model`` for ``phase.images`` images after the ``offset`` (the images_seen
    and minutes of the phases before), resuming from its last checkpoint; its history rows
    (cumulative images_seen and minutes) and, for ``keep_best``, the keeper of the best."""
    phase.model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss={head.name: masked_softmax_loss for head in heads},
    )
    history_file, backup = phase.work / "history.csv", phase.work / "backup"
    if not backup.exists():
        history_file.unlink(missing_ok=True)  # rows of a run that never checkpointed
    last = read_history(history_file)
    resumed = last[-1] if last else offset
    if last:
        log.info("%s: resuming after %d images (%s)", phase.name, resumed["images_seen"], backup)
    steps = max(1, config.images_per_eval // config.batch_size)
    per_epoch = steps * config.batch_size
    seen = Seen(
        "images_seen",
        config.batch_size,
        per_epoch=per_epoch,
        seen=int(resumed["images_seen"]),
        minutes=resumed["minutes"],
    )
    calibration = train_examples.images[: CALIBRATION_BATCHES * config.batch_size]
    keeper = best_weights_kept() if phase.keep_best and len(val_examples) else None
    budget = offset["images_seen"] + phase.images if phase.images else 0
    callbacks = [
        HeldOut(heads, val_examples, backbone, calibration, config.batch_size),
        *([keeper] if keeper else []),
        seen,
        ImagesBudget(budget, seen),
        keras.callbacks.CSVLogger(str(history_file), append=True),
        keras.callbacks.BackupAndRestore(str(backup)),
        Progress(steps, config.batch_size, unit="images"),
        *(
            [TimeBudget(max(config.time_budget_minutes - seen.minutes, 0.0) * 60)]
            if config.time_budget_minutes
            else []
        ),
    ]
    phase.model.fit(
        batches(train_examples, config.batch_size, config.seed),
        epochs=math.ceil(phase.images / per_epoch) if phase.images else 10**6,
        steps_per_epoch=steps,
        callbacks=callbacks,
        shuffle=False,  # tf.data shuffles
        verbose=0,
    )
    return [{**row, "stage": phase.name} for row in read_history(history_file)], keeper


def run_stages(encoder, heads, train_examples, val_examples, config, work: Path) -> list[dict]:
    """The ``config.stage_list`` phases in turn, each resumed or skipped where a rerun finds it
    done (its backbone weights written); their history rows."""
    rows: list[dict] = []
    for layer, images in config.stage_list:
        offset = rows[-1] if rows else NOTHING_SEEN
        folder = work / f"stage-{layer}"
        done = folder / "backbone.weights.h5"
        if done.exists():
            encoder.backbone.load_weights(str(done))
            rows += [{**row, "stage": layer} for row in read_history(folder / "history.csv")]
            continue
        if config.time_budget_minutes and offset["minutes"] >= config.time_budget_minutes:
            log.info("stage %s skipped: the time budget is spent", layer)
            continue
        folder.mkdir(exist_ok=True)
        model = grid_classifier(encoder, heads, layer)
        grid = stage_layer(encoder.backbone, layer).output.shape[1:]
        log.info("stage %s: heads on its %s grid, %d images", layer, grid, images)
        phase = Phase(layer, model, images, folder)
        stage_rows, _ = fit_phase(
            phase, heads, train_examples, val_examples, encoder.backbone, config, offset=offset
        )
        encoder.backbone.save_weights(str(done))
        rows += stage_rows
    return rows


# Over 60 lines: the pretraining outline, build -> stages -> resume -> fit -> weights and
# report, read top to bottom like ``models.training.trainer.train``.
def pretrain(
    spec: EncoderSpec,
    heads: tuple[Head, ...],
    train_examples: Examples,
    val_examples: Examples,
    output: str,
    *,
    config: PretrainConfig,
    precision: str,
    dataset: dict,
    checkpoint_dir: str | None = None,
) -> dict:
    """Fits the stages' grid classifiers, then the whole encoder's classifier; writes
    ``output``/encoder.weights.h5, pretraining.json (the provenance), metrics.json and
    accuracy.png; returns pretraining.json's contents. ``dataset`` describes the labelled
    data for the provenance."""
    if len(train_examples) < config.batch_size:
        raise ValueError(
            f"{len(train_examples)} training images, fewer than one batch of {config.batch_size}"
        )
    keras.utils.set_random_seed(config.seed)
    encoder = ImageEncoder(spec, precision=precision)
    for layer, _ in config.stage_list:
        stage_layer(encoder.backbone, layer)  # a bad name fails before any training
    work = work_dir(output, checkpoint_dir)
    started = time.time()
    stage_rows = run_stages(encoder, heads, train_examples, val_examples, config, work)
    offset = stage_rows[-1] if stage_rows else NOTHING_SEEN
    whole = Phase(ENCODER, classifier(encoder, heads), config.images, work, keep_best=True)
    rows, keeper = fit_phase(
        whole, heads, train_examples, val_examples, encoder.backbone, config, offset=offset
    )
    fingerprint = weights_fingerprint(encoder.backbone)
    encoder.save_weights(storage.join(output, ENCODER_WEIGHTS))
    final = rows[-1] if rows else offset
    kept = final  # the weights written: the best held-out evaluation's of the whole encoder
    if keeper and keeper.best_weights is not None:
        kept = next(row for row in rows if row["epoch"] == keeper.best_epoch)
    history = [{**row, "epoch": index} for index, row in enumerate([*stage_rows, *rows])]
    provenance = {
        "weights_file": ENCODER_WEIGHTS,
        "fingerprint": fingerprint,
        "architecture": spec.architecture,
        "image_size": spec.image_size,
        "initial_weights": spec.weights,
        "dataset": dataset,
        "images_seen": int(final.get("images_seen", 0)),
        "minutes": final.get("minutes", 0.0),
        "kept_after_images": int(kept.get("images_seen", 0)),
        "held_out_accuracy": accuracies(kept),
        "stages": [
            {
                "layer": layer,
                "images_seen": int(last["images_seen"]),
                "held_out_accuracy": accuracies(last),
            }
            for layer, last in {row["stage"]: row for row in stage_rows}.items()
        ],
        "precision": precision,
        "config": dataclasses.asdict(config),
    }
    storage.write_text(storage.join(output, PRETRAINING), json.dumps(provenance, indent=2))
    _write_report(output, history, {**provenance, "seconds": round(time.time() - started, 1)})
    for folder in work.glob("stage-*"):  # now in metrics.json: a rerun starts afresh
        shutil.rmtree(folder)
    (work / "history.csv").unlink(missing_ok=True)
    if not any(work.iterdir()):
        work.rmdir()
    return provenance


def accuracies(row: dict) -> dict[str, float]:
    """{group: held-out accuracy} of a history row (its ``val_GROUP_accuracy`` keys)."""
    return {
        key[len("val_") : -len("_accuracy")]: round(value, 4)
        for key, value in row.items()
        if key.startswith("val_") and key.endswith("_accuracy") and key != "val_mean_accuracy"
    }


def _write_report(output: str, history: list[dict], metrics: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plot_curve(history, Path(tmp, "accuracy.png"), scores_title="held-out accuracy per head")
        data = Path(tmp, "accuracy.png").read_bytes()
    storage.write_bytes(storage.join(output, "accuracy.png"), data)
    storage.write_text(
        storage.join(output, "metrics.json"), json.dumps({**metrics, "history": history}, indent=2)
    )
