"""Phase-2 training throughput: images/s of JointCaptioner train steps (encoder + decoder,
one CNN pass per image for its 5 captions) per image size and precision, on this machine.

    python benchmarks/phase2_training.py --sizes 75 96 128 --precisions fp32 bf16 --steps 8

Synthetic uint8 pixels and token ids; the first two steps (tracing) are excluded.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from models.captioner.decoder import DecoderConfig, ShowAndTell  # noqa: E402
from models.captioner.encoder import EncoderSpec, ImageEncoder  # noqa: E402
from models.configs import PRECISIONS  # noqa: E402
from models.training.joint import JointCaptioner  # noqa: E402


def measure(size: int, precision: str, batch: int, steps: int, captions: int, length: int):
    encoder = ImageEncoder(EncoderSpec("random:0", size), precision=precision)
    decoder = ShowAndTell(DecoderConfig(40, embedding_dim=256, lstm_units=256))
    model = JointCaptioner(encoder, decoder, encoder_optimizer=keras.optimizers.Adam(1e-3))
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), np.uint8)
    tokens = rng.integers(1, 40, (batch, captions, length)).astype(np.int32)
    import tensorflow as tf

    data = tf.data.Dataset.from_tensors(((images, tokens), tokens[:, :, 1:])).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace
    started = time.time()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return batch * steps / (time.time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[75, 96, 128], help="image sizes in pixels"
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=PRECISIONS,
        help="encoder compute types to compare",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per training step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument("--captions", type=int, default=5, help="captions per image")
    parser.add_argument("--length", type=int, default=26, help="tokens per caption")
    args = parser.parse_args()
    print(f"{'size':>5} {'precision':>9} {'images/s':>9}")
    for size in args.sizes:
        for precision in args.precisions:
            rate = measure(size, precision, args.batch_size, args.steps, args.captions, args.length)
            print(f"{size:>5} {precision:>9} {rate:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
