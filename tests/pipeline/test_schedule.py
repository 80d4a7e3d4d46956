"""Scheduled --only-new runs: one at a time per output (exit 75 for the second), crashed runs
in view and cleaned, and "done" meaning this content (by this model, if asked)."""

import collections
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models import storage
from models.configs import SettingsError
from models.datasets.synthetic import SynthConfig, make_example
from models.faults import OutputBusy
from pipeline import caption as caption_module
from pipeline import cli, evaluate, lease, runs
from pipeline.output_root import OutputRoot, RunDir, new_run_id
from tests.jobs import FNAPI

ROOT = Path(__file__).resolve().parents[2]


def write_images(folder: Path, count: int, *, seed: int = 5) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"img{index}.jpg").write_bytes(make_example(SynthConfig(seed=seed), index)[2])


def flags(images, bundle, output, *extra):
    return ["--input", str(images), "--model", bundle, "--output", str(output), "--max-length",
            "6", "--only-new", *extra, *FNAPI]  # fmt: skip


def committed_uris(output: str) -> collections.Counter:
    """How often each image appears across the committed runs' captions."""
    counter = collections.Counter()
    for run in OutputRoot(output).committed_runs():
        captions, _, _ = run.read()
        counter.update(captions.column("image_uri").to_pylist())
    return counter


def held_at_commit(gate: str):
    """A commit hold (``before_success``) that waits for the file ``gate`` before _SUCCESS."""

    def wait_for_gate(_run_dir: str) -> None:
        deadline = time.time() + 120
        while not storage.exists(gate) and time.time() < deadline:
            time.sleep(0.1)

    return wait_for_gate


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_overlapping_runs_caption_each_image_once(where, tmp_path, tiny_bundle, capsys, request):
    images = tmp_path / "images"
    write_images(images, 4)
    extra = []
    if where == "gcs":
        output, extra = f"gs://{request.getfixturevalue('new_bucket')('out')}/captions", []
    else:
        output = str(tmp_path / "out")
    gate = str(tmp_path / "gate")
    hold = held_at_commit(gate)
    first = {}
    thread = threading.Thread(
        target=lambda: first.update(
            caption_module.run(flags(images, tiny_bundle, output, *extra), before_success=hold)
        )
    )
    thread.start()
    try:
        deadline = time.time() + 60
        while not storage.exists(OutputRoot(output).lease_file) and time.time() < deadline:
            time.sleep(0.05)
        status = cli.main(["caption", *flags(images, tiny_bundle, output, *extra)])
        err = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        Path(gate).touch()
        thread.join(120)
    assert status == OutputBusy.exit_code == 75
    assert err.startswith(f"beamcap caption: busy: {output} is leased by run {first['run_id']} (")
    assert err.endswith("; try again later")
    assert first["counts"]["captioned"] == 4
    assert [r["run_id"] for r in OutputRoot(output).list_runs()] == [
        first["run_id"]
    ]  # no trace of #2
    assert sorted(committed_uris(output).values()) == [1, 1, 1, 1]
    assert not storage.exists(OutputRoot(output).lease_file)  # released by the commit step
    second = caption_module.run(flags(images, tiny_bundle, output, *extra))
    assert second["counts"]["captioned"] == 0 and second["counts"]["skipped_as_done"] == 4


