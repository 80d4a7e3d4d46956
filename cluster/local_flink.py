"""A Flink session cluster on this machine, laid out like production: JobManager and TaskManager
in their own JVMs, Beam's Flink job server in a third, and a pool of Beam Python SDK workers
(the EXTERNAL environment). `make flink-jars` fetches the jars into build/flink/lib.

    python -m cluster.local_flink up                 # or: make flink-up
    python -m cluster.local_flink supervision off    # a dead TaskManager stays dead (on: back)
    python -m cluster.local_flink down               # or: make flink-down

As Kubernetes or YARN would, a supervisor process restarts the TaskManager whenever it exits,
so a job that lost it gets its slots back. ``WORKDIR/pids.json`` records the process groups
started (the supervisor's, not the TaskManager's, which changes): ``WORKDIR/taskmanager.pid``
holds the TaskManager running now, and the SDK workers are the members of the worker pool's
process group. The tests start one cluster on free ports for the whole session and always stop
it.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.processes import group_members, java_tmpdir, worker_pool_command, worker_pool_env

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "build" / "flink" / "lib"
WORKDIR = ROOT / "build" / "flink" / "run"
SLOTS = 2  # one per core of this TaskManager
TASKMANAGER_PID, UNSUPERVISED, SCRATCH = "taskmanager.pid", "unsupervised", "tmp"

# Explicit sizes: the distribution's scripts would compute them; the JVMs started here do not.
TASK_MANAGER_MEMORY = {
    "taskmanager.memory.framework.heap.size": "128m",
    "taskmanager.memory.task.heap.size": "384m",
    "taskmanager.memory.framework.off-heap.size": "128m",
    "taskmanager.memory.task.off-heap.size": "0m",
    "taskmanager.memory.network.min": "256m",
    "taskmanager.memory.network.max": "256m",
    "taskmanager.memory.managed.size": "64m",
    "taskmanager.memory.jvm-metaspace.size": "192m",
    "taskmanager.memory.jvm-overhead.min": "128m",
    "taskmanager.memory.jvm-overhead.max": "128m",
    # Batch jobs shuffle by sort; its default floor of 512 buffers per partition is more than
    # 256m of network memory gives a Beam job's many partitions.
    "taskmanager.network.sort-shuffle.min-buffers": "64",
}


# How a job recovers from a lost SDK worker or TaskManager (docs/reliability.md says why):
# restart only the failed region, up to 3 times, 10 s apart. The delay outlasts the environment
# cache (configs/flink.yaml: 5 s), so a restarted task starts a new SDK worker instead of
# reusing the cached connection to the dead one.
RECOVERY = {
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": 3,
    "restart-strategy.fixed-delay.delay": "10 s",
    "jobmanager.execution.failover-strategy": "region",
    # A lost TaskManager is noticed by its broken connection within seconds; one that hangs, by
    # missing heartbeats: 20 s instead of 50 s.
    "heartbeat.timeout": 20000,
}


@dataclass
class Ports:
    rest: int = 8081  # Flink's REST API and web UI: --flink_master
    rpc: int = 6123  # JobManager RPC
    job: int = 8099  # Beam job server: --job_endpoint
    artifact: int = 8098
    pool: int = 50000  # SDK worker pool: --environment_config


def free_ports() -> Ports:
    sockets = [socket.socket() for _ in range(5)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = Ports(*(sock.getsockname()[1] for sock in sockets))
    for sock in sockets:
        sock.close()
    return ports


def config(ports: Ports, scratch: Path) -> str:
    settings = {
        # The JVMs' working files (a TaskManager's copy of each job's jars is about 0.5-1 GB)
        # in WORKDIR/tmp, which `down` removes, instead of /tmp, where every TaskManager killed or
        # restarted left its own.
        "io.tmp.dirs": str(scratch),
        "jobmanager.rpc.address": "localhost",
        "jobmanager.rpc.port": ports.rpc,
        "jobmanager.bind-host": "localhost",
        "rest.address": "localhost",
        "rest.bind-address": "localhost",
        "rest.port": ports.rest,
        "taskmanager.host": "localhost",
        "taskmanager.bind-host": "localhost",
        "taskmanager.numberOfTaskSlots": SLOTS,
        "taskmanager.cpu.cores": SLOTS,
        **TASK_MANAGER_MEMORY,
        "parallelism.default": SLOTS,
        # Beam's runner classes from lib/ (the job server's own jars), not from each job's jars:
        # only then does Beam keep a job's SDK worker between its stages for
        # --environment_cache_millis; otherwise every stage starts a new Python worker.
        "classloader.resolve-order": "parent-first",
        **RECOVERY,
    }
    return "".join(f"{key}: {value}\n" for key, value in settings.items())


def java(main_class: str, *args: str, memory: tuple[str, ...] = ("-Xmx512m",)) -> list[str]:
    return ["java", *memory, java_tmpdir(), "-cp", f"{LIB}/*", main_class, *args]


def commands(ports: Ports, conf: Path) -> dict[str, list[str]]:
    return {
        "jobmanager": java(
            "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
            "--configDir",
            str(conf),
        ),
        "taskmanager": [sys.executable, "-m", "cluster.local_flink", "supervise"],
        "jobserver": java(
            "org.apache.beam.runners.flink.FlinkJobServerDriver",
            f"--flink-master=localhost:{ports.rest}",
            f"--job-port={ports.job}",
            f"--artifact-port={ports.artifact}",
            "--expansion-port=0",
        ),
        "workerpool": worker_pool_command(ports.pool),
    }


def taskmanager_command(conf: Path) -> list[str]:
    return java(
        "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
        "--configDir",
        str(conf),
        memory=("-Xmx640m", "-XX:MaxDirectMemorySize=512m"),
    )


def supervise(workdir: Path) -> None:
    """Runs the TaskManager and starts it again whenever it exits, unless supervision is off
    (``WORKDIR/unsupervised`` exists): then it waits until supervision is back on. Writes the
    running TaskManager's pid to ``WORKDIR/taskmanager.pid``; SIGTERM stops both."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    pid_file, log = workdir / TASKMANAGER_PID, workdir / "log" / "taskmanager.log"
    process, calm = None, 0.0
    while not stopping:
        if process is None and not (workdir / UNSUPERVISED).exists() and time.time() > calm:
            with open(log, "a") as out:
                process = subprocess.Popen(
                    taskmanager_command(workdir / "conf"), stdout=out, stderr=subprocess.STDOUT
                )
            pid_file.write_text(str(process.pid))
        if process is not None and process.poll() is not None:
            print(f"taskmanager {process.pid} exited with {process.returncode}", flush=True)
            process = None
            pid_file.unlink(missing_ok=True)
            calm = time.time() + 2  # a TaskManager that cannot start is not restarted in a loop
        time.sleep(0.5)
    if process is not None:
        process.terminate()
        process.wait()


