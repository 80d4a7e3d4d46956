"""A job server lost mid-run: a real Prism job server, SIGKILLed (by the pid file its fixture
writes) while `beamcap caption` runs on it with a loopback worker, as `make flink-down` stops
Flink's job server under a `make run-flink`. The run ends in one line naming the job server
and its address, exit 1, ``_FAILED`` with that reason, the lease released."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster_faults import assert_failed_cleanly, wait_until_captioned
from tests.conftest import PRISM, free_port
from tests.jobs import beamcap_process, job_flags, wait_for_port


@pytest.fixture
def prism_job_server(tmp_path):
    """Prism as a standalone job server on a free port; yields (address, pid file)."""
    if not PRISM.exists():
        pytest.fail(f"{PRISM} is missing: run `make prism`")
    port, pid_file = free_port(), tmp_path / "prism.pid"
    with open(tmp_path / "prism.log", "w") as log:
        server = subprocess.Popen(
            [str(PRISM), "--job_port", str(port), "--serve_http=false"], stdout=log, stderr=log
        )
    pid_file.write_text(str(server.pid))
    try:
        wait_for_port(port, server)
        yield f"localhost:{port}", pid_file
    finally:
        server.kill()
        server.wait(timeout=30)


def kill_by_pid_file(pid_file: Path) -> None:
    os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_job_server_killed_mid_run_fails_the_run_in_one_line(
    prism_job_server, many_images, tiny_bundle, tmp_path
):
    endpoint, pid_file = prism_job_server
    output, log = tmp_path / "out", tmp_path / "run.log"
    portable = ["--runner", "PortableRunner", "--job_endpoint", endpoint]
    flags = job_flags(many_images, tiny_bundle, output, "--only-new", *portable)
    process = beamcap_process("caption", *flags, "--environment_type", "LOOPBACK", log=log)
    try:
        wait_until_captioned(output, process)
        kill_by_pid_file(pid_file)
        killed = time.time()
        status = process.wait(120)
    finally:
        process.kill()
    line = log.read_text().strip().splitlines()[-1]
    print(f"exit {time.time() - killed:.1f} s after the kill: {line}")  # docs/reliability.md
    reason = (
        f"the job server at {endpoint} stopped answering mid-run (unavailable); nothing was "
        "committed: run again (--only-new takes up what is left)"
    )
    assert (status, line) == (1, f"beamcap caption: run failed: {reason}")
    assert "Exception in thread" not in log.read_text()  # Beam's stream threads stay quiet
    assert assert_failed_cleanly(output)["reason"] == reason  # _FAILED; no _LEASE left
