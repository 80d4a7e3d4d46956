"""The caption job on Beam's Spark job server with an embedded local Spark (cluster/local_spark.py,
started once for the session and always stopped): the DirectRunner's captions and scores, and
its broken images in failures."""

import json
import os
import signal
import subprocess

import pytest

from cluster import local_spark
from tests.conftest import free_port
from tests.jobs import assert_same_captions, beamcap_job, wait_for_port


@pytest.fixture(scope="session")
def spark_job_endpoint(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("spark") / "jobserver.log"
    with open(log, "w") as handle:
        server = subprocess.Popen(
            local_spark.command(port, free_port()),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, server, timeout=120)
        yield f"localhost:{port}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def test_caption_job_on_spark(spark_job_endpoint, caption_run, tiny_bundle, tmp_path):
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
        "--runner",
        "SparkRunner",
        "--job_endpoint",
        spark_job_endpoint,
        "--environment_type",
        "LOOPBACK",  # the SDK harness in the submitting process, as Beam's SparkRunner does
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert_same_captions(output / "runs" / summary["run_id"], direct_dir, must_fail)