def set_supervision(workdir: Path, on: bool) -> None:
    """Switches the TaskManager's supervisor on (a dead TaskManager is restarted) or off."""
    flag = workdir / UNSUPERVISED
    if on:
        flag.unlink(missing_ok=True)
    else:
        flag.touch()


def taskmanager_pid(workdir: Path = WORKDIR) -> int | None:
    """The pid of the TaskManager JVM running now, None between two of its lives."""
    try:
        return int((workdir / TASKMANAGER_PID).read_text())
    except (FileNotFoundError, ValueError):
        return None


def sdk_workers(workdir: Path = WORKDIR) -> list[int]:
    """The pids of the SDK worker processes that the pool has started and that still run: the
    members of its process group."""
    pool = json.loads((workdir / "pids.json").read_text())["pids"]["workerpool"]
    return [member.pid for member in group_members(pool)]


def overview(ports: Ports, path: str = "overview") -> dict:
    with urllib.request.urlopen(f"http://localhost:{ports.rest}/{path}", timeout=5) as answer:
        return json.load(answer)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _ready(ports: Ports) -> bool:
    try:
        slots = overview(ports)["slots-total"]
    except OSError:
        return False
    return slots == SLOTS and _listening(ports.job) and _listening(ports.pool)


def up(
    workdir: Path = WORKDIR,
    ports: Ports | None = None,
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> Ports:
    """Starts the four processes (with ``env`` added to their environment; a ``PYTHONPATH``
    there must hold the repo); returns once the
    TaskManager's slots, the job server and the worker pool answer. Raises (after stopping what
    started) if any exits or time runs out."""
    if not (LIB / "flink-runtime-1.19.0.jar").exists():
        raise FileNotFoundError(f"{LIB} holds no Flink jars: run `make flink-jars`")
    if (workdir / "pids.json").exists():
        raise RuntimeError(f"a cluster runs from {workdir} already: stop it first (down)")
    ports = ports or Ports()
    conf, logs, scratch = workdir / "conf", workdir / "log", workdir / SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)  # a crashed cluster's
    for folder in (conf, logs, scratch):
        folder.mkdir(parents=True, exist_ok=True)
    (conf / "config.yaml").write_text(config(ports, scratch))
    set_supervision(workdir, True)
    env = {**worker_pool_env(), "PYTHONPATH": str(ROOT), **(env or {})}
    pids = {}
    try:
        for name, command in commands(ports, conf).items():
            with open(logs / _log_name(name), "w") as log:
                process = subprocess.Popen(
                    command,
                    env=env,
                    cwd=workdir,  # the supervisor's WORKDIR
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: down() stops its children too
                )
            pids[name] = process.pid
            (workdir / "pids.json").write_text(json.dumps({"pids": pids, "ports": asdict(ports)}))
        deadline = time.time() + timeout
        while not _ready(ports):
            for name, pid in pids.items():
                if _exited(pid):
                    raise RuntimeError(f"{name} exited: see {logs / _log_name(name)}")
            if time.time() > deadline:
                raise TimeoutError(f"the cluster was not up after {timeout:.0f}s: see {logs}")
            time.sleep(0.5)
    except BaseException:
        down(workdir)
        raise
    return ports


