"""The caption and features jobs on a real Flink session cluster (tests/pipeline/conftest.py),
submitted as `make run-flink` submits them (--config flink), by a `beamcap` subprocess with a
timeout, so a stuck cluster fails the test instead of hanging it; and `make run-flink` itself."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from pipeline.output_root import OutputRoot, RunDir
from tests.conftest import ROOT, features_flags
from tests.jobs import assert_not_fp32, assert_same_captions, assert_same_features
from tests.pipeline.conftest import beamcap_on_flink
from tests.pipeline.test_gcs import parquet_rows, upload_images

# on one test worker: one Flink cluster
pytestmark = pytest.mark.xdist_group("flink")


def test_caption_job_on_flink(flink, caption_run, nan_bundle, tiny_bundle, tmp_path):
    """A NaN model fails the run (exit 1, _FAILED: Flink retries the failed region, which fails
    again); the next --only-new run captions every image, with the DirectRunner's captions and
    scores, and its broken images in failures. Each job attempt starts one SDK worker, kept
    across its stages (--environment_cache_millis)."""
    direct_dir, _, _, must_fail = caption_run
    images, output = direct_dir.parents[2] / "images", tmp_path / "out"
    flags = ["--input", images, "--output", output, "--max-pixels", "350000", "--max-length", "12"]
    before, workers = flink.jobs(), flink.workers_started()

    failed = beamcap_on_flink(flink, "caption", *flags, "--model", nan_bundle, "--only-new")
    assert failed.returncode == 1, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("beamcap caption: run failed: ") and "decoder returned NaN" in last
    (failed_dir,) = (output / "runs").iterdir()
    assert (failed_dir / "_FAILED").exists() and not (failed_dir / "_SUCCESS").exists()

    done = beamcap_on_flink(flink, "caption", *flags, "--model", tiny_bundle, "--only-new")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["counts"]["skipped_as_done"] == 0 and summary["counts"]["captioned"] == 7
    assert sorted(state for job, state in flink.jobs().items() if job not in before) == [
        "FAILED",
        "FINISHED",
    ]
    # the captioning job's one worker; the NaN job's first attempt and its 3 restarts: one each
    assert flink.workers_started() - workers == 1 + 4

    assert_same_captions(output / "runs" / summary["run_id"], direct_dir, must_fail)


def test_caption_job_on_flink_from_bucket_to_bucket(
    flink, gcs, new_bucket, int8_bundle, caption_run, tmp_path
):
    """gs:// in, gs:// out, read, written and committed by the cluster's workers, which run
    the bundle's int8 engine: the same model and images as ``caption_run`` (fp32), other
    scores."""
    images, must_fail = upload_images(gcs.client(), new_bucket("in"), tmp_path)
    output = f"gs://{new_bucket('out')}/captions"
    flags = ["--input", images, "--output", output, "--model", int8_bundle, "--only-new"]
    search = ["--max-pixels", "350000", "--max-length", "12"]  # as caption_run's
    done = beamcap_on_flink(flink, "caption", *flags, *search, "--precision", "int8")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["counts"]["captioned"] == 11 - len(must_fail)
    assert summary["precision"] == "int8"
    rows = parquet_rows(gcs.client(), f"{output}/runs/{summary['run_id']}/captions-")
    assert len({row["image_uri"] for row in rows}) == len(rows) == 11 - len(must_fail)
    fp32_captions, _, _ = RunDir(str(caption_run[0])).read()
    assert_not_fp32(rows, fp32_captions.to_pylist())
    assert [run["state"] for run in OutputRoot(output).list_runs()] == ["committed"]


def test_features_job_on_flink(flink, tiny_dataset, tiny_features, tmp_path):
    output = tmp_path / "features"
    result = beamcap_on_flink(flink, "features", *features_flags(tiny_dataset, output))
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = json.loads((output / "dataset.json").read_text())
    assert_same_features(tiny_features, output, dataset)


def test_make_run_flink_as_the_readme_writes_it(flink, many_images, tiny_bundle, tmp_path):
    """`make run-flink INPUT=... MODEL=... OUTPUT=...` on the cluster `make flink-up` starts
    (here on free ports: the Makefile's JOB_ENDPOINT, WORKER_POOL and FLINK_MASTER name them)
    captions a 600-image folder; a parallelism above the cluster's slots is refused in one
    line before anything starts."""
    images, output = many_images, tmp_path / "out"
    addresses = [
        f"JOB_ENDPOINT=localhost:{flink.ports.job}",
        f"WORKER_POOL=localhost:{flink.ports.pool}",
        f"FLINK_MASTER=localhost:{flink.ports.rest}",
    ]
    make = ["make", "--no-print-directory", "run-flink"]
    flags = [f"INPUT={images}", f"MODEL={tiny_bundle}", f"OUTPUT={output}", *addresses]
    done = subprocess.run([*make, *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["counts"]["captioned"] == len(list(images.iterdir()))
    # progress on Flink: its SDK workers' counts, and the launcher's line from them
    progress = Path(OutputRoot(str(output)).run(summary["run_id"]).progress_dir)
    counted = [json.loads(path.read_text()) for path in progress.glob("*.json")]
    assert 0 < sum(c.get("captioned", 0) for c in counted) <= summary["counts"]["captioned"]
    assert re.search(r"^progress: \d+ of \d+ images", done.stderr, re.M), done.stderr[-3000:]

    refused = beamcap_on_flink(
        flink,
        "caption",
        "--input",
        images,
        "--model",
        tiny_bundle,
        "--output",
        tmp_path / "x",
        "--parallelism",
        "8",
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"beamcap caption: error: parallelism 8 > 2 task slots at localhost:{flink.ports.rest}: "
        "pass --parallelism 2 or add TaskManagers"
    )
    assert not (tmp_path / "x").exists()
