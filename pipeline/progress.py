"""A caption run's progress, shown by the launcher while it waits: the workers' counts
(``transforms/progress.py``), the rate over the last minute and an ETA.

On a terminal one line is redrawn every second; elsewhere (cron, Airflow's logs) a plain line
is printed every ``every`` seconds (30 by default), and only when the counts changed.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time

from transforms.progress import read_progress

TERMINAL_SECONDS = 1.0
LOG_SECONDS = 30.0
POLL_SECONDS = 2.0  # how often the counts are read: the workers write theirs as often
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
        done, matched = counts["captioned"] + failed, counts["matched"]
        to_caption = counts["to_caption"]
        if not self.history or done != self.history[-1][1]:  # the workers wrote new counts
            self.history.append((now, done))
        while len(self.history) > 2 and now - self.history[0][0] > RATE_WINDOW:
            self.history.popleft()
        skipped = f", {matched - to_caption:,} skipped as done" if matched > to_caption else ""
        text = (
            f"progress: {done:,} of {to_caption:,} images ({counts['captioned']:,} captioned, "
            f"{failed:,} failed; {matched:,} matched{skipped})"
        )
        (since, before), (latest, _) = self.history[0], self.history[-1]
        if latest > since:
            rate = (done - before) / (latest - since)
            text += f", {rate:.1f} images/s, ETA {_eta(max(to_caption - done, 0) / rate)}"
        return text


@contextlib.contextmanager
def shown(run_dir: str, *, every: float | None = None, quiet: bool = False, stream=None):
    """Inside, a thread shows the run's progress on ``stream`` (stderr): redrawn in place on a
    terminal, else a line every ``every`` seconds; nothing when ``quiet``."""
    stream = stream or sys.stderr
    if quiet:
        yield
        return
    terminal = stream.isatty()
    every = every or (TERMINAL_SECONDS if terminal else LOG_SECONDS)
    stop, line = threading.Event(), _Line()

    drawn = []  # (when, counts) of each line shown

    def show():
        while not stop.wait(min(every, POLL_SECONDS)):  # polled more often for the rate
            try:
                counts = read_progress(run_dir)
            except Exception:  # noqa: BLE001 - storage may be down: the run reports that
                continue
            now = time.monotonic()
            text = line(counts, now)
            due = not drawn or (now - drawn[-1][0] >= every and counts != drawn[-1][1])
            if counts and (terminal or due):
                stream.write(f"\r\033[K{text}" if terminal else text + "\n")
                stream.flush()
                drawn.append((now, counts))

    thread = threading.Thread(target=show, name="beamcap-progress-line", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)  # a poll stuck on storage must not hold the exit
        if terminal and drawn:
            stream.write("\n")
