"""What the fault tests share: finding the moment a caption job is mid-run on Flink, and
asserting the outcome through the files a user reads."""

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import ROOT


def caption_argv(images, bundle, output) -> list:
    """`beamcap caption --only-new` over ``images`` into ``output``: what the fault tests run."""
    return ["caption", "--input", images, "--model", bundle, "--output", output, "--only-new"]


def wait_until_captioning(flink, process, since: float, timeout: float = 180) -> str:
    """Waits until a Flink job submitted after ``since`` runs its CaptionImages stage with an
    SDK worker up; returns the job id. Fails if ``process`` (the launcher) ends first."""
    from cluster import local_flink

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the job ended before the fault"
        for job in flink.rest("jobs/overview")["jobs"]:
            if job["state"] != "RUNNING" or job["start-time"] / 1000 < since:
                continue
            vertices = flink.rest(f"jobs/{job['jid']}")["vertices"]
            captioning = any(
                "CaptionImages" in v["name"] and v["status"] == "RUNNING" for v in vertices
            )
            if captioning and local_flink.sdk_workers(flink.workdir):
                return job["jid"]
        time.sleep(0.3)
    raise TimeoutError("the job did not reach CaptionImages")


def wait_until_captioned(output: Path, process, timeout: float = 180) -> None:
    """Waits until a run under ``output`` counts a captioned image in its live progress (what
    the launcher's progress line reads). Fails if ``process`` (the launcher) ends first."""
    from pipeline.output_root import RunDir
    from transforms.progress import read_progress

    deadline = time.time() + timeout
    while not any(
        counts.get("captioned")
        for run in (output / "runs").glob("*")
        for counts in read_progress(RunDir(str(run)).progress_dir).values()
    ):
        assert process.poll() is None, "the job ended before the fault"
        assert time.time() < deadline, "no image captioned"
        time.sleep(0.2)


def task_failures(flink, job_id: str) -> list[str]:
    """The exceptions Flink recorded for the job's failed tasks (its REST exception history)."""
    entries = flink.rest(f"jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    return [entry["exceptionName"] for entry in entries]


def beamcap_runs(output) -> str:
    """`beamcap runs OUTPUT`'s last line: the tally a user reads."""
    listed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "runs", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.strip().splitlines()[-1]


def assert_committed_once(output: Path, images: Path) -> None:
    """One committed run; every input exactly once across its captions and failures; no
    ``beam-temp-*`` left; the lease released; `beamcap runs` says so."""
    (run_dir,) = (output / "runs").iterdir()
    assert (run_dir / "_SUCCESS").exists() and not (run_dir / "_FAILED").exists()
    uris = [
        uri
        for stem in ("captions", "failures")
        for shard in sorted(run_dir.glob(f"{stem}-*.parquet"))
        for uri in pq.read_table(shard, columns=["image_uri"])["image_uri"].to_pylist()
    ]
    assert sorted(uris) == sorted(str(path) for path in images.iterdir())
    assert not list(output.rglob("beam-temp-*"))
    assert not list(output.rglob("_LEASE"))
    assert beamcap_runs(output) == f"1 runs under {output}: 1 committed, 0 failed, 0 unfinished"


def assert_failed_cleanly(output: Path) -> dict:
    """One failed run, nothing committed, no temp files, the lease released; returns _FAILED."""
    import json

    (run_dir,) = (output / "runs").iterdir()
    assert not (run_dir / "_SUCCESS").exists()
    assert not list(output.rglob("beam-temp-*"))
    assert not list(output.rglob("_LEASE"))
    assert beamcap_runs(output) == f"1 runs under {output}: 0 committed, 1 failed, 0 unfinished"
    return json.loads((run_dir / "_FAILED").read_text())
