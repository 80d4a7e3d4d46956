"""Content identity (issue #40): what duplicates and renames cost the caption job, each figure
against a baseline measured in the same process (machines are noisy; run it on a quiet one).

Rows: (1) a folder whose second half is byte-for-byte copies of its first half, against a
folder of as many distinct images: each content is decoded and captioned once, so the ratio
tends to one half plus the fixed cost; (2) an ``--only-new`` tick after renaming a tenth of
the done images (the issue's 1,000 of 10,000), against a tick with nothing new and a tick with
as many new distinct images: nothing is captioned, the renamed files are read and hashed;
(3) what the known contents cost a tick: 10 new images among ``--done`` rows of earlier runs
(written here as a committed run's Parquet, every row with a content hash) against 100 such
rows, each with ``--reuse-captions`` on and off: the tick should scale with what is new, not
with what is done.

Each run is ``beamcap caption --only-new`` in this process on the DirectRunner (the in-process
FnApiRunner offline), over a random InceptionV3 at ``--image-size`` with the demo's decoder
(no download).

    python benchmarks/content_identity.py                  # 1,000 images: a few minutes
    python benchmarks/content_identity.py --images 10000   # the issue's size
    python benchmarks/content_identity.py --images 0 --done 8000   # row (3) alone
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, without PYTHONPATH

import models  # noqa: E402, F401 - before Keras: it quiets TensorFlow's C++ start-up logs

# isort: split
from benchmarks.caption_pipeline import make_bundle  # noqa: E402
from benchmarks.cpu import machine  # noqa: E402
from models.datasets.synthetic import SynthConfig, make_example  # noqa: E402


def write_images(folder: Path, count: int, *, seed: int, start: int = 0) -> list[bytes]:
    """``count`` distinct synthetic JPEGs, ``imgNNNNN.jpg`` from ``start``; their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(start, start + count):
        data = make_example(SynthConfig(seed=seed), index)[2]
        (folder / f"img{index:05d}.jpg").write_bytes(data)
        made.append(data)
    return made


def write_done_run(output: Path, bundle: str, rows: int) -> None:
    """A committed run under ``output`` whose captions are ``rows`` images that are not
    there, each with its own content hash, by the bundle's model."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.captioner.manifest import Manifest
    from pipeline.lifecycle import RunLifecycle
    from pipeline.output_root import SUMMARY, OutputRoot
    from transforms.caption_schema import CAPTIONS_SCHEMA, conform

    model_id = Manifest.read(bundle).model_id
    run = OutputRoot(str(output)).run("20200101T000000Z-done")
    Path(run.path).mkdir(parents=True)
    table = pa.Table.from_pylist(
        [
            {
                "image_uri": f"/gone/img{index:06d}.jpg",
                "image_identity": f"1000:{index}",
                "content_hash": f"crc32c:{index:08x}:1000",
                "caption": "a caption",
                "model_id": model_id,
                "run_id": "20200101T000000Z-done",
            }
            for index in range(rows)
        ]
    )
    pq.write_table(conform(table, CAPTIONS_SCHEMA), run.file("captions-00000-of-00001.parquet"))
    RunLifecycle(run).commit(SUMMARY, lambda: {"run_id": "20200101T000000Z-done"})


def tick_against_done(work: Path, bundle: str, done: int, batch_size: int) -> None:
    """Row (3): 10 new images among ``done`` rows and among 100, reuse on and off."""
    images = work / "ten-new"
    write_images(images, 10, seed=4)
    seconds = {}
    for rows in (100, done):
        for reuse in ("true", "false"):
            output = work / f"done-{rows}-{reuse}"
            write_done_run(output, bundle, rows)
            flag = f"--reuse-captions={reuse}"
            seconds[rows, reuse], counts = caption(images, bundle, output, batch_size, flag)
            assert counts["captioned"] == 10, counts
    for reuse in ("true", "false"):
        few, many = seconds[100, reuse], seconds[done, reuse]
        print(
            f"(3) 10 new among 100 done: {few:.1f} s, among {done:,}: {many:.1f} s "
            f"({many / few:.2f}), --reuse-captions={reuse}"
        )


def caption(
    images: Path, bundle: str, output: Path, batch_size: int, *extra: str
) -> tuple[float, dict]:
    """Seconds and counts of one ``--only-new`` run over ``images``."""
    from pipeline.caption import run

    flags = ["--input", str(images), "--model", bundle, "--output", str(output), "--only-new"]
    flags += list(extra)
    flags += ["--batch-size", str(batch_size), "--quiet", "--runner", "DirectRunner"]
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        summary = run(flags)
    counts = summary["counts"]
    shown = ("matched", "skipped_as_done", "captioned", "reused")
    return time.perf_counter() - started, {key: counts[key] for key in shown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images per folder (even)")
    parser.add_argument("--image-size", type=int, default=299, help="the encoder's input size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--done", type=int, default=8000, help="done rows for row (3)")
    args = parser.parse_args(argv)
    print(f"{machine()}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"{args.images:,} images per folder, InceptionV3 (random) at {args.image_size} px")
    work = Path(tempfile.mkdtemp(prefix="content-identity-"))
    try:
        bundle = make_bundle(work / "bundle", args.image_size)
        if args.images:
            duplicates_and_renames(work, bundle, args)
        tick_against_done(work, bundle, args.done, args.batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def duplicates_and_renames(work: Path, bundle: str, args) -> None:
    """Rows (1) and (2)."""
    half, tenth = args.images // 2, args.images // 10
    distinct, halves = work / "distinct", work / "halves"
    write_images(distinct, args.images, seed=1)
    for index, data in enumerate(write_images(halves, half, seed=2)):
        (halves / f"img{half + index:05d}.jpg").write_bytes(data)  # a copy under a new name

    seconds, counts = caption(distinct, bundle, work / "out-distinct", args.batch_size)
    print(f"(1) {args.images:,} distinct images: {seconds:.1f} s, {counts}")
    dup_seconds, counts = caption(halves, bundle, work / "out-halves", args.batch_size)
    print(f"    half of them copies: {dup_seconds:.1f} s, {counts}")
    print(f"    copies / distinct: {dup_seconds / seconds:.2f}")

    noop, counts = caption(halves, bundle, work / "out-halves", args.batch_size)
    print(f"(2) a tick with nothing new: {noop:.1f} s, {counts}")
    for index in range(tenth):  # originals and copies alike
        path = halves / f"img{index * 10:05d}.jpg"
        path.rename(halves / f"renamed-{index:05d}.jpg")
    renamed, counts = caption(halves, bundle, work / "out-halves", args.batch_size)
    print(f"    after renaming {tenth:,}: {renamed:.1f} s, {counts}")
    assert counts["captioned"] == 0 and counts["reused"] == tenth, counts
    write_images(distinct, tenth, seed=3, start=args.images)
    new, counts = caption(distinct, bundle, work / "out-distinct", args.batch_size)
    print(f"    a tick with {tenth:,} new distinct images: {new:.1f} s, {counts}")
    print(f"    renamed / nothing new: {renamed / noop:.2f}; renamed / new: {renamed / new:.2f}")


if __name__ == "__main__":
    sys.exit(main())
