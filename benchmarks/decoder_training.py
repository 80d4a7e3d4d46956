"""Phase 1's training speed (the decoder on cached features): Keras' default against XLA.

On a CPU-only machine Keras compiles ``fit`` without XLA ("auto"); the LSTM then runs as a
TensorFlow loop of small ops, one step at a time. This trains the same Show-and-Tell decoder
(256 units, batch 64 unless told: the demo's sizes before 2026-12-07) on the same batches of a
features folder in three ways and prints captions/s and the ratio to the default: the default,
XLA on batches padded to their longest caption (one compilation per length met), and XLA on
batches padded to one length (one compilation).

    python benchmarks/decoder_training.py --data data/demo/features [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, without PYTHONPATH

import models  # noqa: E402, F401 - before Keras: it quiets TensorFlow's C++ start-up logs

# isort: split
import keras  # noqa: E402

from benchmarks.cpu import machine  # noqa: E402
from models.captioner.decoder import DecoderConfig, ShowAndTell, masked_cross_entropy  # noqa: E402
from models.training.inputs import caption_pairs, shards  # noqa: E402


def batches(data: Path, dim: int, batch_size: int, length: int | None):
    """The trainer's batches, or with ``length`` every one padded to that many tokens."""
    import tensorflow as tf

    counts = json.loads((data / "dataset.json").read_text())["counts"]
    pairs = caption_pairs(
        shards(str(data), "train"),
        dim,
        captions=counts["train_captions"],
        batch_size=batch_size,
        shuffle_buffer=10_000,
    ).repeat()
    if not length:
        return pairs

    def pad(inputs, targets):
        (features, tokens), wider = inputs, [[0, 0], [0, length - tf.shape(inputs[1])[1]]]
        return (features, tf.pad(tokens, wider)), tf.pad(targets, wider)

    return pairs.map(pad)


def captions_per_second(model, data, warm_up: int, steps: int, batch_size: int):
    """(seconds of the first ``warm_up`` steps, captions/s over the next ``steps``)."""
    iterator = iter(data)
    started = time.perf_counter()
    for _ in range(warm_up):
        model.train_on_batch(*next(iterator))
    warmed = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*next(iterator))
    return warmed - started, steps * batch_size / (time.perf_counter() - warmed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a `beamcap features` folder")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per way")
    parser.add_argument("--warm-up", type=int, default=40, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=256, help="embedding and LSTM width")
    parser.add_argument("--length", type=int, default=32, help="tokens in a fixed-length batch")
    args = parser.parse_args()
    print(machine())
    dataset = json.loads((args.data / "dataset.json").read_text())
    width = dataset["encoder"]["feature_dim"]
    config = DecoderConfig(dataset["vocabulary"]["size"], args.units, args.units, feature_dim=width)
    ways = {
        "Keras default (no XLA on CPU)": ("auto", None),
        "XLA, padded to the longest": (True, None),
        f"XLA, padded to {args.length}": (True, args.length),
    }
    baseline = None
    for name, (jit, length) in ways.items():
        keras.utils.set_random_seed(0)
        model = ShowAndTell(config).training_model
        model.compile(
            keras.optimizers.Adam(2e-3, clipnorm=5.0), masked_cross_entropy, jit_compile=jit
        )
        data = batches(args.data, config.feature_dim, args.batch_size, length)
        warm, speed = captions_per_second(model, data, args.warm_up, args.steps, args.batch_size)
        baseline = baseline or speed
        ratio, first = speed / baseline, f"first {args.warm_up} steps {warm:5.1f} s"
        print(f"{name:34} {speed:7.0f} captions/s  {ratio:4.2f}x  ({first})")


if __name__ == "__main__":
    main()
