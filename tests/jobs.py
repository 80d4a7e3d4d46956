"""Helpers the job tests share: the caption job's flags, running `beamcap` in a subprocess,
waiting for a server's port, and comparing two runs' outputs (another runner against the
FnApiRunner)."""

import datetime
import glob
import os
import posixpath
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from models.datasets.feature_records import decode_example
from pipeline.output_root import RunDir
from tests.conftest import ROOT

FNAPI = ["--runner", "FnApiRunner"]
JOB_TIMEOUT = 240  # seconds; a job on a local cluster here takes about a minute on 2 cores
# The one margin a fault test adds to a time bound the product documents (docs/reliability.md):
# what a loaded 2-core machine adds after the promised moment (a cancel reaching the runner,
# the clean-up, the process's exit). Tests assert no speed beyond that; benchmarks/ measure it.
MARGIN = 15  # seconds


def job_flags(images, bundle, output, *extra):
    """The caption job's flags the tests share, then ``extra``."""
    return [
        "--input",
        str(images),
        "--model",
        bundle,
        "--output",
        str(output),
        "--max-pixels",
        "350000",
        "--num-candidates",
        "2",
        "--max-length",
        "12",
        *extra,
    ]


def logged_at(log: str, message: str) -> float:
    """When the first line of a launcher's ``log`` that holds ``message`` was logged (its
    ``asctime``, as pipeline.settings.configure_logging writes it), in seconds since the epoch."""
    line = next(line for line in log.splitlines() if message in line)
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def beamcap_job(*argv, timeout: float | None = None, env: dict | None = None):
    """Runs `beamcap ARGV` in a subprocess, for at most ``timeout`` (JOB_TIMEOUT) seconds (with
    ``env`` added to this process's environment)."""
    command = [sys.executable, "-m", "pipeline.cli", *map(str, argv)]
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout or JOB_TIMEOUT,
        check=False,
        env={**os.environ, **(env or {})},
    )


def beamcap_process(
    *argv, log: Path, env: dict | None = None, hold: Path | None = None
) -> subprocess.Popen:
    """Starts `beamcap ARGV` in a subprocess writing stdout and stderr to ``log`` (with
    ``env`` added to this process's environment); with ``hold``, a caption run's commit waits
    while that file exists (``tests.held_commit``)."""
    launcher = ["tests.held_commit", str(hold)] if hold else ["pipeline.cli"]
    command = [sys.executable, "-m", *launcher, *map(str, argv)]
    with open(log, "w") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def records(output):
    """The feature records under ``output``: {split: {image_id: FeatureRecord}}."""
    import tensorflow as tf

    by_split = {}
    for split in ("train", "val", "test"):
        for path in sorted(glob.glob(f"{output}/{split}-*.tfrecord")):
            for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
                record = decode_example(raw)
                by_split.setdefault(split, {})[record.image_id] = record
    return by_split


def assert_same_features(expected, output, dataset):
    """``output`` holds the records, vocabulary, failures and counts of ``expected``."""
    expected_dir, expected_dataset = expected
    assert dataset["counts"] == expected_dataset["counts"]
    vocab = Path(output, "vocab.txt").read_text()
    assert vocab == Path(expected_dir, "vocab.txt").read_text()
    want, got = records(expected_dir), records(output)
    assert {s: set(items) for s, items in got.items()} == {s: set(i) for s, i in want.items()}
    for split, items in want.items():
        for image_id, record in items.items():
            other = got[split][image_id]
            assert sorted(other.caption_texts) == sorted(record.caption_texts)
            assert other.fingerprint == record.fingerprint
            np.testing.assert_allclose(other.features, record.features, rtol=1e-4, atol=1e-5)
    failed = {
        posixpath.basename(row["image_uri"]): row["stage"]
        for row in pq.read_table(glob.glob(f"{output}/failures-*.parquet")).to_pylist()
    }
    assert failed == {"truncated.jpg": "decode", "not-an-image.jpg": "decode"}


def by_image(table):
    """Rows of a captions or failures table by image URI."""
    return {row["image_uri"]: row for row in table.to_pylist()}


def log_probs(rows) -> dict:
    """Caption rows' best log-probabilities by file name."""
    return {posixpath.basename(row["image_uri"]): row["log_prob"] for row in rows}


def assert_not_fp32(rows, fp32_rows) -> None:
    """Caption rows of a run and of an fp32 run of the same model over the same images: the
    scores differ, so the run's workers did not run the fp32 engine."""
    assert {row["model_id"] for row in rows} == {row["model_id"] for row in fp32_rows}
    scores, fp32 = log_probs(rows), log_probs(fp32_rows)
    assert scores.keys() == fp32.keys()
    assert max(abs(scores[name] - fp32[name]) for name in scores) > 1e-4


def assert_same_captions(run_dir, direct_dir, must_fail):
    """``run_dir`` has the DirectRunner run's captions and scores, and its failures."""
    captions, failures, _ = RunDir(str(run_dir)).read()
    direct_captions, direct_failures, _ = RunDir(str(direct_dir)).read()
    rows, direct_rows = by_image(captions), by_image(direct_captions)
    assert rows.keys() == direct_rows.keys()
    for uri, row in rows.items():
        assert row["caption"] == direct_rows[uri]["caption"]
        assert row["log_prob"] == pytest.approx(direct_rows[uri]["log_prob"], rel=1e-5)
    failed_stages = {uri.rsplit("/", 1)[1]: row["stage"] for uri, row in by_image(failures).items()}
    assert failed_stages == must_fail
    assert by_image(failures).keys() == by_image(direct_failures).keys()
    assert (run_dir / "_SUCCESS").exists()
