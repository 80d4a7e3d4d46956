"""The caption job over WebDataset tar shards against the same images as loose files (issue
#40): images/s of each, and their ratio, measured in one process (run it on a quiet machine).

The images are the synthetic scenes (distinct JPEGs), written once as ``--shards`` tar shards
(``NNNNN.tar``, each sample a ``.jpg`` and a ``.txt`` as img2dataset writes them) and once as
loose files; each set is captioned by ``beamcap caption`` in this process on the DirectRunner
(the in-process FnApiRunner offline) with a random InceptionV3 at ``--image-size`` and the demo's
decoder, the shards through WebDataset's brace notation. A first, untimed run over a few loose
images warms the model's compiled graphs.

    python benchmarks/shard_job.py                       # 2,000 images in 100 shards
    python benchmarks/shard_job.py --images 10000 --shards 100
"""

from __future__ import annotations

import argparse
import datetime
import io
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, without PYTHONPATH

import models  # noqa: E402, F401 - before Keras: it quiets TensorFlow's C++ start-up logs

# isort: split
from benchmarks.caption_pipeline import make_bundle  # noqa: E402
from benchmarks.content_identity import caption, write_images  # noqa: E402
from benchmarks.cpu import machine  # noqa: E402


def write_shards(loose: Path, folder: Path, shards: int) -> str:
    """The images in ``loose`` as ``shards`` tar shards in ``folder``, dealt out in turn; the
    shards' brace pattern."""
    folder.mkdir(parents=True)
    names = sorted(loose.iterdir())
    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for path in names[shard::shards]:
                for suffix, data in ((".jpg", path.read_bytes()), (".txt", b"a caption")):
                    info = tarfile.TarInfo(path.stem + suffix)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="distinct images")
    parser.add_argument("--shards", type=int, default=100, help="tar shards they are dealt into")
    parser.add_argument("--image-size", type=int, default=96, help="the encoder's input size")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print(f"{machine()}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"{args.images:,} images, {args.shards} shards, InceptionV3 (random) {args.image_size} px"
    )
    work = Path(tempfile.mkdtemp(prefix="shard-job-"))
    try:
        bundle = make_bundle(work / "bundle", args.image_size)
        write_images(work / "warm", 64, seed=9)
        caption(work / "warm", bundle, work / "out-warm", args.batch_size)
        loose = work / "loose"
        write_images(loose, args.images, seed=1)
        pattern = write_shards(loose, work / "shards", args.shards)
        rates = {}
        for name, source in (("loose files", loose), ("tar shards", pattern)):
            seconds, counts = caption(source, bundle, work / f"out-{name}", args.batch_size)
            assert counts["captioned"] == args.images, counts
            rates[name] = args.images / seconds
            print(f"{name:<12} {seconds:6.1f} s  {rates[name]:6.1f} images/s  {counts}")
        print(f"shards / loose files: {rates['tar shards'] / rates['loose files']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
