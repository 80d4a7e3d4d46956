"""Leases: one ``--only-new`` run at a time per output root, and which runs are still alive;
the records, and the protocol on one lease file (``pipeline.output_root`` says where the files
are and when to take them).

The output's lease is created atomically by an ``--only-new`` run (``O_EXCL`` locally; on
``gs://`` an upload with ``if_generation_match=0``); a second such run finds it and stops with
:class:`OutputBusy` (exit status 75). Every run also writes its own record, which tells
``beamcap runs`` that an unfinished run is alive. Both hold the run id, host, pid (None once a
launcher hands the job to a remote runner), start time and expiry; the run's own commit or
failure step removes them. A lease is stale, and the next run takes it over with a warning,
when it has expired, its run is already committed or failed, or it names a process on this
host that no longer exists.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import socket
from collections.abc import Callable

from models import storage
from models.faults import OutputBusy

DEFAULT_MINUTES = 720


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


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(lease: Lease, state_of: Callable[[str], str]) -> str | None:
    """Why ``lease`` no longer protects its run, or None while it does (``state_of(run_id)``:
    that run's state, asked only once the lease has not expired)."""
    if datetime.datetime.fromisoformat(lease.expires_at) <= _now():
        return f"it expired at {lease.expires_at}"
    state = state_of(lease.run_id)
    if state != "unfinished":
        return f"its run is already {state}"
    here = lease.pid is not None and lease.host == socket.gethostname()
    if here and not _process_exists(lease.pid):
        return f"process {lease.pid} on this host no longer exists"
    return None


def acquire(uri: str, lease: Lease, *, state_of: Callable[[str], str], label: str) -> None:
    """Takes the lease file ``uri`` (of the output ``label``) for ``lease``, taking over a stale
    one with a warning (``state_of(run_id)``: that run's state); raises :class:`OutputBusy`
    naming the holder when a live run has it."""
    for _ in range(5):
        if storage.create_exclusive(uri, lease.to_bytes()):
            return
        found = storage.read_versioned(uri)
        if found is None:
            continue  # released meanwhile
        holder = Lease.from_bytes(found[0])
        if holder == lease:  # ours: a retried upload whose first answer was lost
            return
        reason = stale_reason(holder, state_of)
        if reason is None:
            raise OutputBusy(f"{label} is leased by {holder.describe()}; try again later")
        if storage.delete_if_version(uri, found[1]):
            logging.warning("took over the stale lease of %s: %s", holder.describe(), reason)
    raise OutputBusy(f"{label}: could not take its lease ({uri} keeps changing)")


def read(uri: str) -> Lease | None:
    """The lease in the file ``uri``, stale or not; None when there is none."""
    found = storage.read_versioned(uri)
    return Lease.from_bytes(found[0]) if found else None


def write(uri: str, lease: Lease) -> None:
    storage.write_bytes(uri, lease.to_bytes())


def release(uri: str, run_id: str) -> None:
    """Removes the lease file ``uri`` if it still names ``run_id`` (harmless twice)."""
    found = storage.read_versioned(uri)
    if found and Lease.from_bytes(found[0]).run_id == run_id:
        storage.delete_if_version(uri, found[1])
