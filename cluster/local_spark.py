"""Beam's Spark job server with an embedded local Spark (``local[N]``), from the jars that
`make spark-jars` fetches into build/spark/lib. It runs in the foreground until stopped:

    python -m cluster.local_spark      # then: beamcap caption ... --runner SparkRunner
                                       #   --job_endpoint localhost:8199 --environment_type LOOPBACK
"""

import argparse
import os
import sys
from pathlib import Path

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


def command(job_port: int = 8199, artifact_port: int = 8198, cores: int = 2) -> list[str]:
    if not (LIB / "spark-core_2.12-3.5.0.jar").exists():
        raise FileNotFoundError(f"{LIB} holds no Spark jars: run `make spark-jars`")
    return [
        "java",
        "-Xmx1g",
        *OPENS,
        "-cp",
        f"{LIB}/*",
        "org.apache.beam.runners.spark.SparkJobServerDriver",
        f"--spark-master-url=local[{cores}]",
        f"--job-port={job_port}",
        f"--artifact-port={artifact_port}",
        "--expansion-port=0",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.local_spark", description=__doc__)
    parser.add_argument("--job-port", type=int, default=8199, help="default: %(default)s")
    parser.add_argument("--cores", type=int, default=2, help="local[N] (default: %(default)s)")
    args = parser.parse_args(argv)
    args_list = command(args.job_port, args.job_port - 1, args.cores)
    os.execvp(args_list[0], args_list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
