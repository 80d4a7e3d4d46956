"""The caption job on Beam's Spark job server with an embedded local Spark and an EXTERNAL pool
of SDK workers beside it (cluster/local_spark.py, started once for the session and always
stopped): the DirectRunner's captions and scores, and its broken images in failures; and a
SIGKILL of every SDK worker mid-run, which fails the run in one line."""

import json
import os
import signal
import subprocess
import time

import pytest

from cluster import local_spark
from cluster.processes import group_members, worker_pool_command, worker_pool_env
from tests.cluster_faults import assert_failed_cleanly, caption_argv, wait_until_captioned
from tests.conftest import free_port
from tests.jobs import (
    MARGIN,
    assert_same_captions,
    beamcap_job,
    beamcap_process,
    wait_for_port,
)

pytestmark = pytest.mark.xdist_group("spark")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """{"job_endpoint", "pool", "pool_pid"} of a job server and worker pool started here."""
    job_port, pool_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("spark")
    env = worker_pool_env()
    started = {}
    for name, command, port in (
        ("jobserver", local_spark.command(job_port, free_port()), job_port),
        ("workerpool", worker_pool_command(pool_port), pool_port),
    ):
        with open(logs / f"{name}.log", "w") as log:
            started[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(port, started[name], timeout=120)
    try:
        yield {
            "job_endpoint": f"localhost:{job_port}",
            "pool": f"localhost:{pool_port}",
            "pool_pid": started["workerpool"].pid,
        }
    finally:
        for process in started.values():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def spark_flags(spark) -> list[str]:
    return [
        "--runner",
        "SparkRunner",
        "--job_endpoint",
        spark["job_endpoint"],
        "--environment_type",
        "EXTERNAL",
        "--environment_config",
        spark["pool"],
        "--environment_cache_millis",  # one SDK worker per job, as on Flink
        "5000",
    ]


def test_caption_job_on_spark(spark, caption_run, tiny_bundle, tmp_path):
    direct_dir, _, _, must_fail = caption_run
    output = tmp_path / "out"
    result = beamcap_job(
        "caption",
        "--input",
        direct_dir.parents[2] / "images",
        "--output",
        output,
        "--model",
        tiny_bundle,
        "--max-pixels",
        "350000",
        "--max-length",
        "12",
        *spark_flags(spark),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert_same_captions(output / "runs" / summary["run_id"], direct_dir, must_fail)


def test_every_sdk_worker_killed_mid_run_on_spark(spark, many_images, tiny_bundle, tmp_path):
    """Killed once a worker has loaded the model (over 400 MB resident: TensorFlow and the
    bundle) and captions. Spark retries a failed task at once, on the same cached environment
    (--environment_cache_millis), so every attempt fails: the run fails in one line within
    seconds, cleanly; docs/reliability.md says why and what survives it."""
    output = tmp_path / "out"
    before = {member.pid for member in group_members(spark["pool_pid"])}  # an earlier job's
    argv = [*caption_argv(many_images, tiny_bundle, output), *spark_flags(spark)]
    process = beamcap_process(*argv, log=tmp_path / "launcher.log")
    deadline = time.time() + 180
    while not [
        m
        for m in group_members(spark["pool_pid"])
        if m.resident_bytes > 400e6 and m.pid not in before
    ]:
        assert time.time() < deadline and process.poll() is None, "no worker loaded the model"
        time.sleep(0.3)
    wait_until_captioned(output, process)
    workers = [m.pid for m in group_members(spark["pool_pid"]) if m.pid not in before]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    returncode = process.wait(timeout=240)
    took = time.time() - killed
    print(f"every Spark SDK worker {workers} killed: the run failed {took:.0f} s later")
    assert returncode == 1
    last = (tmp_path / "launcher.log").read_text().strip().splitlines()[-1]
    assert last == (
        f"beamcap caption: run failed: an SDK worker of the pool at {spark['pool']} was lost "
        "mid-run and the runner's retries of its tasks failed too; nothing was committed: run "
        "again (--only-new takes up what is left)"
    )
    assert took < MARGIN  # Spark retries the lost tasks at once and fails them at once
    assert_failed_cleanly(output)
