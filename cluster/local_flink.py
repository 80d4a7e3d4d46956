"""A Flink session cluster on this machine, laid out like production: JobManager and TaskManager
in their own JVMs, Beam's Flink job server in a third, and a pool of Beam Python SDK workers
(the EXTERNAL environment). `make flink-jars` fetches the jars into build/flink/lib.

    python -m cluster.local_flink up     # or: make flink-up
    python -m cluster.local_flink down   # or: make flink-down

The tests start one on free ports for the whole session and always stop it.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "build" / "flink" / "lib"
WORKDIR = ROOT / "build" / "flink" / "run"
SLOTS = 2  # one per core of this TaskManager

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


def config(ports: Ports) -> str:
    settings = {
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
    }
    return "".join(f"{key}: {value}\n" for key, value in settings.items())


def java(main_class: str, *args: str, memory: tuple[str, ...] = ("-Xmx512m",)) -> list[str]:
    return ["java", *memory, "-cp", f"{LIB}/*", main_class, *args]


def commands(ports: Ports, conf: Path) -> dict[str, list[str]]:
    return {
        "jobmanager": java(
            "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
            "--configDir",
            str(conf),
        ),
        "taskmanager": java(
            "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
            "--configDir",
            str(conf),
            memory=("-Xmx640m", "-XX:MaxDirectMemorySize=512m"),
        ),
        "jobserver": java(
            "org.apache.beam.runners.flink.FlinkJobServerDriver",
            f"--flink-master=localhost:{ports.rest}",
            f"--job-port={ports.job}",
            f"--artifact-port={ports.artifact}",
            "--expansion-port=0",
        ),
        "workerpool": [
            sys.executable,
            "-m",
            "apache_beam.runners.worker.worker_pool_main",
            "--service_port",
            str(ports.pool),
        ],
    }


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


def up(workdir: Path = WORKDIR, ports: Ports | None = None, timeout: float = 180) -> Ports:
    """Starts the four processes; returns once the TaskManager's slots, the job server and the
    worker pool answer. Raises (after stopping what started) if any exits or time runs out."""
    if not (LIB / "flink-runtime-1.19.0.jar").exists():
        raise FileNotFoundError(f"{LIB} holds no Flink jars: run `make flink-jars`")
    if (workdir / "pids.json").exists():
        raise RuntimeError(f"a cluster runs from {workdir} already: stop it first (down)")
    ports = ports or Ports()
    conf, logs = workdir / "conf", workdir / "log"
    conf.mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    (conf / "config.yaml").write_text(config(ports))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # the pool's `python`
        "PYTHONPATH": str(ROOT),
    }
    pids = {}
    try:
        for name, command in commands(ports, conf).items():
            with open(logs / f"{name}.log", "w") as log:
                process = subprocess.Popen(
                    command,
                    env=env,
                    cwd=workdir,
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
                    raise RuntimeError(f"{name} exited: see {logs / name}.log")
            if time.time() > deadline:
                raise TimeoutError(f"the cluster was not up after {timeout:.0f}s: see {logs}")
            time.sleep(0.5)
    except BaseException:
        down(workdir)
        raise
    return ports


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
    """Stops every process group that `up` started from ``workdir`` (TERM, then KILL)."""
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


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local_flink", description=__doc__)
    parser.add_argument("action", choices=["up", "down"], help="start or stop the cluster")
    parser.add_argument(
        "--workdir", type=Path, default=WORKDIR, help="config, logs and pids (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.action == "down":
        down(args.workdir)
        return 0
    ports = up(args.workdir)
    print(
        f"Flink {overview(ports)['flink-version']} at http://localhost:{ports.rest}; "
        f"caption with --runner FlinkRunner --job_endpoint localhost:{ports.job} "
        f"--environment_type EXTERNAL --environment_config localhost:{ports.pool} "
        "--environment_cache_millis 60000"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
