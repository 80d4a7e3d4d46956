"""pipeline.cluster_health against a Flink REST API stand-in served over real HTTP on loopback
(its /overview answer, as Flink 1.19 words it): the slot check at launch, and Java failures in
words. The real cluster's faults are in test_flink_faults.py."""

import dataclasses
import http.server
import json
import logging
import threading
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from models.configs import SettingsError
from pipeline import cluster_health
from pipeline.cluster_health import check_slots, cluster_of, in_words


class Overview(dict):
    def __init__(self):
        super().__init__()
        self.asked: list[float] = []


@pytest.fixture()
def flink_rest():
    """Serves ``overview`` (a dict the test sets) at /overview; yields (address, overview).
    ``overview.asked`` holds the time of each request."""
    overview = Overview()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            overview.asked.append(time.time())
            body = json.dumps(overview).encode()
            self.send_response(200 if self.path == "/overview" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", overview
    finally:
        server.shutdown()


def flink_cluster(address, *flags):
    options = PipelineOptions(
        ["--runner", "FlinkRunner", "--job_endpoint", "localhost:8099", "--flink_master", address]
        + list(flags)
    )
    return cluster_of(options)


def test_a_parallelism_above_the_slots_is_refused_and_one_above_the_free_slots_waits(
    flink_rest, caplog
):
    address, overview = flink_rest
    overview.update({"taskmanagers": 1, "slots-total": 2, "slots-available": 1})
    with pytest.raises(SettingsError) as refused:
        check_slots(flink_cluster(address, "--parallelism", "8"))
    assert str(refused.value) == (
        f"parallelism 8 > 2 task slots at {address}: pass --parallelism 2 or add TaskManagers"
    )
    with caplog.at_level(logging.WARNING):
        check_slots(flink_cluster(address, "--parallelism", "2"))
    assert caplog.messages == [
        f"parallelism 2 > 1 free task slots at {address} (of 2): the job waits for other jobs "
        "to free them"
    ]
    caplog.clear()
    check_slots(flink_cluster(address))  # the job server's default parallelism: 1
    assert caplog.messages == []


def test_an_unreachable_rest_api_is_said_and_not_checked(caplog):
    with caplog.at_level(logging.WARNING):
        check_slots(flink_cluster("127.0.0.1:9", "--parallelism", "64"))
    (message,) = caplog.messages
    assert message.startswith("cannot read Flink's task slots at http://127.0.0.1:9 (")


def test_the_pool_is_probed_only_where_this_machine_can_reach_it():
    pool = ["--environment_type", "EXTERNAL", "--environment_config", "localhost:50000"]
    assert flink_cluster("h:8081", *pool).pool is None  # the JobManager elsewhere: so is the pool
    local = flink_cluster("localhost:8081", *pool)
    assert local.pool == "localhost:50000" and local.flink_rest == "http://localhost:8081"
    remote = cluster_of(
        PipelineOptions(
            ["--runner", "FlinkRunner", "--job_endpoint", "jobserver:8099"]
            + ["--environment_type", "EXTERNAL", "--environment_config", "localhost:50000"]
        )
    )
    assert remote.pool is None  # the TaskManager pod's own localhost, not this machine's
    assert remote.flink_rest == "http://jobserver:8081"
    assert cluster_of(PipelineOptions(["--runner", "DataflowRunner"])) is None


def test_java_failures_in_words():
    cluster = flink_cluster(
        "localhost:8081", "--environment_type", "EXTERNAL", "--environment_config", "localhost:5"
    )
    lost = in_words(
        cluster,
        "RuntimeError: Pipeline B_1 failed in state FAILED: org.apache.spark.SparkException: "
        "Job aborted: io.grpc.StatusRuntimeException: CANCELLED: call already cancelled",
    )
    assert lost.startswith("an SDK worker of the pool at localhost:5 was lost mid-run")
    refused = in_words(
        cluster,
        "RuntimeError: Pipeline B_1 failed in state FAILED: java.net.ConnectException: "
        "java.net.ConnectException: finishConnect(..) failed: Connection refused",
    )
    assert refused == "the runner failed the job: finishConnect(..) failed: Connection refused"
    assert in_words(cluster, "decoder returned NaN") == "decoder returned NaN"


class Result:
    """Beam's PipelineResult as the watch uses it."""

    _job_id = "BeamApp-test_0000"

    def __init__(self):
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def test_the_watch_cancels_a_job_whose_taskmanagers_stay_gone(flink_rest, monkeypatch):
    address, overview = flink_rest
    monkeypatch.setattr(cluster_health, "POLL_SECONDS", 0.1)
    overview.update({"taskmanagers": 1, "slots-total": 2, "slots-available": 1})
    cluster = dataclasses.replace(flink_cluster(address), timeout=0.5)
    healthy = Result()
    with cluster_health.Watch(cluster, healthy, since=time.time()) as watch:
        deadline = time.time() + 10  # until it has asked for longer than the timeout
        while len(overview.asked) < 2 or overview.asked[-1] - overview.asked[0] <= cluster.timeout:
            assert time.time() < deadline, "the watch stopped asking"
            time.sleep(0.05)
    assert watch.fault is None and not healthy.cancelled

    overview.update({"taskmanagers": 0, "slots-total": 0, "slots-available": 0})
    lost = Result()
    with cluster_health.Watch(cluster, lost, since=time.time()) as watch:
        deadline = time.time() + 10
        while not lost.cancelled and time.time() < deadline:
            time.sleep(0.1)
    assert lost.cancelled
    assert watch.fault == (
        f"the Flink cluster at {address} has had 0 TaskManagers (0 task slots, the job needs "
        "1) for 0 s: the job was cancelled"
    )
