"""Progress while a caption run goes: the launcher's lines (stderr) follow the workers' counts."""

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from models.datasets.synthetic import SynthConfig, make_example
from pipeline import progress
from pipeline.output_root import RunDir
from tests.jobs import FNAPI, job_flags

LINE = re.compile(
    r"progress: (\d+) of (\d+) images \((\d+) captioned, (\d+) failed; (\d+) matched\)"
    r"(?:, ([\d.]+) images/s, ETA \d+:\d\d:\d\d)?$"
)
IMAGES = 600


def caption(images, bundle, output, *extra) -> str:
    """`beamcap caption` off a terminal (as under cron); its stderr."""
    flags = job_flags(images, bundle, output, "--progress-seconds", "1", *extra, *FNAPI)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "caption", *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_long_run_shows_progress_lines_while_it_goes(tmp_path, tiny_bundle):
    images = tmp_path / "images"
    images.mkdir()
    jpeg = make_example(SynthConfig(seed=1), 0)[2]
    for index in range(IMAGES):  # bytes after the JPEG's end: distinct contents, each captioned
        (images / f"{index:04d}.jpg").write_bytes(jpeg + index.to_bytes(2, "big"))
    (images / "broken.jpg").write_text("not a picture")
    # batches of 8: the tiny model captions a batch of 32 in 0.1 s, and 600 images in full
    # batches can pass between two of the workers' progress writes (2 s apart)
    stderr = caption(images, tiny_bundle, tmp_path / "out", "--batch-size", "8")
    lines = [LINE.match(line) for line in stderr.splitlines() if line.startswith("progress")]
    assert lines and all(lines), stderr[-3000:]
    counts = [tuple(int(group) for group in line.groups()[:5]) for line in lines]
    assert any(0 < done < IMAGES for done, *_ in counts), counts  # seen while it went
    assert counts == sorted(counts) and len(set(counts)) == len(counts)  # a line when it moved
    for done, to_caption, captioned, failed, matched in counts:
        assert done == captioned + failed and to_caption <= matched <= IMAGES + 1
    assert any(line.group(6) for line in lines)  # a rate and an ETA once images are done
    assert "progress:" not in caption(images, tiny_bundle, tmp_path / "quiet", "--quiet")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def wait_for(condition, timeout: float = 30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_on_a_terminal_one_line_is_redrawn(tmp_path, monkeypatch):
    """Two workers' counts summed into one line, redrawn in place and cut to the terminal's
    width; a file being rewritten is left out; a newline when done."""
    monkeypatch.setenv("COLUMNS", "200")
    folder = Path(RunDir(str(tmp_path)).progress_dir)
    folder.mkdir()
    first = {"matched": 20, "to_caption": 20, "captioned": 3}
    (folder / "a.json").write_text(json.dumps(first))
    (folder / "b.json").write_text('{"captioned": 2, "failed_decode": 1}')
    (folder / "c.json").write_text('{"captioned": ')  # being rewritten
    screen = Terminal()
    with progress.shown(str(folder), every=0.05, stream=screen):
        wait_for(lambda: "progress: 6 of 20" in screen.getvalue())
        (folder / "a.json").write_text(json.dumps({**first, "captioned": 9}))
        wait_for(lambda: "ETA" in screen.getvalue())
    drawn = screen.getvalue()
    assert drawn.startswith("\r\033[Kprogress: 6 of 20 images (5 captioned, 1 failed; 20 matched)")
    assert drawn.endswith("\n") and drawn.count("\n") == 1
    last = drawn.rstrip("\n").rsplit("\r\033[K", 1)[1]
    assert re.fullmatch(
        r"progress: 12 of 20 images \(11 captioned, 1 failed; 20 matched\), "
        r"[\d.]+ images/s, ETA 0:00:\d\d",
        last,
    ), last
    time.sleep(0.2)
    assert screen.getvalue() == drawn  # nothing after the run has ended
    monkeypatch.setenv("COLUMNS", "40")
    narrow = Terminal()
    with progress.shown(str(folder), every=0.05, stream=narrow):
        wait_for(lambda: "progress" in narrow.getvalue())
    lines = narrow.getvalue().rstrip("\n").split("\r\033[K")[1:]
    assert lines and set(lines) == {"progress: 12 of 20 images (11 captioned"}  # 39 columns