def _log_name(name: str) -> str:
    """The log of a process `up` starts: the TaskManager's entry is its supervisor, whose own
    log is apart from the TaskManager JVM's taskmanager.log."""
    return f"{'supervisor' if name == 'taskmanager' else name}.log"


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (started by another `up`): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return done == pid


def down(workdir: Path = WORKDIR, timeout: float = 30) -> None:
    """Stops every process group that `up` started from ``workdir`` (TERM, then KILL) and removes
    their working files."""
    state = workdir / "pids.json"
    if not state.exists():
        return
    pids = json.loads(state.read_text())["pids"]
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and not all(_exited(pid) for pid in pids.values()):
        time.sleep(0.2)
    for pid in pids.values():
        _signal_group(pid, signal.SIGKILL)
        _exited(pid)
    state.unlink()
    (workdir / TASKMANAGER_PID).unlink(missing_ok=True)
    shutil.rmtree(workdir / SCRATCH, ignore_errors=True)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.local_flink",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "supervision", "supervise"],
        help="up: start the cluster; down: stop it; supervision on|off: whether a TaskManager "
        "that exits is restarted; supervise: the supervisor itself (started by up)",
    )
    parser.add_argument("switch", nargs="?", choices=["on", "off"], help="for supervision")
    parser.add_argument(
        "--workdir", type=Path, default=WORKDIR, help="config, logs and pids (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.workdir)
        return 0
    if args.action == "supervise":
        supervise(Path.cwd())
        return 0
    if args.action == "supervision":
        if args.switch is None:
            parser.error("supervision needs on or off")
        set_supervision(args.workdir, args.switch == "on")
        return 0
    ports = up(args.workdir)
    print(
        f"Flink {overview(ports)['flink-version']} at http://localhost:{ports.rest}; "
        f"caption with `make run-flink` or beamcap caption --config flink --job_endpoint "
        f"localhost:{ports.job} --environment_config localhost:{ports.pool} "
        f"--flink_master localhost:{ports.rest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
