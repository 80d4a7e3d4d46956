"""The caption and features jobs on a real Flink session cluster (cluster/local_flink.py:
JobManager, TaskManager, Beam's Flink job server and an SDK worker pool, started once for the
session and always stopped). Jobs are submitted by a `beamcap` subprocess with a timeout, so a
stuck cluster fails the test instead of hanging it."""

import json
import subprocess
import sys

import pytest

from cluster import local_flink
from pipeline import runs
from tests.conftest import ROOT, TINY_SIZE
from tests.pipeline.test_features import assert_same_features

JOB_TIMEOUT = 240  # seconds; a job here takes about a minute on 2 cores


@pytest.fixture(scope="session")
def flink(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flink")
    ports = local_flink.up(workdir, local_flink.free_ports(), timeout=180)
    try:
        yield ports
    finally:
        local_flink.down(workdir)


def beamcap_job(*argv):
    """Runs `beamcap ARGV` in a subprocess, for at most JOB_TIMEOUT seconds."""
    command = [sys.executable, "-m", "pipeline.cli", *map(str, argv)]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT, check=False
    )


def beamcap(flink, *argv):
    """Runs `beamcap ARGV` on the cluster (parallelism 1: a job's stages share its one slot)."""
    flink_flags = [
        "--runner",
        "FlinkRunner",
        "--job_endpoint",
        f"localhost:{flink.job}",
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        f"localhost:{flink.pool}",
        "--parallelism",
        "1",
    ]
    return beamcap_job(*argv, *flink_flags)


def jobs(flink) -> dict[str, str]:
    """Flink's own list of jobs: {job id: state}."""
    return {
        job["jid"]: job["state"] for job in local_flink.overview(flink, "jobs/overview")["jobs"]
    }


def by_image(table):
    return {row["image_uri"]: row for row in table.to_pylist()}


def test_caption_job_on_flink(flink, caption_run, nan_bundle, tiny_bundle, tmp_path):
    """A NaN model fails the run (exit 1, _FAILED); the next --only-new run captions every image,
    with the DirectRunner's captions and scores, and its broken images in failures."""
    direct_dir, _, _, must_fail = caption_run
    images, output = direct_dir.parents[2] / "images", tmp_path / "out"
    flags = ["--input", images, "--output", output, "--max-pixels", "350000", "--max-length", "12"]
    before = jobs(flink)

    failed = beamcap(flink, "caption", *flags, "--model", nan_bundle, "--only-new")
    assert failed.returncode == 1, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("beamcap caption: run failed: ") and "decoder returned NaN" in last
    (failed_dir,) = (output / "runs").iterdir()
    assert (failed_dir / "_FAILED").exists() and not (failed_dir / "_SUCCESS").exists()

    done = beamcap(flink, "caption", *flags, "--model", tiny_bundle, "--only-new")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["counts"]["skipped_as_done"] == 0 and summary["counts"]["captioned"] == 7
    assert sorted(state for job, state in jobs(flink).items() if job not in before) == [
        "FAILED",
        "FINISHED",
    ]

    assert_same_captions(output / "runs" / summary["run_id"], direct_dir, must_fail)


def assert_same_captions(run_dir, direct_dir, must_fail):
    """``run_dir`` has the DirectRunner run's captions and scores, and its failures."""
    captions, failures, _ = runs.read_run(str(run_dir))
    direct_captions, direct_failures, _ = runs.read_run(str(direct_dir))
    rows, direct_rows = by_image(captions), by_image(direct_captions)
    assert rows.keys() == direct_rows.keys()
    for uri, row in rows.items():
        assert row["caption"] == direct_rows[uri]["caption"]
        assert row["log_prob"] == pytest.approx(direct_rows[uri]["log_prob"], rel=1e-5)
    failed_stages = {uri.rsplit("/", 1)[1]: row["stage"] for uri, row in by_image(failures).items()}
    assert failed_stages == must_fail
    assert by_image(failures).keys() == by_image(direct_failures).keys()
    assert (run_dir / "_SUCCESS").exists()


def test_features_job_on_flink(flink, tiny_dataset, tiny_features, tmp_path):
    output = tmp_path / "features"
    result = beamcap(
        flink,
        "features",
        "--images",
        tiny_dataset / "Images",
        "--captions",
        tiny_dataset / "captions.txt",
        "--output",
        output,
        "--image-size",
        TINY_SIZE,
        "--encoder-weights",
        "random:3",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = json.loads((output / "dataset.json").read_text())
    assert_same_features(tiny_features, output, dataset)
