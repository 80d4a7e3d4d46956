"""The Flink session cluster that the Flink tests share (cluster/local_flink.py: JobManager,
supervised TaskManager, Beam's Flink job server and an SDK worker pool), started once for the
session on free ports and always stopped. Tests that use it carry ``xdist_group("flink")``."""

import contextlib
import dataclasses
import json
import time
import urllib.request
from pathlib import Path

import pytest

from cluster import local_flink
from cluster.processes import group_members
from tests.jobs import beamcap_job


@dataclasses.dataclass(frozen=True)
class FlinkCluster:
    ports: local_flink.Ports
    workdir: Path

    @property
    def hold_commit(self) -> Path:
        """While this file exists, a caption run started with it as its hold (``hold=``)
        waits before _SUCCESS."""
        return self.workdir / "hold-commit"

    @contextlib.contextmanager
    def commit_held(self):
        """Inside, caption runs on the cluster started with ``hold=self.hold_commit`` wait
        between summary.json and _SUCCESS (``tests.held_commit``). Yields
        ``reached(process)``: it waits until a run's commit is held and returns (the pid of the
        SDK worker holding it, its run dir); it fails if the launcher ``process`` ends first."""
        reached = Path(f"{self.hold_commit}.reached")

        def wait(process, timeout: float = 180) -> tuple[int, Path]:
            deadline = time.time() + timeout
            while not reached.exists():
                assert time.time() < deadline and process.poll() is None, "no commit was held"
                time.sleep(0.2)
            pid, run_dir = reached.read_text().split(" ", 1)
            return int(pid), Path(run_dir)

        self.hold_commit.touch()
        try:
            yield wait
        finally:
            self.hold_commit.unlink(missing_ok=True)
            reached.unlink(missing_ok=True)

    def workers_started(self) -> int:
        """SDK workers the pool has started for jobs so far (beamcap's pool probes aside)."""
        log = (self.workdir / "log" / "workerpool.log").read_text(errors="replace")
        return sum(
            "beamcap-probe" not in line for line in log.splitlines() if "Starting worker" in line
        )

    def rest(self, path: str, method: str = "GET") -> dict:
        """Flink's REST API."""
        request = urllib.request.Request(
            f"http://localhost:{self.ports.rest}/{path}", method=method
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else {}

    def jobs(self) -> dict[str, str]:
        """Flink's own list of jobs: {job id: state}."""
        return {job["jid"]: job["state"] for job in self.rest("jobs/overview")["jobs"]}

    def flags(self, pool: str | None = None) -> list[str]:
        """What `make run-flink` passes beside the preset, for this cluster's ports (or for
        another worker pool at ``pool``)."""
        return [
            "--config",
            "flink",
            "--job_endpoint",
            f"localhost:{self.ports.job}",
            "--environment_config",
            pool or f"localhost:{self.ports.pool}",
            "--flink_master",
            f"localhost:{self.ports.rest}",
        ]


@pytest.fixture(scope="session")
def flink(tmp_path_factory, gcs_servers):
    """The cluster; its SDK workers reach the session's storage servers."""
    workdir = tmp_path_factory.mktemp("flink")
    ports = local_flink.up(workdir, local_flink.free_ports(), timeout=180, env=gcs_servers.env())
    groups = json.loads((workdir / "pids.json").read_text())["pids"].values()
    scratch = workdir / local_flink.SCRATCH
    assert list(scratch.glob("tm_*")), f"the TaskManager keeps its files elsewhere than {scratch}"
    try:
        yield FlinkCluster(ports, workdir)
    finally:
        local_flink.down(workdir)
    # `down` leaves nothing behind: no leader, no TaskManager the supervisor started, no worker,
    # no working files (each TaskManager's copy of the jobs' jars)
    orphans = [member.pid for group in groups for member in group_members(group)]
    orphans += [leader for leader in groups if Path(f"/proc/{leader}").exists()]
    assert not orphans, f"processes left after local_flink.down: {orphans}"
    assert not scratch.exists(), f"local_flink.down left {scratch}"


def beamcap_on_flink(flink: FlinkCluster, *argv, pool=None, timeout: float | None = None):
    """Runs `beamcap ARGV` on the cluster as `make run-flink` does (--config flink)."""
    return beamcap_job(*argv, *flink.flags(pool), timeout=timeout)


MANY_IMAGES = 600


@pytest.fixture(scope="session")
def many_images(tmp_path_factory) -> Path:
    """600 small synthetic JPEGs (80x60 to 96x72): a run long in images and short in seconds,
    so that a fault lands while images are being captioned."""
    from models.datasets.synthetic import SynthConfig, make_example

    root = tmp_path_factory.mktemp("many-images")
    config = SynthConfig(seed=5, min_size=(80, 60), max_size=(96, 72))
    for index in range(MANY_IMAGES):
        (root / f"image{index:04d}.jpg").write_bytes(make_example(config, index)[2])
    return root
