"""The SDK worker pool and the JVMs' temporary folder as the local clusters start them, and the
members of a process group, read from /proc: how they and the fault tests find a pool's SDK
workers (the pool runs in a group of its own, and its workers stay in it)."""

import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple


def worker_pool_command(port: int) -> list[str]:
    """Beam's SDK worker pool on ``port``; its workers run the `python` first on PATH."""
    module = "apache_beam.runners.worker.worker_pool_main"
    return [sys.executable, "-m", module, "--service_port", str(port)]


def worker_pool_env(python_dir: Path | None = None) -> dict[str, str]:
    """The environment that gives the pool's workers this interpreter's `python` (or the one in
    ``python_dir``)."""
    first = python_dir or Path(sys.executable).parent
    return {**os.environ, "PATH": f"{first}:{os.environ['PATH']}"}


def java_tmpdir() -> str:
    """The JVM flag for Python's temporary folder (``TMPDIR`` where set; Java reads only its own
    ``java.io.tmpdir``), so that `make test` finds the JVMs' leftovers with its own."""
    return f"-Djava.io.tmpdir={tempfile.gettempdir()}"


class Member(NamedTuple):
    pid: int
    resident_bytes: int


def group_members(group: int) -> list[Member]:
    """The live processes of process group ``group``, its leader left out, by pid."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == group:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(Member(int(entry.name), int(fields[21]) * os.sysconf("SC_PAGE_SIZE")))
    return sorted(members)
