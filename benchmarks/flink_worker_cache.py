"""Flink: one SDK worker per caption job (``--environment_cache_millis``) vs one per stage.

On one local cluster (cluster/local_flink.py, which loads Beam's runner classes from its lib/ so
that Beam honours the cache), the same caption job runs alternately without the flag (the
baseline: Beam releases the environment as each stage ends, and the next stage starts a new
Python worker that loads TensorFlow and the model again) and with it, ``--rounds`` times each, at
parallelism 1. Prints each run's seconds and SDK workers started, then the medians and the ratio
baseline / cached (> 1: the cache is faster). Needs `make flink-jars`.

    python benchmarks/flink_worker_cache.py [--images 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from caption_pipeline import make_bundle, make_images

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster import local_flink  # noqa: E402

CACHE = ["--environment_cache_millis", "10000"]


def workers_started(workdir: Path) -> int:
    return (workdir / "log" / "workerpool.log").read_text(errors="replace").count("Starting worker")


def caption_job(ports, images: Path, bundle: str, output: Path, extra: list[str]) -> float:
    command = [sys.executable, "-m", "pipeline.cli", "caption", "--input", str(images)]
    command += ["--model", bundle, "--output", str(output), "--runner", "FlinkRunner"]
    command += ["--job_endpoint", f"localhost:{ports.job}", "--environment_type", "EXTERNAL"]
    command += ["--environment_config", f"localhost:{ports.pool}", "--parallelism", "1", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"FAIL: the caption job exited {result.returncode}: {result.stderr[-2000:]}"
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="images per job (default: 16)")
    parser.add_argument("--rounds", type=int, default=2, help="jobs per setting (default: 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="beamcap-flink-bench-") as tmp:
        work = Path(tmp)
        make_images(work / "images", args.images, 96)
        bundle = make_bundle(work / "bundle", 75)
        ports = local_flink.up(work / "cluster", local_flink.free_ports())
        runs = {"baseline": [], "cached": []}
        try:
            for round_ in range(args.rounds):
                for name, extra in (("baseline", []), ("cached", CACHE)):
                    before = workers_started(work / "cluster")
                    output = work / f"out-{name}-{round_}"
                    seconds = caption_job(ports, work / "images", bundle, output, extra)
                    workers = workers_started(work / "cluster") - before
                    runs[name].append(seconds)
                    print(f"{name:8s} round {round_}: {seconds:5.1f} s, {workers} SDK workers")
        finally:
            local_flink.down(work / "cluster")
    baseline, cached = (statistics.median(runs[name]) for name in ("baseline", "cached"))
    print(f"median seconds per job: baseline {baseline:.1f}, cached {cached:.1f}")
    print(f"ratio baseline / cached: {baseline / cached:.2f}")


if __name__ == "__main__":
    main()
