"""A run's live progress, worker side: each worker process counts what its tally steps see and
rewrites its counts, every few seconds while they change, to ``RUN_DIR/_progress/WORKER.json``;
the launcher sums those files (``pipeline/progress.py``).

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
from apache_beam.io.filesystems import FileSystems

from models import storage

PROGRESS_DIR = "_progress"
FLUSH_SECONDS = 2.0


class _WorkerCounts:
    """This process's counts for one run, written by a daemon thread when they changed."""

    def __init__(self, run_dir: str):
        worker = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}.json"
        self.path = FileSystems.join(run_dir, PROGRESS_DIR, worker)
        self.counts: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self.changed = False
        threading.Thread(target=self._write_forever, name="beamcap-progress", daemon=True).start()

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1
            self.changed = True

    def _write_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            with self.lock:
                if not self.changed:
                    continue
                body, self.changed = json.dumps(self.counts), False
            try:
                storage.write_text(self.path, body)
            except Exception:  # noqa: BLE001 - progress is shown at best; it never fails a run
                logging.debug("could not write progress to %s", self.path, exc_info=True)


_BY_RUN: dict[str, _WorkerCounts] = {}
_BY_RUN_LOCK = threading.Lock()


def _counts_of(run_dir: str) -> _WorkerCounts:
    with _BY_RUN_LOCK:
        if run_dir not in _BY_RUN:
            _BY_RUN[run_dir] = _WorkerCounts(run_dir)
        return _BY_RUN[run_dir]


class _Tally(beam.DoFn):
    def __init__(self, run_dir: str | None, key: str | Callable):
        self.run_dir, self.key = run_dir, key

    def setup(self):
        self.counts = _counts_of(self.run_dir) if self.run_dir else None

    def process(self, element):
        key = self.key(element) if callable(self.key) else self.key
        if self.counts is not None:
            self.counts.add(key)
        yield key, 1


def count(pcoll, key: str | Callable, label: str, *, run_dir: str | None = None):
    """One ``(key, 1)`` per element (``key(element)`` when callable), for ``CommitRun``'s
    tally; with ``run_dir``, counted in that run's live progress too."""
    return pcoll | label >> beam.ParDo(_Tally(run_dir, key))


def read_progress(run_dir: str) -> collections.Counter:
    """The workers' counts so far, summed (a file being rewritten is skipped this time)."""
    pattern = FileSystems.join(run_dir, PROGRESS_DIR, "*.json")
    total: collections.Counter = collections.Counter()
    for found in FileSystems.match([pattern])[0].metadata_list:
        try:
            total.update(json.loads(storage.read_text(found.path)))
        except (OSError, ValueError):
            continue
    return total
