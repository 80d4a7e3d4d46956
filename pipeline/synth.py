"""``beamcap synth``: generate beamcap's own captioned dataset (see ``models.datasets.synthetic``).

beamcap synth --output data/synth --images 1000 --seed 0
beamcap synth --output data/tiny --images 20 --size 96x96
"""

from __future__ import annotations

import dataclasses
import sys
import time

from models.configs import SettingsError, setting
from models.datasets.synthetic import SynthConfig, generate
from pipeline.settings import parse_job

MIN_SIDE = 32


@dataclasses.dataclass(frozen=True)
class SynthSettings:
    output: str = setting(None, "dataset directory to create", type=str, required=True)
    images: int = setting(1000, "number of images", minimum=1)
    seed: int = setting(0, "the same seed gives the same dataset")
    size: str = setting(
        None,
        "fixed image size WxH (default: random sizes from 320x240 to 640x480, like photos)",
        type=str,
    )
    processes: int = setting(
        None, "worker processes for drawing (default: one per core)", type=int, minimum=1
    )

    def check(self) -> None:
        parse_size(self.size)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """--size WxH as (width, height); None for random sizes."""
    if text is None:
        return None
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SettingsError(f"--size: expected WxH, e.g. 480x360; got {text!r}") from None
    if width < MIN_SIDE or height < MIN_SIDE:
        raise SettingsError(f"--size: images must be at least {MIN_SIDE}x{MIN_SIDE}")
    return width, height


def main(argv: list[str] | None = None) -> int:
    settings = parse_job(
        SynthSettings,
        sys.argv[1:] if argv is None else argv,
        prog="beamcap synth",
        description=__doc__,
        section="synth",
        beam=False,
    ).settings
    size = parse_size(settings.size)
    bounds = {"min_size": size, "max_size": size} if size else {}
    config = SynthConfig(images=settings.images, seed=settings.seed, **bounds)
    started = time.time()
    result = generate(config, settings.output, processes=settings.processes)
    seconds = time.time() - started
    print(
        f"wrote {result['images']} images and {result['captions']} captions to "
        f"{result['output']} in {seconds:.1f}s ({result['images'] / seconds:.0f} images/s)"
    )
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["synth", *sys.argv[1:]]))
