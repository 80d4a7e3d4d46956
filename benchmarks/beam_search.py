"""Batched beam search vs the im2txt way (one image at a time, its beams batched).

Both run the same Show-and-Tell decoder (random weights, vocabulary 10,000, LSTM 512) through the
same ``beam_search`` function; the baseline calls it once per image. Both must return identical
N-best lists. Prints captions/s of each and the ratio (target >= 4, goal 10).

    python benchmarks/beam_search.py [--images 128] [--batch-size 64] [--beam-size 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import models  # noqa: F401 - before Keras: it quiets TensorFlow's C++ start-up logs

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402

from models.captioner.beam_search import beam_search  # noqa: E402
from models.captioner.decoder import DecoderConfig, DecoderStepper, ShowAndTell  # noqa: E402


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def check_same(batched, per_image) -> None:
    """Same tokens in the same order; log-probs equal up to float32 matmul rounding."""
    for image, (ours, theirs) in enumerate(zip(batched, per_image, strict=True)):
        if [h.tokens for h in ours] != [h.tokens for h in theirs]:
            raise SystemExit(f"FAIL: image {image}: batched and per-image N-best differ")
        np.testing.assert_allclose(
            [h.log_prob for h in ours], [h.log_prob for h in theirs], rtol=1e-5
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="captions to produce per mode")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batched search")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--vocab-size", type=int, default=10_000)
    parser.add_argument("--lstm-units", type=int, default=512)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    decoder = ShowAndTell(
        DecoderConfig(args.vocab_size, embedding_dim=args.lstm_units, lstm_units=args.lstm_units)
    )
    features = np.random.default_rng(0).normal(0, 1, (args.images, 2048)).astype("float32")
    search = dict(beam_size=args.beam_size, max_length=args.max_length)
    batched = DecoderStepper(decoder, start_id=1, end_id=2)
    per_image = DecoderStepper(decoder, start_id=1, end_id=2, row_multiple=1)  # no padding

    def run_batched():
        out = []
        for start in range(0, args.images, args.batch_size):
            out += beam_search(batched, features[start : start + args.batch_size], **search)
        return out

    def run_per_image():
        return [
            beam_search(per_image, features[i : i + 1], **search)[0] for i in range(args.images)
        ]

    # Warm-up: compile every shape both modes will see.
    beam_search(batched, features[: args.batch_size], **search)
    beam_search(per_image, features[:2], **search)
    beam_search(per_image, features[:1], **search)

    per_image_result, per_image_seconds = timed(run_per_image)
    batched_result, batched_seconds = timed(run_batched)
    check_same(batched_result, per_image_result)

    per_image_rate = args.images / per_image_seconds
    batched_rate = args.images / batched_seconds
    print(
        f"machine      {platform.machine()}, {os.cpu_count()} cores, keras "
        f"{keras.__version__} on {keras.backend.backend()}"
    )
    print(
        f"setup        vocab {args.vocab_size}, LSTM {args.lstm_units}, beam {args.beam_size}, "
        f"max length {args.max_length}, batch {args.batch_size}, {args.images} images"
    )
    print(f"per-image    {per_image_rate:8.1f} captions/s")
    print(f"batched      {batched_rate:8.1f} captions/s")
    print(
        f"ratio        {batched_rate / per_image_rate:8.2f}x  (target >= 4, goal 10; "
        "identical N-best checked)"
    )


if __name__ == "__main__":
    main()
