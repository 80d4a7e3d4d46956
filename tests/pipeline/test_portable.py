"""The portable path Flink uses: the caption job submitted with FlinkRunner flags to Beam's own
job service, with an EXTERNAL pool of SDK worker processes (the same job API and worker harness
as a Flink cluster). Every wait has a timeout: dead workers fail the test instead of hanging it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, write_image_folder
from tests.jobs import wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def job_service_and_workers(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    job_port, pool_port = free_port(), free_port()
    with open(tmp_path / "job.log", "w") as job_log, open(tmp_path / "pool.log", "w") as pool_log:
        services = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "apache_beam.runners.portability.local_job_service_main",
                    "--port",
                    str(job_port),
                    "--staging_dir",
                    str(tmp_path / "staging"),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=job_log,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "apache_beam.runners.worker.worker_pool_main",
                    "--service_port",
                    str(pool_port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=pool_log,
            ),
        ]
        try:
            wait_for_port(job_port, services[0])
            wait_for_port(pool_port, services[1])
            yield job_port, pool_port, env, services
        finally:
            for process in services:
                process.kill()
                process.wait(timeout=30)


def submit(tmp_path, bundle, job_port, pool_port, env, timeout):
    images = tmp_path / "images"
    must_fail = write_image_folder(images)
    command = [
        sys.executable,
        "-m",
        "pipeline.caption",
        "--input",
        str(images),
        "--model",
        bundle,
        "--output",
        str(tmp_path / "out"),
        "--max-pixels",
        "350000",
        "--max-length",
        "12",
        "--runner",
        "FlinkRunner",
        "--job_endpoint",
        f"localhost:{job_port}",
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        f"localhost:{pool_port}",
    ]
    return must_fail, subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_caption_job_through_the_portable_job_service(
    tmp_path, tiny_bundle, job_service_and_workers
):
    job_port, pool_port, env, _ = job_service_and_workers
    must_fail, result = submit(tmp_path, tiny_bundle, job_port, pool_port, env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    counts = summary["counts"]
    assert counts["matched"] == 6 + 1 + len(must_fail)
    assert counts["captioned"] == 7 and sum(counts["failed"].values()) == len(must_fail)
    assert (tmp_path / "out" / "runs" / summary["run_id"] / "_SUCCESS").exists()


def test_dead_workers_fail_the_job_instead_of_hanging(
    tmp_path, tiny_bundle, job_service_and_workers
):
    job_port, pool_port, env, services = job_service_and_workers
    services[1].kill()  # the worker pool is gone before the job starts
    services[1].wait(timeout=30)
    try:
        _, result = submit(tmp_path, tiny_bundle, job_port, pool_port, env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung for 120s with no workers instead of failing")
    assert result.returncode == 1, result.stderr[-4000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "beamcap caption: run failed: the SDK worker pool at "
        f"localhost:{pool_port} is not reachable (unavailable)"
    )
    assert not list((tmp_path / "out").rglob("_SUCCESS"))
