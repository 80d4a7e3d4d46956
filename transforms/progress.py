"""A run's live progress, worker side: each worker process counts what its tally steps see and
rewrites its counts, every few seconds while they change, to ``WORKER.json`` in the run's
progress folder (``RunDir.progress_dir``); the launcher sums those files
(``pipeline/progress.py``).

Why files and not Beam's metrics: metrics are not live on every runner (the FnApiRunner and
Flink's job server report them only at the end, and ``PortablePipelineResult.metrics()`` keeps
its first answer), whereas every worker of every runner already writes to the run directory,
local or ``gs://``. While the run goes the counts are approximate (a retried bundle counts
twice); ``summary.json`` holds the exact ones.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

import apache_beam as beam

from models import storage

FLUSH_SECONDS = 2.0  # locally; on gs:// every GCS_FLUSH_SECONDS (one upload per worker each)
GCS_FLUSH_SECONDS = 10.0
IDLE_FLUSHES = 15  # a writer with nothing new for this many flushes stops (a new one follows)


class _WorkerCounts:
    """This process's counts for one run, written by a daemon thread when they changed; the
    thread ends once they stay unchanged a while, and the next count goes on in the same file."""

    def __init__(self, folder: str, path: str | None = None, counts=None):
        worker = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}.json"
        self.folder = folder
        self.path = path or storage.join(folder, worker)
        self.every = GCS_FLUSH_SECONDS if storage.is_gcs(folder) else FLUSH_SECONDS
        self.counts: collections.Counter = counts or collections.Counter()
        self.lock = threading.Lock()
        self.writing = threading.Lock()  # one write at a time: the thread's or close()'s
        self.changed, self.closed = False, False
        threading.Thread(
            target=self._write_while_busy, name="beamcap-progress", daemon=True
        ).start()

    def add(self, key: str) -> bool:
        """Counts one ``key``; False once this writer has stopped (count on a new one)."""
        with self.lock:
            if self.closed:
                return False
            self.counts[key] += 1
            self.changed = True
            return True

    def close(self) -> None:
        """Writes the counts not yet written and stops the thread, before returning."""
        with self.lock:
            self.closed = True
        self._flush()

    def _flush(self) -> bool:
        """Writes the counts if they changed since the last write; True if they had."""
        with self.writing:
            with self.lock:
                body = json.dumps(self.counts) if self.changed else None
                self.changed = False
            if body is not None:
                self._write(body)
        return body is not None

    def _write_while_busy(self) -> None:
        idle = 0
        while True:
            time.sleep(self.every)
            if self.closed:
                return
            if self._flush():
                idle = 0
                continue
            idle += 1
            if idle >= IDLE_FLUSHES:
                with _BY_FOLDER_LOCK, self.lock:
                    if not self.changed:
                        self.closed = True
                        if _BY_FOLDER.get(self.folder) is self:
                            del _BY_FOLDER[self.folder]
                            _RETIRED[self.folder] = (self.path, self.counts)
                        return

    def _write(self, body: str) -> None:
        try:
            if storage.is_gcs(self.path):  # an upload replaces the object whole
                with storage.one_try():  # a failed write is tried again at the next flush
                    storage.write_text(self.path, body)
            else:  # a reader never sees a half-written file
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                with open(f"{self.path}.partial", "w", encoding="utf-8") as handle:
                    handle.write(body)
                os.replace(f"{self.path}.partial", self.path)
        except Exception:  # noqa: BLE001 - progress is shown at best; it never fails a run
            logging.debug("could not write progress to %s", self.path, exc_info=True)
            with self.lock:
                self.changed = True  # try again at the next flush


_BY_FOLDER: dict[str, _WorkerCounts] = {}
_RETIRED: dict[str, tuple] = {}  # a stopped writer's file and counts, which its successor goes on
_BY_FOLDER_LOCK = threading.Lock()


def _add(folder: str, key: str) -> None:
    while True:
        with _BY_FOLDER_LOCK:
            counts = _BY_FOLDER.get(folder)
            if counts is None:
                counts = _BY_FOLDER[folder] = _WorkerCounts(folder, *_RETIRED.pop(folder, ()))
        if counts.add(key):
            return


def stop_counting(folder: str) -> None:
    """Ends this process's writer for ``folder`` (a run's), its last counts written: when an
    in-process runner returns, nothing is written into the run's folder any more."""
    with _BY_FOLDER_LOCK:
        counts = _BY_FOLDER.pop(folder, None)
        _RETIRED.pop(folder, None)
    if counts is not None:
        counts.close()


class _Tally(beam.DoFn):
    def __init__(self, progress_dir: str | None, key: str | Callable):
        self.progress_dir, self.key = progress_dir, key

    def process(self, element):
        key = self.key(element) if callable(self.key) else self.key
        if self.progress_dir:
            _add(self.progress_dir, key)
        yield key, 1


def count(pcoll, key: str | Callable, label: str, *, progress_dir: str | None = None):
    """One ``(key, 1)`` per element (``key(element)`` when callable), for ``CommitRun``'s
    tally; with ``progress_dir`` (a run's), counted in its live progress too."""
    return pcoll | label >> beam.ParDo(_Tally(progress_dir, key))


def read_progress(progress_dir: str) -> dict[str, dict]:
    """Each worker's counts so far, by file (a file that cannot be read now is left out)."""
    found = {}
    for path in storage.glob(storage.join(progress_dir, "*.json")):
        try:
            counts = json.loads(storage.read_text(path))
        except (OSError, ValueError):
            continue
        if isinstance(counts, dict):
            found[path] = counts
    return found