def test_a_killed_run_is_listed_unfinished_then_abandoned_and_rerun(tmp_path, tiny_bundle, capsys):
    images, output = tmp_path / "images", tmp_path / "out"
    write_images(images, 12)
    command = [sys.executable, "-m", "pipeline.cli", "caption", *flags(images, tiny_bundle, output)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(output.glob("runs/*/beam-temp-*")) and time.time() < deadline:
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    (killed,) = OutputRoot(str(output)).list_runs()
    assert killed["state"] == "unfinished" and killed["lease"] is None
    assert 0 <= killed["age_seconds"] < 300
    assert runs.main([str(output)]) == 0
    assert "unfinished" in capsys.readouterr().out
    assert list(output.glob(f"runs/{killed['run_id']}/beam-temp-*"))

    # listed oldest first by run id, though the rerun may start within the killed run's second
    again = caption_module.run(flags(images, tiny_bundle, output))  # takes over, cleans, reruns
    log = capsys.readouterr().err
    assert f"process {process.pid} on this host no longer exists" in log
    assert f"marked {killed['run_id']} failed: abandoned" in log
    assert again["counts"]["captioned"] == 12 and again["counts"]["skipped_as_done"] == 0
    states = [
        (r["run_id"], r["state"], r.get("reason")) for r in OutputRoot(str(output)).list_runs()
    ]
    assert states == [
        (killed["run_id"], "failed", "abandoned"),
        (again["run_id"], "committed", None),
    ]
    assert not list(output.glob("runs/*/beam-temp-*"))
    assert not list(output.glob("runs/*/_LEASE")) and not (output / "_LEASE").exists()
    assert committed_uris(str(output)) == {str(images / f"img{i}.jpg"): 1 for i in range(12)}


def test_run_ids_sort_by_start_time_within_a_second():
    ids = []
    for _ in range(20):
        ids.append(new_run_id())
        time.sleep(0.001)
    assert ids == sorted(ids) and len({run_id[:15] for run_id in ids}) < len(ids)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def fake_run(output: Path, run_id: str, *, lease_of=None) -> Path:
    """A run directory as a killed job leaves it: Beam temp files, no marker."""
    temp = output / "runs" / run_id / "beam-temp-captions-1"
    temp.mkdir(parents=True)
    (temp / "shard").write_bytes(b"x")
    if lease_of is not None:
        OutputRoot(str(output)).write_run_lease(lease_of)
    return temp.parent


def test_runs_clean_marks_only_dead_unfinished_runs_abandoned(tmp_path, capsys):
    output = tmp_path / "out"
    committed = output / "runs" / "20260101T000000Z-aaaaaa"
    committed.mkdir(parents=True)
    (committed / "_SUCCESS").touch()
    (committed / "summary.json").write_text(
        json.dumps(
            {
                "counts": {"matched": 0, "captioned": 0, "failed": {}},
                "model_id": "m",
                "images_per_second": None,
            }
        )  # fmt: skip
    )
    live_id, dead_id, expired_id, bare_id = (f"20260102T00000{i}Z-bbbbbb" for i in range(4))
    live = fake_run(output, live_id, lease_of=lease.new_lease(live_id, 60, pid=os.getpid()))
    dead = fake_run(output, dead_id, lease_of=lease.new_lease(dead_id, 60, pid=dead_pid()))
    expired = lease.new_lease(expired_id, 60, pid=os.getpid())
    expired = lease.Lease(**{**expired.__dict__, "expires_at": "2020-01-01T00:00:00+00:00"})
    fake_run(output, expired_id, lease_of=expired)
    fake_run(output, bare_id)

    assert runs.main([str(output)]) == 0
    listing = capsys.readouterr().out
    assert f"leased by {lease.socket.gethostname()} pid {os.getpid()} until" in listing
    assert listing.count("no live lease: abandoned") == 3
    assert "5 runs under" in listing and "1 committed, 0 failed, 4 unfinished" in listing

    assert runs.main([str(output), "--clean"]) == 0
    out = capsys.readouterr().out
    for run_id in (dead_id, expired_id, bare_id):
        assert f"marked {run_id} failed: abandoned; its temporary files removed" in out
    assert "1 committed, 3 failed, 1 unfinished" in out
    states = {
        r["run_id"]: (r["state"], r.get("reason")) for r in OutputRoot(str(output)).list_runs()
    }
    assert states[live_id] == ("unfinished", None) and list(live.glob("beam-temp-*/shard"))
    assert states[committed.name] == ("committed", None)
    for run_id in (dead_id, expired_id, bare_id):
        assert states[run_id] == ("failed", "abandoned")
        assert not list((output / "runs" / run_id).glob("beam-temp-*"))
    assert not list(dead.glob("_LEASE"))


def test_a_stale_output_lease_is_taken_over_and_a_live_one_refused(tmp_path):
    output = str(tmp_path / "out")
    mine = lease.new_lease("run-a", 60, pid=os.getpid())
    OutputRoot(output).acquire_lease(mine)
    with pytest.raises(OutputBusy, match="leased by run run-a .*try again later"):
        OutputRoot(output).acquire_lease(lease.new_lease("run-b", 60, pid=os.getpid()))
    OutputRoot(output).release("run-b")  # not the holder: no effect
    assert OutputRoot(output).lease_holder() == mine
    OutputRoot(output).release("run-a")
    assert OutputRoot(output).lease_holder() is None
    OutputRoot(output).acquire_lease(lease.new_lease("run-c", 60, pid=dead_pid()))
    OutputRoot(output).acquire_lease(
        lease.new_lease("run-d", 60, pid=None)
    )  # run-c's process is gone
    assert OutputRoot(output).lease_holder().run_id == "run-d"


def test_lease_minutes_is_checked(tmp_path, tiny_bundle, capsys):
    status = cli.main(
        ["caption", *flags(tmp_path, tiny_bundle, tmp_path / "out", "--lease-minutes", "0")]
    )
    assert status == 2 and "--lease-minutes must be >= 1, got 0" in capsys.readouterr().err


def test_changed_files_and_other_models_are_captioned_again(tmp_path, tiny_bundle, other_bundle):
    images, output = tmp_path / "images", tmp_path / "out"
    write_images(images, 3)
    first = caption_module.run(flags(images, tiny_bundle, output))
    assert first["counts"]["captioned"] == 3
    changed = images / "img1.jpg"
    before = changed.stat()
    changed.write_bytes(make_example(SynthConfig(seed=9), 1)[2])  # new content, same name
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    second = caption_module.run(flags(images, tiny_bundle, output))
    assert second["counts"]["captioned"] == 1 and second["counts"]["skipped_as_done"] == 2
    captions, _, _ = RunDir(str(output / "runs" / second["run_id"])).read()
    (row,) = captions.to_pylist()
    now = changed.stat()
    assert row["image_uri"] == str(changed)
    assert row["image_identity"] == f"{now.st_size}:{round(now.st_mtime * 1e6)}"

    third = caption_module.run(flags(images, other_bundle, output))  # any model's caption counts
    assert third["counts"]["captioned"] == 0 and third["counts"]["skipped_as_done"] == 3
    fourth = caption_module.run(flags(images, other_bundle, output, "--only-new-for-model"))
    assert fourth["counts"]["captioned"] == 3 and fourth["counts"]["skipped_as_done"] == 0

    latest = OutputRoot(str(output)).read_captions().to_pylist()
    by_key = {(Path(r["image_uri"]).name, r["model_id"]): r["run_id"] for r in latest}
    model, other = first["model_id"], fourth["model_id"]
    assert model != other and len(latest) == len(by_key) == 6
    assert by_key == {
        ("img0.jpg", model): first["run_id"],
        ("img1.jpg", model): second["run_id"],  # the latest caption of the changed file
        ("img2.jpg", model): first["run_id"],
        **{(f"img{i}.jpg", other): fourth["run_id"] for i in range(3)},
    }
    both = ", ".join(sorted([model, other]))
    with pytest.raises(SettingsError, match=re.escape(f"by 2 models ({both}); choose one")):
        evaluate.read_scored_captions(str(output))
    scored, label = evaluate.read_scored_captions(str(output), model)
    assert sorted(scored.column("run_id").to_pylist()) == sorted(
        [first["run_id"]] * 2 + [second["run_id"]]
    )
    assert label == {
        "run_id": ",".join(sorted([first["run_id"], second["run_id"]])),
        "model_id": model,
    }


def test_what_counts_as_done():
    from transforms.skip import is_done

    now = "120:2000000"  # 120 bytes, updated at t = 2 s
    assert is_done(now, ("120:2000000", 1, "m"), None)
    assert not is_done("121:2000000", ("120:2000000", 1, "m"), None)  # same time, new size
    assert not is_done(now, ("120:1000000", 1, "m"), None)  # rewritten since
    assert not is_done(now, ("120:2000000", 1, "m"), "other")  # --only-new-for-model
    assert is_done(now, (None, 3_000_000, None), "other")  # a failure, after the last update
    assert not is_done(now, (None, 1_000_000, None), None)  # ... before it
    assert is_done(now, (None, 2_000_000, "m"), "m")  # a version-1 caption row, no identity


def test_version_1_to_3_captions_files_stay_readable(tmp_path):
    from transforms.caption_schema import CAPTIONS_SCHEMA, CAPTIONS_VERSION

    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    version_3 = pa.schema([f for f in CAPTIONS_SCHEMA if f.name not in VERSION_4_COLUMNS])
    old_schema = pa.schema([f for f in version_3 if f.name not in ("image_identity", "key")])
    row = {"image_uri": "a.jpg", "caption": "a red circle", "log_prob": -1.0, "score": -1.0,
           "candidates": [], "width": 1, "height": 1, "model_id": "m", "run_id": "old",
           "captioned_at": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)}  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row], old_schema), run_dir / "captions-0.parquet")
    version_2 = pa.schema([f for f in version_3 if f.name != "key"])
    row_2 = {**row, "image_uri": "b.jpg", "image_identity": "1:1"}
    pq.write_table(pa.Table.from_pylist([row_2], version_2), run_dir / "captions-1.parquet")
    row_3 = {**row_2, "image_uri": "c.jpg", "key": None}
    pq.write_table(pa.Table.from_pylist([row_3], version_3), run_dir / "captions-2.parquet")
    (run_dir / "summary.json").write_text(json.dumps({"run_id": "old"}))
    (run_dir / "_SUCCESS").touch()
    captions, _, _ = RunDir(str(run_dir)).read()
    assert captions.schema == CAPTIONS_SCHEMA and captions.column("image_identity").null_count == 1
    assert captions.column("key").null_count == 3  # version 3's: a tar member's WebDataset key
    for name in VERSION_4_COLUMNS:  # content identity's
        assert captions.column(name).null_count == 3
    read = OutputRoot(str(tmp_path)).read_captions().to_pylist()
    assert [r["caption"] for r in read] == ["a red circle"] * 3
    assert CAPTIONS_VERSION == 4
    assert CAPTIONS_SCHEMA.metadata[b"beamcap.captions_version"] == b"4"


VERSION_4_COLUMNS = ("content_hash", "reused_from", "reused_from_run")
