"""Real faults in the real local Flink cluster while a caption job runs over 600 images: SIGKILL
of every SDK worker, of the TaskManager JVM, and of the worker that runs the commit; and the
faults beamcap cannot recover from (a TaskManager gone for good, a worker pool that is down,
frozen, or whose workers cannot start), which must fail the run in one line within
--cluster_timeout of the fault showing (give or take the watch's poll and tests.jobs.MARGIN).
Processes are found by the pid files cluster/local_flink.py writes, and the
outcome is read from the files a user reads (tests/cluster_faults.py)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import local_flink
from cluster.processes import worker_pool_command, worker_pool_env
from pipeline import cluster_health
from tests.cluster_faults import (
    assert_committed_once,
    assert_failed_cleanly,
    caption_argv,
    task_failures,
    wait_until_captioning,
)
from tests.conftest import free_port
from tests.jobs import MARGIN, beamcap_process, logged_at, wait_for_port
from tests.pipeline.conftest import beamcap_on_flink

pytestmark = pytest.mark.xdist_group("flink")

TIMEOUT = 10  # --cluster_timeout in these tests, seconds (default 120)


def start_caption(flink, images, bundle, output, *extra):
    """Starts `beamcap caption --only-new` on the cluster, its commit held inside
    ``flink.commit_held()``; returns (process, start time)."""
    since = time.time()
    argv = [*caption_argv(images, bundle, output), *flink.flags(), *extra]
    log = output.parent / "launcher.log"
    return beamcap_process(*argv, log=log, hold=flink.hold_commit), since


def launcher_result(process, output: Path, timeout: float = 240) -> tuple[int, str]:
    """The launcher's exit status and the last line it printed."""
    returncode = process.wait(timeout=timeout)
    log = (output.parent / "launcher.log").read_text()
    return returncode, log.strip().splitlines()[-1]


def test_every_sdk_worker_killed_mid_run(flink, many_images, tiny_bundle, tmp_path):
    output = tmp_path / "out"
    process, since = start_caption(flink, many_images, tiny_bundle, output)
    job = wait_until_captioning(flink, process, since)
    workers = local_flink.sdk_workers(flink.workdir)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    returncode, last = launcher_result(process, output)
    print(f"every SDK worker {workers} killed: job done {time.time() - killed:.0f} s later")
    assert returncode == 0, last
    assert task_failures(flink, job), "Flink recorded no task failure: the kill hit nothing"
    assert flink.jobs()[job] == "FINISHED"
    assert_committed_once(output, many_images)


def test_taskmanager_killed_mid_run(flink, many_images, tiny_bundle, tmp_path):
    """The supervisor starts a new TaskManager; the job restarts its failed region on it."""
    output = tmp_path / "out"
    process, since = start_caption(flink, many_images, tiny_bundle, output)
    job = wait_until_captioning(flink, process, since)
    taskmanager = local_flink.taskmanager_pid(flink.workdir)
    os.kill(taskmanager, signal.SIGKILL)
    killed = time.time()
    returncode, last = launcher_result(process, output)
    print(f"TaskManager {taskmanager} killed: job done {time.time() - killed:.0f} s later")
    assert returncode == 0, last
    assert local_flink.taskmanager_pid(flink.workdir) not in (None, taskmanager)
    assert task_failures(flink, job)
    assert_committed_once(output, many_images)


def test_commit_worker_killed_between_summary_and_success(
    flink, many_images, tiny_bundle, tmp_path
):
    """The commit is held after summary.json (the hold of tests/held_commit.py), its
    SDK worker killed there; Flink's retry commits the run exactly once."""
    output = tmp_path / "out"
    with flink.commit_held() as reached:
        process, _ = start_caption(flink, many_images, tiny_bundle, output)
        pid, run_dir = reached(process)
        assert pid in local_flink.sdk_workers(flink.workdir)
        assert (run_dir / "summary.json").exists()
        assert not (run_dir / "_SUCCESS").exists()
        os.kill(pid, signal.SIGKILL)
    returncode, last = launcher_result(process, output)
    assert returncode == 0, last
    assert_committed_once(output, many_images)


def test_taskmanager_gone_for_good_fails_the_run_in_one_line(
    flink, many_images, tiny_bundle, tmp_path
):
    output = tmp_path / "out"
    local_flink.set_supervision(flink.workdir, False)
    try:
        process, since = start_caption(
            flink, many_images, tiny_bundle, output, "--cluster_timeout", str(TIMEOUT)
        )
        job = wait_until_captioning(flink, process, since)
        os.kill(local_flink.taskmanager_pid(flink.workdir), signal.SIGKILL)
        deadline = time.time() + 120
        while flink.rest("overview")["slots-total"] > 0:  # until Flink notices
            assert process.poll() is None and time.time() < deadline, "Flink kept the slots"
            time.sleep(0.2)
        short = time.time()
        returncode, last = launcher_result(process, output, timeout=TIMEOUT + 90)
        took = time.time() - short
    finally:
        local_flink.set_supervision(flink.workdir, True)
    print(f"TaskManager gone for good: the run failed {took:.0f} s after Flink showed no slots")
    assert returncode == 1
    assert last == (
        f"beamcap caption: run failed: the Flink cluster at localhost:{flink.ports.rest} has had "
        f"0 TaskManagers (0 task slots, the job needs 1) for {TIMEOUT} s: the job was cancelled"
    )
    # the watch sees the slots short within a poll and cancels once they stayed so for TIMEOUT
    # (a multiple of the poll)
    assert took < cluster_health.POLL_SECONDS + TIMEOUT + MARGIN
    assert_failed_cleanly(output)
    deadline = time.time() + 60
    while flink.jobs()[job] != "CANCELED":
        assert time.time() < deadline, f"the Flink job is {flink.jobs()[job]}, not cancelled"
        time.sleep(1)
    while flink.rest("overview")["slots-total"] < local_flink.SLOTS:  # back for the next test
        assert time.time() < deadline + 60, "the TaskManager did not come back"
        time.sleep(1)


