"""The caption and features jobs on a real Flink session cluster (cluster/local_flink.py:
JobManager, TaskManager, Beam's Flink job server and an SDK worker pool, started once for the
session and always stopped). Jobs are submitted by a `beamcap` subprocess with a timeout, so a
stuck cluster fails the test instead of hanging it."""

import dataclasses
import json
from pathlib import Path

import pytest

from cluster import local_flink
from tests.conftest import features_flags
from tests.jobs import assert_same_captions, assert_same_features, beamcap_job

# on one test worker: one Flink cluster
pytestmark = pytest.mark.xdist_group("flink")


@dataclasses.dataclass(frozen=True)
class Cluster:
    ports: local_flink.Ports
    workdir: Path

    def workers_started(self) -> int:
        """SDK workers the pool has started so far (each loads TensorFlow and the model)."""
        log = self.workdir / "log" / "workerpool.log"
        return log.read_text(errors="replace").count("Starting worker")


@pytest.fixture(scope="session")
def flink(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flink")
    ports = local_flink.up(workdir, local_flink.free_ports(), timeout=180)
    try:
        yield Cluster(ports, workdir)
    finally:
        local_flink.down(workdir)


def beamcap(flink, *argv):
    """Runs `beamcap ARGV` on the cluster (parallelism 1: a job's stages share its one slot)."""
    flink_flags = [
        "--runner",
        "FlinkRunner",
        "--job_endpoint",
        f"localhost:{flink.ports.job}",
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        f"localhost:{flink.ports.pool}",
        "--parallelism",
        "1",
        "--environment_cache_millis",  # one SDK worker per job, not one per stage
        "10000",
    ]
    return beamcap_job(*argv, *flink_flags)


def jobs(flink) -> dict[str, str]:
    """Flink's own list of jobs: {job id: state}."""
    listed = local_flink.overview(flink.ports, "jobs/overview")["jobs"]
    return {job["jid"]: job["state"] for job in listed}


def test_caption_job_on_flink(flink, caption_run, nan_bundle, tiny_bundle, tmp_path):
    """A NaN model fails the run (exit 1, _FAILED); the next --only-new run captions every image,
    with the DirectRunner's captions and scores, and its broken images in failures. Each job
    starts one SDK worker, kept across its stages (--environment_cache_millis)."""
    direct_dir, _, _, must_fail = caption_run
    images, output = direct_dir.parents[2] / "images", tmp_path / "out"
    flags = ["--input", images, "--output", output, "--max-pixels", "350000", "--max-length", "12"]
    before, workers = jobs(flink), flink.workers_started()

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
    assert flink.workers_started() - workers == 2

    assert_same_captions(output / "runs" / summary["run_id"], direct_dir, must_fail)


def test_features_job_on_flink(flink, tiny_dataset, tiny_features, tmp_path):
    output = tmp_path / "features"
    result = beamcap(flink, "features", *features_flags(tiny_dataset, output))
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = json.loads((output / "dataset.json").read_text())
    assert_same_features(tiny_features, output, dataset)
