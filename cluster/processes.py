"""The processes of a process group, read from /proc: how the local clusters and the fault tests
find a worker pool's SDK workers (the pool starts each in its own group)."""

import os
from pathlib import Path
from typing import NamedTuple


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