@pytest.fixture()
def own_pool(tmp_path):
    """Starts a worker pool of the test's own on a free port: ``own_pool(python_dir=None)``
    returns (process, address); ``python_dir`` first on its PATH gives its workers that
    `python`."""
    started = []

    def start(python_dir: Path | None = None):
        port = free_port()
        with open(tmp_path / f"pool-{port}.log", "w") as log:
            process = subprocess.Popen(
                worker_pool_command(port),
                env=worker_pool_env(python_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        wait_for_port(port, process)
        return process, f"localhost:{port}"

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):  # a test may have killed it already
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def assert_pool_fault_fails_the_run(flink, pool: str, images, bundle, output, reason: str):
    """A run against the worker pool at ``pool`` exits 1 within the bound, its last line the
    ``reason``, and leaves one cleanly failed run."""
    result = beamcap_on_flink(
        flink,
        *caption_argv(images, bundle, output),
        "--cluster_timeout",
        str(TIMEOUT),
        pool=pool,
        timeout=TIMEOUT + 120,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"beamcap caption: run failed: {reason}"
    # the probe runs once the launcher has checked the bundle (its engine line, at launch)
    assert time.time() - logged_at(result.stderr, "engine here: ") < TIMEOUT + MARGIN
    assert_failed_cleanly(output)


def test_worker_pool_down_fails_the_run_in_one_line(
    flink, own_pool, many_images, tiny_bundle, tmp_path
):
    process, address = own_pool()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    reason = f"the SDK worker pool at {address} is not reachable (unavailable)"
    assert_pool_fault_fails_the_run(
        flink, address, many_images, tiny_bundle, tmp_path / "out", reason
    )


def test_frozen_worker_pool_fails_the_run_in_one_line(
    flink, own_pool, many_images, tiny_bundle, tmp_path
):
    process, address = own_pool()
    os.killpg(process.pid, signal.SIGSTOP)  # it takes connections and never answers
    reason = f"the SDK worker pool at {address} did not answer within {TIMEOUT} s"
    assert_pool_fault_fails_the_run(
        flink, address, many_images, tiny_bundle, tmp_path / "out", reason
    )


def test_worker_pool_whose_workers_cannot_start_fails_the_run_in_one_line(
    flink, own_pool, many_images, tiny_bundle, tmp_path
):
    bare = tmp_path / "bare-python"  # a real `python` that cannot import apache_beam
    bare.mkdir()
    (bare / "python").write_text(f'#!/bin/sh\nexec {sys.base_prefix}/bin/python3 -I -S "$@"\n')
    (bare / "python").chmod(0o755)
    _, address = own_pool(python_dir=bare)
    reason = (
        f"the SDK worker pool at {address} did not start a worker within {TIMEOUT} s "
        "(can its `python` import apache_beam? see the pool's log)"
    )
    assert_pool_fault_fails_the_run(
        flink, address, many_images, tiny_bundle, tmp_path / "out", reason
    )


def test_worker_pool_frozen_mid_run_fails_the_run_in_one_line(
    flink, many_images, tiny_bundle, tmp_path
):
    """The shared cluster's pool SIGSTOPped while the job runs (held at its commit, so that it
    outlasts the bound; its worker goes on): the watch's ping gets no answer, and after
    --cluster_timeout the job is cancelled and the run failed."""
    output = tmp_path / "out"
    pool = json.loads((flink.workdir / "pids.json").read_text())["pids"]["workerpool"]
    with flink.commit_held() as reached:
        process, _ = start_caption(
            flink, many_images, tiny_bundle, output, "--cluster_timeout", str(TIMEOUT)
        )
        reached(process)
        os.kill(pool, signal.SIGSTOP)  # the pool alone, not its process group
        try:
            returncode, last = launcher_result(process, output, timeout=TIMEOUT + 90)
        finally:
            os.kill(pool, signal.SIGCONT)
    assert returncode == 1
    assert last == (
        f"beamcap caption: run failed: the SDK worker pool at localhost:{flink.ports.pool} has "
        f"not answered for {TIMEOUT} s: the job was cancelled"
    )
    assert_failed_cleanly(output)
