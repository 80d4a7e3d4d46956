"""A caption run's progress, shown by the launcher while it waits: the workers' counts
(``transforms/progress.py``), the rate over the last minute and an ETA.

On a terminal one line is redrawn every second, cut to the terminal's width; elsewhere (cron,
Airflow's logs) a plain line is printed every ``every`` seconds (30 by default), and only when
the counts changed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import sys
import threading
import time

from models import storage
from transforms.progress import read_progress

TERMINAL_SECONDS = 1.0
LOG_SECONDS = 30.0
POLL_SECONDS = 2.0  # the most time between two reads of the counts (for the rate)
GCS_POLL_SECONDS = 10.0  # on gs://: a listing and one read per worker each time
RATE_WINDOW = 60.0  # seconds of history behind images/s


def _eta(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _Line:
    """Counts -> one line of text; remembers when the total changed, for the rate."""

    def __init__(self):
        self.history: collections.deque = collections.deque()

    def __call__(self, counts: collections.Counter, now: float) -> str:
        failed = sum(n for key, n in counts.items() if key.startswith("failed_"))
        done, to_caption = counts["captioned"] + counts["reused"] + failed, counts["to_caption"]
        if not self.history or done > self.history[-1][1]:  # the workers wrote new counts
            self.history.append((now, done))
        while len(self.history) > 2 and now - self.history[0][0] > RATE_WINDOW:
            self.history.popleft()
        reused = f"{counts['reused']:,} reused, " if counts["reused"] else ""
        text = (
            f"progress: {done:,} of {to_caption:,} images ({counts['captioned']:,} captioned, "
            f"{reused}{failed:,} failed; {counts['matched']:,} matched)"
        )
        (since, before), (latest, _) = self.history[0], self.history[-1]
        if latest > since:
            rate = (done - before) / (latest - since)
            text += f", {rate:.1f} images/s, ETA {_eta(max(to_caption - done, 0) / rate)}"
        return text


class _Reader:
    """The workers' counts summed; a file unreadable this time keeps its last good counts."""

    def __init__(self, progress_dir: str):
        self.progress_dir, self.by_file = progress_dir, {}

    def __call__(self) -> collections.Counter:
        with storage.one_try():
            self.by_file.update(read_progress(self.progress_dir))
        return sum(map(collections.Counter, self.by_file.values()), collections.Counter())


def _columns(stream) -> int:
    """The width of the terminal ``stream`` is on (stdout may be a file meanwhile)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns


@contextlib.contextmanager
def shown(progress_dir: str, *, every: float | None = None, quiet: bool = False, stream=None):
    """Inside, a thread shows a run's progress (read from its ``RunDir.progress_dir``) on
    ``stream`` (stderr): redrawn in place on a terminal, else a line every ``every`` seconds;
    nothing when ``quiet``."""
    stream = stream or sys.stderr
    if quiet:
        yield
        return
    terminal = stream.isatty()
    every = every or (TERMINAL_SECONDS if terminal else LOG_SECONDS)
    stop, lock, line, read = threading.Event(), threading.Lock(), _Line(), _Reader(progress_dir)
    last = {}  # "when" and "counts" of the last line shown

    def draw(counts: collections.Counter, now: float) -> None:
        text = line(counts, now)
        early = last and now - last["when"] < 0.9 * every
        if early or (last and not terminal and counts == last["counts"]):
            return
        with lock:  # never after the run has ended
            if stop.is_set():
                return
            if terminal:
                stream.write(f"\r\033[K{text[: _columns(stream) - 1]}")
            else:
                stream.write(text + "\n")
            stream.flush()
            last.update(when=now, counts=counts)

    # On gs://, a read lists the folder and reads every worker's file.
    gcs = storage.is_gcs(progress_dir)
    poll = max(every, GCS_POLL_SECONDS) if gcs else min(every, POLL_SECONDS)

    def show():
        while not stop.wait(poll):
            try:
                counts = read()
                if counts:
                    draw(counts, time.monotonic())
            except Exception:  # noqa: BLE001 - storage may be down: the run itself says so
                continue

    thread = threading.Thread(target=show, name="beamcap-progress-line", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with lock:
            stop.set()
            if terminal and last:
                stream.write("\n")
                stream.flush()
