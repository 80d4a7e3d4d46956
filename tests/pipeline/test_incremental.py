"""Scheduled captioning: --only-new skips what committed runs already did."""

import shutil

import pyarrow.parquet as pq

from models.datasets.synthetic import SynthConfig, make_example
from pipeline import runs
from pipeline.caption import run
from pipeline.output_root import OutputRoot
from tests.conftest import write_image_folder
from tests.jobs import FNAPI, job_flags
from transforms.content import content_hash


def caption(images, bundle, output, *extra, runner=FNAPI):
    return run(job_flags(images, bundle, output, "--only-new", *extra, *runner))


def add_images(folder, start, count):
    for index in range(start, start + count):
        (folder / f"new{index}.jpg").write_bytes(make_example(SynthConfig(seed=8), index)[2])


def test_only_new_images_are_captioned_and_nothing_twice(tmp_path, tiny_bundle, capsys, runner):
    images, output = tmp_path / "images", tmp_path / "out"
    must_fail = write_image_folder(images)
    first = caption(images, tiny_bundle, output, runner=runner)
    assert first["counts"]["captioned"] == 7 and first["counts"]["skipped_as_done"] == 0

    add_images(images, 0, 3)
    second = caption(images, tiny_bundle, output, runner=runner)
    assert second["counts"]["captioned"] == 3
    assert second["counts"]["skipped_as_done"] == 7 + len(must_fail)  # failures are done too
    assert sum(second["counts"]["failed"].values()) == 0
    _, new_captions, _ = _tables(output, second["run_id"])
    assert sorted(u.rsplit("/", 1)[1] for u in new_captions) == ["new0.jpg", "new1.jpg", "new2.jpg"]

    third = caption(
        images, tiny_bundle, output, runner=runner
    )  # nothing new: an empty, committed run
    assert third["counts"]["captioned"] == 0 and sum(third["counts"]["failed"].values()) == 0
    assert (output / "runs" / third["run_id"] / "_SUCCESS").exists()

    retried = caption(images, tiny_bundle, output, "--retry-failures", runner=runner)
    assert retried["counts"]["captioned"] == 0
    assert sum(retried["counts"]["failed"].values()) == len(must_fail)

    table = OutputRoot(str(output)).read_captions()
    assert table.num_rows == 10 and len(set(table.column("image_uri").to_pylist())) == 10
    listed = OutputRoot(str(output)).list_runs()
    assert [r["run_id"] for r in listed] == sorted(
        [first["run_id"], second["run_id"], third["run_id"], retried["run_id"]]
    )
    assert runs.main([str(output)]) == 0
    assert all(run["state"] == "committed" for run in listed)
    assert f"4 runs under {output}: 4 committed, 0 failed, 0 unfinished" in capsys.readouterr().out


def test_a_run_that_crashed_before_commit_is_ignored(tmp_path, tiny_bundle):
    images, output = tmp_path / "images", tmp_path / "out"
    write_image_folder(images)
    first = caption(images, tiny_bundle, output, "--run-id", "20200101T000000Z-crashed")
    crashed = output / "runs" / first["run_id"]
    (crashed / "_SUCCESS").unlink()  # as if the job died after writing its shards
    again = caption(images, tiny_bundle, output)
    assert again["counts"]["skipped_as_done"] == 0 and again["counts"]["captioned"] == 7
    listed = [
        (r["run_id"], r["state"], r.get("reason")) for r in OutputRoot(str(output)).list_runs()
    ]
    assert listed == [
        (first["run_id"], "failed", "abandoned"),  # the next run found it without a lease
        (again["run_id"], "committed", None),
    ]
    assert [run.path for run in OutputRoot(str(output)).committed_runs()] == [
        str(output / "runs" / again["run_id"])
    ]


