"""Beam's Spark job server with an embedded local Spark, from the jars that `make spark-jars`
fetches into build/spark/lib, and beside it a pool of Beam Python SDK workers (the EXTERNAL
environment, as on Flink). Both run in the foreground until stopped (Ctrl-C):

    python -m cluster.local_spark      # then: beamcap caption ... --runner SparkRunner
        --job_endpoint localhost:8199 --environment_type EXTERNAL \\
        --environment_config localhost:50100

Spark runs ``local[N,4]``: a failed task is tried 4 times in all (``local[N]`` never retries
one). The retries come at once, so with ``--environment_cache_millis`` they meet the dead
worker's cached environment and a lost SDK worker fails the run; docs/reliability.md.
"""

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from cluster.processes import java_tmpdir, worker_pool_command, worker_pool_env

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "build" / "spark" / "lib"

# Spark 3.5 on Java 17 reaches into these JDK packages.
OPENS = [
    f"--add-opens=java.base/{package}=ALL-UNNAMED"
    for package in (
        "java.lang",
        "java.lang.invoke",
        "java.lang.reflect",
        "java.io",
        "java.net",
        "java.nio",
        "java.util",
        "java.util.concurrent",
        "java.util.concurrent.atomic",
        "sun.nio.ch",
        "sun.nio.cs",
        "sun.security.action",
        "sun.util.calendar",
    )
]


TASK_ATTEMPTS = 4  # as Dataflow's batch bundles: the first try and 3 retries


def command(job_port: int = 8199, artifact_port: int = 8198, cores: int = 2) -> list[str]:
    if not (LIB / "spark-core_2.12-3.5.0.jar").exists():
        raise FileNotFoundError(f"{LIB} holds no Spark jars: run `make spark-jars`")
    return [
        "java",
        "-Xmx1g",
        java_tmpdir(),
        *OPENS,
        "-cp",
        f"{LIB}/*",
        "org.apache.beam.runners.spark.SparkJobServerDriver",
        f"--spark-master-url=local[{cores},{TASK_ATTEMPTS}]",
        f"--job-port={job_port}",
        f"--artifact-port={artifact_port}",
        "--expansion-port=0",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local_spark", description=__doc__)
    parser.add_argument("--job-port", type=int, default=8199, help="default: %(default)s")
    parser.add_argument("--pool-port", type=int, default=50100, help="default: %(default)s")
    parser.add_argument("--cores", type=int, default=2, help="local[N] (default: %(default)s)")
    args = parser.parse_args(argv)
    env = worker_pool_env()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # TERM stops both, as Ctrl-C
    # its own process group: stopping it stops the SDK workers it started
    pool = subprocess.Popen(worker_pool_command(args.pool_port), env=env, start_new_session=True)
    try:
        return subprocess.call(command(args.job_port, args.job_port - 1, args.cores))
    except KeyboardInterrupt:
        return 130
    finally:
        os.killpg(pool.pid, signal.SIGKILL)
        pool.wait()


if __name__ == "__main__":
    sys.exit(main())
