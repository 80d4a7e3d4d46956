"""A worker's live counts (``transforms/progress.py``) once its run has ended."""

import json
import time

from transforms import progress


def test_a_stopped_count_is_written_whole_and_never_after(tmp_path, monkeypatch):
    """An in-process runner returns, the launcher stops the counting: the last counts are in the
    file at once, and nothing touches the run's folder afterwards."""
    monkeypatch.setattr(progress, "FLUSH_SECONDS", 0.2)
    folder = str(tmp_path / "_progress")
    for key in ("captioned", "captioned", "reused"):
        progress._add(folder, key)
    progress.stop_counting(folder)
    (path,) = (tmp_path / "_progress").iterdir()
    assert json.loads(path.read_text()) == {"captioned": 2, "reused": 1}
    written = path.stat().st_mtime_ns
    time.sleep(0.7)  # more than three of the writer's flushes
    assert [p.name for p in (tmp_path / "_progress").iterdir()] == [path.name]
    assert path.stat().st_mtime_ns == written
