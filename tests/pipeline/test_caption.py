import glob
import json
import posixpath
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from models.configs import SettingsError
from pipeline.caption import run
from tests.conftest import write_image_folder
from tests.jobs import FNAPI, assert_not_fp32, job_flags
from transforms.caption_schema import CAPTIONS_SCHEMA
from transforms.failures import FAILURE_SCHEMA


def read_run(output, summary):
    run_dir = f"{output}/runs/{summary['run_id']}"
    captions = pq.read_table(glob.glob(f"{run_dir}/captions-*.parquet"))
    failures = pq.read_table(glob.glob(f"{run_dir}/failures-*.parquet"))
    return run_dir, captions, failures


def assert_accounts_for_everything(images, output, summary, must_fail):
    run_dir, captions, failures = read_run(output, summary)
    matched = {str(p) for p in images.rglob("*") if p.is_file()}
    captioned = set(captions.column("image_uri").to_pylist())
    failed = {row["image_uri"]: row["stage"] for row in failures.to_pylist()}
    assert captioned | set(failed) == matched and not captioned & set(failed)
    assert {posixpath.basename(uri): stage for uri, stage in failed.items()} == must_fail
    counts = summary["counts"]
    assert counts["matched"] == len(matched)
    assert counts["captioned"] == len(captioned)
    assert sum(counts["failed"].values()) == len(failed)
    assert json.loads(Path(run_dir, "summary.json").read_text()) == summary
    assert glob.glob(f"{run_dir}/_SUCCESS")
    return captions, failures


def test_broken_inputs_are_all_accounted_for(tmp_path, tiny_bundle, runner):
    images = tmp_path / "images"
    must_fail = write_image_folder(images)
    summary = run(job_flags(images, tiny_bundle, tmp_path / "out", *runner))
    captions, failures = assert_accounts_for_everything(
        images, tmp_path / "out", summary, must_fail
    )
    assert captions.schema.remove_metadata() == CAPTIONS_SCHEMA
    assert failures.schema.remove_metadata() == FAILURE_SCHEMA
    for row in captions.to_pylist():
        assert row["caption"] == row["candidates"][0]["caption"]
        assert len(row["candidates"]) == 2
        assert row["width"] >= 320 and row["height"] >= 240  # the original size
        assert row["model_id"] == summary["model_id"] and row["run_id"] == summary["run_id"]
    assert {row["error_type"] for row in failures.to_pylist()} >= {"ImageTooLarge"}


def test_a_run_id_is_never_reused(tmp_path, tiny_bundle):
    images = tmp_path / "images"
    write_image_folder(images)
    first = run(job_flags(images, tiny_bundle, tmp_path / "out", "--run-id", "r1", *FNAPI))
    assert first["run_id"] == "r1"
    files = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")}
    with pytest.raises(SettingsError, match="never reused"):
        run(job_flags(images, tiny_bundle, tmp_path / "out", "--run-id", "r1", *FNAPI))
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("*")} == files


def test_input_list_and_a_missing_file(tmp_path, tiny_bundle):
    images = tmp_path / "images"
    write_image_folder(images)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images to caption\n{images}/good1.jpg\n\n{images}/gone.jpg\n")
    summary = run(
        [
            "--input-list",
            str(listing),
            "--model",
            tiny_bundle,
            "--output",
            str(tmp_path / "out"),
            *FNAPI,
        ]
    )
    assert summary["counts"]["matched"] == 2 and summary["counts"]["captioned"] == 1
    assert summary["counts"]["failed"]["read"] == 1


def test_several_inputs_as_a_shell_expands_them(tmp_path, tiny_bundle):
    """``--input photos/*.jpg``: the shell passes every file; all are captioned, and a stray
    value anywhere else is refused in one line, before any work."""
    images = tmp_path / "images"
    write_image_folder(images)
    files = sorted(str(path) for path in images.glob("good*.jpg"))
    argv = job_flags(files[0], tiny_bundle, tmp_path / "out", *FNAPI)
    at = argv.index("--input") + 2
    summary = run([*argv[:at], *files[1:], str(images / "nested"), *argv[at:]])
    captioned = read_run(tmp_path / "out", summary)[1].column("image_uri").to_pylist()
    assert sorted(captioned) == sorted([*files, str(images / "nested" / "good0.jpg")])
    stray = job_flags(images, tiny_bundle, tmp_path / "other", "--max-length", "12", "extra")
    with pytest.raises(SettingsError, match=r"unexpected argument 'extra' \(1 in all\)"):
        run([*stray, *FNAPI])
    assert not (tmp_path / "other").exists()


def test_multi_process_direct_runner_shares_one_model(tmp_path, tiny_bundle, capsys):
    """The two worker processes each set up the captioning step: with the flag the model is
    loaded once for both (without it, twice: 2 loads here)."""
    images = tmp_path / "images"
    must_fail = write_image_folder(images)
    summary = run(
        job_flags(
            images,
            tiny_bundle,
            tmp_path / "out",
            "--runner",
            "DirectRunner",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
            "--share-model-across-processes",
        )
    )
    assert_accounts_for_everything(images, tmp_path / "out", summary, must_fail)
    assert "; 1 model loads, mean " in capsys.readouterr().err  # the launcher's log


def test_precision_reaches_the_encoder(tmp_path, tiny_bundle):
    """bf16 moves the features a little, so scores move too; were --precision ignored, the two
    runs would score every image identically."""
    images = tmp_path / "images"
    write_image_folder(images)
    rows = {}
    for precision in ("fp32", "bf16"):
        output = tmp_path / precision
        summary = run(job_flags(images, tiny_bundle, output, "--precision", precision, *FNAPI))
        assert summary["counts"]["captioned"] == 7
        rows[precision] = read_run(output, summary)[1].to_pylist()
    assert_not_fp32(rows["bf16"], rows["fp32"])


def test_batches_are_full_unless_min_batch_size_says_otherwise(tmp_path, tiny_bundle, capsys):
    """24 decodable images in batches of 12: two full batches, where BatchElements' own choice
    (``--min-batch-size 1``) starts from one image and grows, taking more and smaller ones."""
    images = tmp_path / "images"
    write_image_folder(images, good=23)
    batches = {}
    for name, extra in (("full", []), ("chosen", ["--min-batch-size", "1"])):
        flags = job_flags(images, tiny_bundle, tmp_path / name, "--batch-size", "12", *extra)
        assert run([*flags, *FNAPI])["counts"]["captioned"] == 24
        batches[name] = capsys.readouterr().err.split("inference: ")[1].split(" batches")[0]
    assert batches["full"] == "2"
    assert int(batches["chosen"]) > 2
