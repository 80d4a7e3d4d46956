"""Is shape in the demo's 75 px scenes learnable, and by which encoder? The same labelled
images, the same images budget, two backbones trained from scratch as multi-head classifiers:

  inception  the bundle's encoder (Keras InceptionV3 at 75 px, average-pooled), as
             ``beamcap pretrain`` trains and evaluates it (``models.training.pretrain``: its
             classifier, and BatchNorm recalibrated on 30 training batches before each
             evaluation);
  small      eight 3x3 convolutions in four stages of two (32, 64, 128, 128 filters), each
             stage ending in a 2x2 max-pool, flattened into a 256-unit layer: a probe of the
             data, not an encoder beamcap can ship (the design card's encoder is InceptionV3).

Both train on the per-column colour and shape heads of a ``beamcap synth`` dataset (split as
the demo's ``features`` splits it), with Adam at 1e-3, batch 32, masked cross-entropy, at
``--precision``; held-out accuracy per head group is printed after every ``--images-per-eval``
images.

    python benchmarks/shape_learning.py [--data data/demo/synth] [--images 16000]
        [--images-per-eval 5333] [--precision bf16] [--models small inception]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from benchmarks.cpu import machine  # noqa: E402
from models.backend import load_keras  # noqa: E402


def small_cnn(heads, size: int):
    import keras

    images = keras.Input((size, size, 3), dtype="uint8", name="images")
    x = keras.ops.cast(images, "float32") / 127.5 - 1
    for filters in (32, 64, 128, 128):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dense(256, activation="relu")(keras.layers.Flatten()(x))
    outputs = {
        head.name: keras.layers.Dense(len(head.classes), dtype="float32", name=head.name)(x)
        for head in heads
    }
    return keras.Model(images, outputs), None


def inception(heads, size: int):
    from models.captioner.encoder import EncoderSpec, ImageEncoder
    from models.training.pretrain import classifier

    encoder = ImageEncoder(EncoderSpec("random:0", size))
    return classifier(encoder, heads), encoder.backbone


def inception_tapped(heads, size: int, tap: str, weight: float):
    """``inception`` plus an auxiliary copy of every head on the flattened grid of layer
    ``tap`` (deep supervision, as InceptionV3's own auxiliary classifier): position survives
    the flattening, so the layers below the tap are taught shape without having to carry it
    through the 1x1 pool of the last block."""
    import keras

    from models.captioner.encoder import EncoderSpec, ImageEncoder, preprocess

    encoder = ImageEncoder(EncoderSpec("random:0", size))
    backbone = encoder.backbone
    tapped = keras.Model(backbone.inputs, [backbone.get_layer(tap).output, backbone.output])
    images = keras.Input((size, size, 3), dtype="uint8", name="images")
    middle, grid = tapped(preprocess(images, encoder.spec.architecture))
    pooled = keras.ops.cast(keras.layers.GlobalAveragePooling2D()(grid), "float32")
    flat = keras.ops.cast(keras.layers.Flatten()(middle), "float32")
    outputs = {}
    for head in heads:
        outputs[head.name] = keras.layers.Dense(len(head.classes), dtype="float32")(pooled)
        outputs[f"aux_{head.name}"] = keras.layers.Dense(len(head.classes), dtype="float32")(flat)
    weights = {name: (weight if name.startswith("aux_") else 1.0) for name in outputs}
    return keras.Model(images, outputs), backbone, weights


def with_auxiliary(examples):
    """The examples with each head's labels also under its auxiliary head's name."""
    from models.training.pretrain import Examples

    auxiliary = {f"aux_{name}": labels for name, labels in examples.labels.items()}
    return Examples(examples.images, {**examples.labels, **auxiliary})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/demo/synth", help="a beamcap synth dataset")
    parser.add_argument("--image-size", type=int, default=75, help="as the demo's encoder")
    parser.add_argument("--images", type=int, default=16000, help="training images per model")
    parser.add_argument("--images-per-eval", type=int, default=5333, help="between evaluations")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["small", "inception"],
        help="small, inception, or inception@LAYER:WEIGHT (auxiliary heads on LAYER's grid)",
    )
    args = parser.parse_args()
    print(f"{machine()}; {datetime.date.today()}")
    load_keras()
    import keras

    from models.datasets.labels import labelled
    from models.training.pretrain import (
        Examples,
        batches,
        held_out_accuracy,
        masked_softmax_loss,
        recalibrate_batchnorm,
    )
    from pipeline.pretrain import PretrainSettings, examples_of, split_uris

    settings = PretrainSettings(
        data=args.data,
        output="-",
        image_size=args.image_size,
        val_fraction=0.05,
        test_fraction=0.05,
    )  # the demo's split
    labels = labelled(args.data)
    splits = split_uris(labels, settings)
    train, _ = examples_of(labels, splits["train"], settings, None)
    held_out, _ = examples_of(labels, splits["val"], settings, None)
    heads = [head for head in labels.heads if head.group in ("colour", "shape")]
    train = Examples(train.images, {head.name: train.labels[head.name] for head in heads})
    print(f"{len(train)} training and {len(held_out)} held-out scenes, {args.precision}")
    if args.precision == "bf16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    builders = {"small": small_cnn, "inception": inception}
    steps = max(1, args.images_per_eval // 32)
    for name in args.models:
        keras.utils.set_random_seed(0)
        if "@" in name:
            tap, weight = name.split("@")[1].split(":")
            model, backbone, loss_weights = inception_tapped(
                heads, args.image_size, tap, float(weight)
            )
        else:
            model, backbone = builders[name](heads, args.image_size)
            loss_weights = None
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss={output: masked_softmax_loss for output in loss_weights}
            if loss_weights
            else {head.name: masked_softmax_loss for head in heads},
            loss_weights=loss_weights,
        )
        started = time.time()

        def report(epoch, logs, name=name, model=model, backbone=backbone, started=started):
            if backbone is not None:  # as beamcap pretrain evaluates
                recalibrate_batchnorm(model, backbone, train.images[:960], batch_size=32)
            scores = held_out_accuracy(model, heads, held_out)
            print(
                f"{name:9s} {(epoch + 1) * steps * 32:6d} images {time.time() - started:5.0f} s  "
                + "  ".join(f"{group} {value:.2f}" for group, value in sorted(scores.items())),
                flush=True,
            )

        model.fit(
            batches(with_auxiliary(train) if loss_weights else train, 32, seed=0),
            epochs=max(1, args.images // (steps * 32)),
            steps_per_epoch=steps,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=report)],
            verbose=0,
        )


if __name__ == "__main__":
    main()
