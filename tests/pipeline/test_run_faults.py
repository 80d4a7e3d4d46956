"""Trust the run: bad settings are refused before anything starts; faults that are not an
image's fail the run (exit 1, ``_FAILED``, nothing marked done); an image's fault stays data."""

import io
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image

from models.captioner import captioner as captioner_module
from pipeline import cli
from pipeline.output_root import OutputRoot
from tests.conftest import write_image_folder
from tests.jobs import FNAPI, job_flags


def beamcap(capsys, *argv):
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.err.strip()


def caption_flags(images, model, output, *extra, runner=FNAPI):
    return ["caption", *job_flags(images, model, output, *extra, *runner)]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--beam-size", "0"], "--beam-size must be >= 1, got 0"),
        (["--beam-size", "3", "--num-candidates", "5"], "--num-candidates must be <= --beam-size"),
        (["--max-length", "0"], "--max-length must be >= 1"),
        (["--length-penalty", "nan"], "--length-penalty must be a finite number"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (
            ["--batch-size", "4", "--min-batch-size", "8"],
            "--min-batch-size must be <= --batch-size",
        ),
        (["--max-failed-fraction", "1.5"], "--max-failed-fraction must be <= 1.0"),
        (["--precision", "fp8"], "invalid choice: 'fp8'"),
        (["--beam-sise", "5"], "unknown flag --beam-sise; did you mean --beam-size?"),
        (["--run-id", "../escape"], "--run-id must be letters"),
    ],
)
def test_bad_caption_settings_are_refused_in_one_line(
    tmp_path, tiny_bundle, capsys, extra, message
):
    images = tmp_path / "images"
    write_image_folder(images)
    flags = caption_flags(images, tiny_bundle, tmp_path / "out", *extra)
    status, err = beamcap(capsys, *flags)
    assert status == 2
    assert err.startswith("beamcap caption: error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_paths_and_bundles_are_checked_at_launch(tmp_path, tiny_bundle, capsys):
    images = tmp_path / "images"
    write_image_folder(images)
    status, err = beamcap(capsys, *caption_flags(images, str(tmp_path), tmp_path / "out"))
    assert status == 2 and "is not a model bundle: it has no manifest.json" in err
    missing = tmp_path / "nowhere"
    status, err = beamcap(capsys, *caption_flags(missing, tiny_bundle, tmp_path / "out"))
    assert status == 2 and f"--input: {missing} does not exist" in err
    preset = tmp_path / "typo.yaml"
    preset.write_text("caption:\n  beam_sise: 5\n")
    flags = caption_flags(images, tiny_bundle, tmp_path / "out", "--config", preset)
    status, err = beamcap(capsys, *flags)
    assert status == 2
    assert "unknown caption setting 'beam_sise'; did you mean 'beam_size'?" in err


def test_features_and_train_check_their_settings(tmp_path, tiny_dataset, capsys):
    common = ["--images", tiny_dataset / "Images", "--output", tmp_path / "f"]
    status, err = beamcap(capsys, "features", *common, "--captions", tiny_dataset / "nope.txt")
    assert status == 2 and "--captions:" in err and "does not exist" in err
    captions = ["--captions", tiny_dataset / "captions.txt"]
    status, err = beamcap(capsys, "features", *common, *captions, "--image-size", "32")
    assert status == 2 and "--image-size must be >= 75, got 32" in err
    im2txt = [*common, *captions, "--encoder", "im2txt-InceptionV3"]
    status, err = beamcap(capsys, "features", *im2txt, "--image-size", "96")
    assert status == 2 and "--image-size: im2txt-InceptionV3 needs at least 299px" in err
    status, err = beamcap(capsys, "features", *im2txt, "--image-size", "400")
    assert status == 2 and "--image-size: im2txt's preprocessing crops 400px from a 346px" in err
    status, err = beamcap(
        capsys, "features", *common, *captions, "--val-fraction", "0.5", "--test-fraction", "0.5"
    )
    assert status == 2 and "must leave a train split" in err
    status, err = beamcap(capsys, "train", "--data", tmp_path, "--output", tmp_path / "m")
    assert status == 2 and "holds no dataset.json" in err
    status, err = beamcap(
        capsys, "train", "--data", tmp_path, "--output", tmp_path / "m", "--learning-rate", "inf"
    )
    assert status == 2 and "--learning-rate must be a finite number" in err
    status, err = beamcap(
        capsys,
        "train",
        "--data",
        tmp_path,
        "--output",
        tmp_path / "m",
        "--checkpoint-dir",
        "gs://b/c",
    )
    assert status == 2 and "--checkpoint-dir takes a local folder" in err


def test_phase_2_on_features_without_images_is_refused_in_one_line(tmp_path, tiny_features, capsys):
    data, _ = tiny_features
    flags = ["train", "--data", data, "--output", tmp_path / "m", "--train-encoder"]
    status, err = beamcap(capsys, *flags)
    assert status == 2 and err.startswith("beamcap train: error: ") and "--with-images" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_help_answers_without_loading_tensorflow():
    script = (
        "import sys\n"
        "from pipeline import cli\n"
        "for name in ('caption', 'features', 'train', 'inspect', 'runs', 'demo', 'quality'):\n"
        "    try:\n"
        "        cli.main([name, '--help'])\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, name\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False False"
    assert "--max-failed-fraction" in result.stdout and "--log-level" in result.stdout


def assert_failed_run(output, err, reason, *, traceback_free=True):
    """The last line of stderr (after the run's own INFO logs) is the one-line reason."""
    last = err.splitlines()[-1]
    assert last.startswith("beamcap caption: run failed: ") and reason in last
    assert "Traceback" not in err or not traceback_free
    (run_dir,) = (output / "runs").iterdir()
    assert not (run_dir / "_SUCCESS").exists()
    assert reason in json.loads((run_dir / "_FAILED").read_text())["reason"]
    assert not list(run_dir.glob("beam-temp-*"))
    assert OutputRoot(str(output)).committed_runs() == []
    (listed,) = OutputRoot(str(output)).list_runs()
    assert listed["state"] == "failed" and reason in listed["reason"]
    return run_dir


def test_a_model_returning_nan_fails_the_run_and_marks_nothing_done(
    tmp_path, nan_bundle, tiny_bundle, capsys, runner
):
    images, output = tmp_path / "images", tmp_path / "out"
    write_image_folder(images)
    flags = caption_flags(images, nan_bundle, output, "--only-new", runner=runner)
    status, err = beamcap(capsys, *flags)
    assert status == 1
    # On Prism the SDK harness runs in this process (LOOPBACK) and prints a failed bundle's
    # traceback to stderr itself (Beam's sdk_worker._execute), whatever the logging level.
    traceback_free = "PrismRunner" not in runner
    assert_failed_run(output, err, "FloatingPointError: the decoder", traceback_free=traceback_free)
    flags = caption_flags(images, tiny_bundle, output, "--only-new", runner=runner)
    status, _ = beamcap(capsys, *flags)
    assert status == 0
    (summary,) = [r for r in OutputRoot(str(output)).list_runs() if r["state"] == "committed"]
    assert summary["counts"]["skipped_as_done"] == 0 and summary["counts"]["captioned"] == 7


def test_a_model_raising_for_every_batch_fails_the_run(tmp_path, tiny_bundle, capsys, monkeypatch):
    def broken(self, images, **search):
        raise RuntimeError("device lost")

    monkeypatch.setattr(captioner_module.Captioner, "caption", broken)
    images, output = tmp_path / "images", tmp_path / "out"
    write_image_folder(images)
    status, err = beamcap(capsys, *caption_flags(images, tiny_bundle, output))
    assert status == 1
    assert_failed_run(
        output, err, "images of a batch failed, each on its own too: RuntimeError: device lost"
    )


def black_jpeg() -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (320, 240)).save(data, format="JPEG")
    return data.getvalue()


def test_one_bad_image_among_good_ones_fails_alone(tmp_path, tiny_bundle, capsys, monkeypatch):
    captioner = captioner_module.Captioner.caption

    def fails_on_black(self, images, **search):
        if (images.reshape(len(images), -1).max(axis=1) < 8).any():
            raise ValueError("an all-black image")
        return captioner(self, images, **search)

    monkeypatch.setattr(captioner_module.Captioner, "caption", fails_on_black)
    images, output = tmp_path / "images", tmp_path / "out"
    must_fail = write_image_folder(images)
    (images / "black.jpg").write_bytes(black_jpeg())
    status, _ = beamcap(capsys, *caption_flags(images, tiny_bundle, output))
    assert status == 0
    (run,) = OutputRoot(str(output)).committed_runs()
    captions, failures, summary = run.read()
    failed = {row["image_uri"].rsplit("/", 1)[1]: row["stage"] for row in failures.to_pylist()}
    assert failed == {**must_fail, "black.jpg": "caption"}
    matched = {str(p) for p in images.rglob("*") if p.is_file()}
    captioned = set(captions.column("image_uri").to_pylist())
    failed_uris = set(failures.column("image_uri").to_pylist())
    assert captioned | failed_uris == matched and not captioned & failed_uris
    assert summary["counts"]["captioned"] == 7 and summary["counts"]["failed"]["caption"] == 1


def test_too_many_failed_images_fail_the_run_unless_disabled(tmp_path, tiny_bundle, capsys):
    images, output = tmp_path / "images", tmp_path / "out"
    must_fail = write_image_folder(images, good=1)  # 2 decodable files, 4 broken ones
    flags = caption_flags(images, tiny_bundle, output, "--max-failed-fraction", "0.5")
    status, err = beamcap(capsys, *flags)
    assert status == 1
    run_dir = assert_failed_run(
        output, err, f"{len(must_fail)} of 6 matched images failed ({len(must_fail)} at decode)"
    )
    assert pq.read_table(next(run_dir.glob("failures-*.parquet"))).num_rows == len(must_fail)
    flags = caption_flags(images, tiny_bundle, output, "--max-failed-fraction", "0")
    status, _ = beamcap(capsys, *flags)
    assert status == 0 and len(OutputRoot(str(output)).committed_runs()) == 1
