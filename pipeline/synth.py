"""``beamcap synth``: generate beamcap's own captioned dataset (see ``models.datasets.synthetic``).

beamcap synth --output data/synth --images 1000 --seed 0
beamcap synth --output data/tiny --images 20 --size 96x96
"""

from __future__ import annotations

import argparse
import sys
import time

from models.datasets.synthetic import SynthConfig, generate
from pipeline.settings import Parser


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 480x360; got {text!r}") from None
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError("images must be at least 32x32")
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = Parser("beamcap synth", __doc__)
    parser.add_argument("--output", required=True, help="dataset directory to create")
    parser.add_argument(
        "--images", type=int, default=1000, help="number of images (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the same seed gives the same dataset (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="fixed image size WxH (default: random sizes from 320x240 to 640x480, like photos)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="worker processes for drawing (default: one per core)",
    )
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    config = SynthConfig(images=args.images, seed=args.seed)
    if args.size:
        config = SynthConfig(
            images=args.images, seed=args.seed, min_size=args.size, max_size=args.size
        )
    started = time.time()
    result = generate(config, args.output, processes=args.processes)
    seconds = time.time() - started
    print(
        f"wrote {result['images']} images and {result['captions']} captions to "
        f"{result['output']} in {seconds:.1f}s ({result['images'] / seconds:.0f} images/s)"
    )
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["synth", *sys.argv[1:]]))