def test_read_captions_keeps_the_latest_caption_per_image(tmp_path, tiny_bundle):
    images, output = tmp_path / "images", tmp_path / "out"
    write_image_folder(images)
    first = run(job_flags(images, tiny_bundle, output, *FNAPI))
    (images / "good1.jpg").unlink()
    second = run(job_flags(images, tiny_bundle, output, "--max-length", "3", *FNAPI))
    table = OutputRoot(str(output)).read_captions().to_pylist()
    by_image = {row["image_uri"].rsplit("/", 1)[1]: row["run_id"] for row in table}
    assert by_image.pop("good1.jpg") == first["run_id"]  # only the first run saw it
    assert set(by_image.values()) == {second["run_id"]}
    shutil.rmtree(output / "runs" / second["run_id"])
    assert {r["run_id"] for r in OutputRoot(str(output)).read_captions().to_pylist()} == {
        first["run_id"]
    }


def _tables(output, run_id):
    run_dir = output / "runs" / run_id
    captions = [pq.read_table(p) for p in run_dir.glob("captions-*.parquet")]
    uris = [u for t in captions for u in t.column("image_uri").to_pylist()]
    return run_dir, uris, None


def _rows(output, run_id, kind="captions"):
    run_dir = output / "runs" / run_id
    rows = [r for p in run_dir.glob(f"{kind}-*.parquet") for r in pq.read_table(p).to_pylist()]
    return {row["image_uri"].rsplit("/", 1)[1]: row for row in rows}


def test_an_image_is_known_by_its_content_under_any_name(tmp_path, tiny_bundle):
    images, output = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    jpegs = [make_example(SynthConfig(seed=5), index)[2] for index in range(3)]
    for name, data in zip("abc", jpegs, strict=True):
        (images / f"{name}.jpg").write_bytes(data)
    (images / "copy-of-a.jpg").write_bytes(jpegs[0])
    (images / "bad.jpg").write_text("hello")
    (images / "bad2.jpg").write_text("hello")
    first = caption(images, tiny_bundle, output)
    counts = first["counts"]
    assert (counts["captioned"], counts["reused"], counts["failed"]["decode"]) == (3, 1, 2)
    rows = _rows(output, first["run_id"])
    assert rows["a.jpg"]["content_hash"] == content_hash(jpegs[0])
    assert rows["a.jpg"]["reused_from"] is None
    copy = rows["copy-of-a.jpg"]  # the same bytes in one run: decoded and captioned once
    assert (copy["reused_from"], copy["reused_from_run"]) == (
        str(images / "a.jpg"),
        first["run_id"],
    )
    assert copy["candidates"] == rows["a.jpg"]["candidates"]
    failed = _rows(output, first["run_id"], "failures")
    assert {row["content_hash"] for row in failed.values()} == {content_hash(b"hello")}
    assert failed["bad2.jpg"]["message"].startswith(
        f"the same content as {images / 'bad.jpg'}, which failed: not an image format"
    )

    (images / "b.jpg").rename(images / "b-renamed.jpg")
    (images / "c2.jpg").write_bytes(jpegs[2])
    (images / "bad3.jpg").write_text("hello")  # failures are not reused: it fails on its own
    second = caption(images, tiny_bundle, output)
    counts = second["counts"]
    assert (counts["captioned"], counts["reused"], counts["failed"]["decode"]) == (0, 2, 1)
    assert counts["skipped_as_done"] == 5  # a, copy-of-a, c, bad, bad2: unchanged, never read
    again = _rows(output, second["run_id"])
    assert again.keys() == {"b-renamed.jpg", "c2.jpg"}
    renamed = again["b-renamed.jpg"]
    assert (renamed["reused_from"], renamed["reused_from_run"]) == (
        str(images / "b.jpg"),
        first["run_id"],
    )
    assert renamed["caption"] == rows["b.jpg"]["caption"] and renamed["run_id"] == second["run_id"]
    (bad3,) = _rows(output, second["run_id"], "failures").values()
    assert bad3["image_uri"].endswith("bad3.jpg") and bad3["stage"] == "decode"

    (images / "a3.jpg").write_bytes(jpegs[0])
    (images / "a4.jpg").write_bytes(jpegs[0])
    third = caption(images, tiny_bundle, output, "--reuse-captions=false")  # each on its own
    assert (third["counts"]["captioned"], third["counts"]["reused"]) == (2, 0)
