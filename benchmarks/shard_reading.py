"""Reading tar shards: Python's ``tarfile`` in stream mode over Beam's ``FileSystems`` (beamcap's
``transforms.shards.read_members``) against WebDataset's own reader (``tar_file_iterator``,
over the same stream), both against a baseline measured in the same run: the shard's bytes read
through ``FileSystems`` in 1 MiB chunks, no tar parsing (the I/O floor).

Shards as img2dataset writes them: per sample a ``.jpg`` (random bytes of a 256 px photo's
size), a ``.txt`` and a ``.json``. Prints members/s and MB/s of each, and the ratio to the
baseline; best of ``--repeats``. For scale, the last line is what comes after the read: the
decode stage (``decode_image`` to 299 px) of a real 256 px JPEG, images/s on one thread.
WebDataset is not one of beamcap's dependencies: install it beside
(``pip install --target DIR webdataset==1.0.2 braceexpand==0.1.7``, then ``PYTHONPATH=DIR``)
to measure it; without it, its line is left out.

    python benchmarks/shard_reading.py [--shards 4] [--samples 2000] [--image-kib 24]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.cpu import machine  # noqa: E402
from transforms.decode import decode_image  # noqa: E402
from transforms.shards import is_image_member, read_members  # noqa: E402


def write_shards(folder: str, shards: int, samples: int, image_bytes: int) -> list[str]:
    paths = []
    for shard in range(shards):
        path = os.path.join(folder, f"{shard:05d}.tar")
        with tarfile.open(path, "w") as tar:
            for sample in range(samples):
                key = f"{shard:05d}{sample:04d}"
                members = {
                    f"{key}.jpg": os.urandom(image_bytes),
                    f"{key}.txt": b"a photo of something, as its alt text says",
                    f"{key}.json": b'{"url": "https://example.com/x.jpg", "width": 256}',
                }
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def raw_bytes(path: str):
    """The baseline: the shard's bytes, no parsing; one 'member' per MiB."""
    with FileSystems.open(path) as handle:
        while chunk := handle.read(1 << 20):
            yield "", chunk


def beamcap_members(path: str):
    with FileSystems.open(path) as handle:
        yield from read_members(handle)


def webdataset_members(path: str):
    from webdataset.tariterators import tar_file_iterator

    with FileSystems.open(path) as handle:
        for member in tar_file_iterator(handle):
            if is_image_member(member["fname"]):
                yield member["fname"], member["data"]


def measure(reader, paths: list[str], repeats: int) -> tuple[float, int, int]:
    """(best seconds, members, bytes) of reading every shard with ``reader``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        members = size = 0
        for path in paths:
            for _, data in reader(path):
                members += 1
                size += len(data)
        best = min(best, time.perf_counter() - start)
    return best, members, size


def decode_rate(seconds: float = 2.0) -> float:
    """Images/s of ``decode_image`` on a 256 px JPEG of noise over a gradient."""
    rng = np.random.default_rng(0)
    pixels = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3) + rng.normal(
        0, 20, (256, 256, 3)
    )
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    data, done, start = buffer.getvalue(), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        decode_image(data, 299)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2000, help="samples per shard")
    parser.add_argument("--image-kib", type=int, default=24, help="each image member's size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {machine()}")
    readers = {"FileSystems bytes (baseline)": raw_bytes, "tarfile (beamcap)": beamcap_members}
    try:
        import webdataset

        readers[f"webdataset {webdataset.__version__}"] = webdataset_members
    except ImportError:
        print("webdataset is not installed: its line is left out (see the docstring)")
    with tempfile.TemporaryDirectory() as folder:
        paths = write_shards(folder, args.shards, args.samples, args.image_kib * 1024)
        total = sum(os.path.getsize(p) for p in paths) / 1e6
        print(f"{args.shards} shards, {args.samples} samples each, {total:.0f} MB (page cache)")
        baseline = None
        for name, reader in readers.items():
            seconds, members, size = measure(reader, paths, args.repeats)
            baseline = baseline or seconds
            rate = f"{members / seconds:,.0f} members/s, " if reader is not raw_bytes else ""
            print(
                f"{name:30s} {rate}{total / seconds:,.0f} MB/s, "
                f"{baseline / seconds:.2f}x the baseline's speed"
            )
    print(f"{'decode_image, 256 px JPEG':30s} {decode_rate():,.0f} images/s (one thread)")


if __name__ == "__main__":
    main()
