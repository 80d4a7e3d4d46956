"""Leases: one ``--only-new`` run at a time per output root, and which runs are still alive.

``OUTPUT/_LEASE`` is created atomically by an ``--only-new`` run (``O_EXCL`` locally; on
``gs://`` an upload with ``if_generation_match=0``); a second such run finds it and stops with
:class:`OutputBusy` (exit status 75). Every run also writes its own record,
``OUTPUT/runs/RUN_ID/_LEASE``, which tells ``beamcap runs`` that an unfinished run is alive.
Both hold the run id, host, pid (None once a launcher hands the job to a remote runner), start
time and expiry; the run's own commit or failure step removes them. A lease is stale, and the
next run takes it over with a warning, when it has expired, its run is already committed or
failed, or it names a process on this host that no longer exists.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import socket

from apache_beam.io.filesystems import FileSystems

from models import storage
from transforms.commit import run_state

LEASE = "_LEASE"
DEFAULT_MINUTES = 720
EXIT_BUSY = 75  # sysexits.h EX_TEMPFAIL: "try again later"


class OutputBusy(RuntimeError):
    """Another live run holds the output's lease; the message names it."""


@dataclasses.dataclass(frozen=True)
class Lease:
    run_id: str
    host: str
    pid: int | None
    started_at: str  # ISO 8601, UTC
    expires_at: str

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Lease:
        return cls(**json.loads(data))

    def describe(self) -> str:
        process = f", pid {self.pid}" if self.pid is not None else ""
        return (
            f"run {self.run_id} (host {self.host}{process}, since {self.started_at}, "
            f"expires {self.expires_at})"
        )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_lease(run_id: str, minutes: int, *, pid: int | None) -> Lease:
    start = _now().replace(microsecond=0)
    end = start + datetime.timedelta(minutes=minutes)
    return Lease(run_id, socket.gethostname(), pid, start.isoformat(), end.isoformat())


def output_lease_uri(output: str) -> str:
    return FileSystems.join(output, LEASE)


def run_dir_of(output: str, run_id: str) -> str:
    return FileSystems.join(output, "runs", run_id)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(lease: Lease, output: str) -> str | None:
    """Why ``lease`` no longer protects its run, or None while it does."""
    if datetime.datetime.fromisoformat(lease.expires_at) <= _now():
        return f"it expired at {lease.expires_at}"
    state = run_state(run_dir_of(output, lease.run_id))["state"]
    if state != "unfinished":
        return f"its run is already {state}"
    here = lease.pid is not None and lease.host == socket.gethostname()
    if here and not _process_exists(lease.pid):
        return f"process {lease.pid} on this host no longer exists"
    return None


def acquire(output: str, lease: Lease) -> None:
    """Takes ``OUTPUT/_LEASE`` for ``lease``, taking over a stale one with a warning; raises
    :class:`OutputBusy` naming the holder when a live run has it."""
    uri = output_lease_uri(output)
    for _ in range(5):
        if storage.create_exclusive(uri, lease.to_bytes()):
            return
        found = storage.read_versioned(uri)
        if found is None:
            continue  # released meanwhile
        holder = Lease.from_bytes(found[0])
        if holder == lease:  # ours: a retried upload whose first answer was lost
            return
        reason = stale_reason(holder, output)
        if reason is None:
            raise OutputBusy(f"{output} is leased by {holder.describe()}; try again later")
        if storage.delete_if_version(uri, found[1]):
            logging.warning("took over the stale lease of %s: %s", holder.describe(), reason)
    raise OutputBusy(f"{output}: could not take its lease ({uri} keeps changing)")


def holder(output: str) -> Lease | None:
    """The lease on ``OUTPUT/_LEASE``, stale or not; None when there is none."""
    found = storage.read_versioned(output_lease_uri(output))
    return Lease.from_bytes(found[0]) if found else None


def run_lease(output: str, run_id: str) -> Lease | None:
    """The run's own record, ``OUTPUT/runs/RUN_ID/_LEASE``; None when it has none."""
    found = storage.read_versioned(FileSystems.join(run_dir_of(output, run_id), LEASE))
    return Lease.from_bytes(found[0]) if found else None


def write_run_lease(output: str, lease: Lease) -> None:
    storage.write_bytes(FileSystems.join(run_dir_of(output, lease.run_id), LEASE), lease.to_bytes())


def live_lease(output: str, run_id: str) -> Lease | None:
    """The lease that still protects an unfinished run (its own record, or the output's lease
    naming it), or None: then the run is abandoned."""
    for lease in (run_lease(output, run_id), holder(output)):
        if lease and lease.run_id == run_id and stale_reason(lease, output) is None:
            return lease
    return None


def release(output: str, run_id: str) -> None:
    """Removes the run's own record and, if it still names this run, the output's lease
    (what the run's commit or failure step calls; calling it twice is harmless)."""
    storage.remove(FileSystems.join(run_dir_of(output, run_id), LEASE))
    found = storage.read_versioned(output_lease_uri(output))
    if found and Lease.from_bytes(found[0]).run_id == run_id:
        storage.delete_if_version(output_lease_uri(output), found[1])
