"""GPU figures on Keras' JAX backend (what the `device` tool's machines have; no TensorFlow).

Measures, at 299 px and the given precision: (1) the encoder alone on arrays already on the
host, batched; (2) the caption stage as the job's DoFn runs it: JPEG decode + encode + batched
beam search over a 512-unit decoder, in one process. Prints images/s of each and their ratio.

    KERAS_BACKEND=jax python benchmarks/gpu_encoder.py --images 4096 --batch-size 512
    KERAS_BACKEND=jax python benchmarks/gpu_encoder.py --images 8 --batch-size 4 --image-size 75
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from models.captioner.beam_search import beam_search  # noqa: E402
from models.captioner.decoder import DecoderConfig, DecoderStepper, ShowAndTell  # noqa: E402
from models.captioner.encoder import EncoderSpec, ImageEncoder  # noqa: E402
from models.datasets.synthetic import SynthConfig, make_example  # noqa: E402
from transforms.decode import decode_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    args = parser.parse_args()
    size = args.image_size
    encoder = ImageEncoder(
        EncoderSpec("random:0", size), precision=args.precision, batch_size=args.batch_size
    )
    decoder = ShowAndTell(DecoderConfig(64, embedding_dim=512, lstm_units=512))
    stepper = DecoderStepper(decoder, start_id=1, end_id=2)
    config = SynthConfig(seed=0, min_size=(size, size), max_size=(size, size))
    jpegs = [make_example(config, i % 256)[2] for i in range(args.images)]
    pixels = np.stack([decode_image(j, size)[0] for j in jpegs[: args.batch_size]])

    encoder.encode(pixels)  # compile
    started = time.perf_counter()
    for _ in range(0, args.images, args.batch_size):
        encoder.encode(pixels)
    encode_rate = args.images / (time.perf_counter() - started)

    def stage(batch):
        decoded = np.stack([decode_image(j, size)[0] for j in batch])
        return beam_search(stepper, encoder.encode(decoded), beam_size=3, max_length=20)

    stage(jpegs[: args.batch_size])  # compile
    started = time.perf_counter()
    for start in range(0, args.images, args.batch_size):
        stage(jpegs[start : start + args.batch_size])
    stage_rate = args.images / (time.perf_counter() - started)
    print(
        f"keras {keras.__version__} on {keras.backend.backend()}, {args.precision}, "
        f"{size}px, batch {args.batch_size}, {args.images} images"
    )
    print(f"encoder alone            {encode_rate:10.1f} images/s")
    print(f"decode+encode+beam       {stage_rate:10.1f} images/s")
    print(f"ratio                    {stage_rate / encode_rate:10.2f}")


if __name__ == "__main__":
    main()
