import json

import numpy as np
from PIL import Image

from models.captioner.encoder import EncoderSpec, ImageEncoder
from models.datasets.splits import split_for
from pipeline import pretrain

TINY = ["--image-size", "75", "--batch-size", "8", "--images-per-eval", "16", "--seed", "1"]


def write_classes(root, count=24, seed=0):
    """Two classes of 64x48 JPEGs a classifier can tell apart: red and blue, with noise."""
    rng = np.random.default_rng(seed)
    for name, colour in {"red": (200, 30, 30), "blue": (30, 30, 200)}.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = np.clip(rng.normal(colour, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{index}.jpg")
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # truncated: skipped, counted


def test_pretrain_on_a_folder_per_class_trains_the_encoder_and_records_it(tmp_path, capsys):
    data, out = tmp_path / "classes", tmp_path / "pretrained"
    write_classes(data)
    flags = ["--data", str(data), "--output", str(out), *TINY, "--images", "32"]
    assert pretrain.main([*flags, "--val-fraction", "0.25", "--test-fraction", "0.1"]) == 0
    record = json.loads((out / "pretraining.json").read_text())
    assert record["dataset"]["kind"] == "folders"
    assert record["dataset"]["heads"] == {"class": ["blue", "red"]}
    held_out = [
        f"{name}{i}.jpg"
        for name in ("red", "blue")
        for i in range(24)
        if split_for(f"{name}{i}.jpg", val_fraction=0.25, test_fraction=0.1) == "val"
    ]
    assert record["dataset"]["held_out_images"] == len(held_out) > 0
    broken_split = split_for("broken.jpg", val_fraction=0.25, test_fraction=0.1)
    assert record["dataset"]["unreadable_images"] == int(broken_split != "test")
    assert record["images_seen"] == 32 and set(record["held_out_accuracy"]) == {"class"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["images_seen"] for row in metrics["history"]] == [16, 32]
    best = max(metrics["history"], key=lambda row: row["val_mean_accuracy"])  # the first best
    assert record["kept_after_images"] == best["images_seen"]  # its weights are the ones written
    assert record["held_out_accuracy"]["class"] == round(best["val_class_accuracy"], 4)
    assert (out / "accuracy.png").stat().st_size > 0
    trained = ImageEncoder(
        EncoderSpec("random:0", 75), weights_file=str(out / "encoder.weights.h5")
    )
    assert trained.fingerprint == record["fingerprint"]
    assert trained.fingerprint != ImageEncoder(EncoderSpec("random:0", 75)).fingerprint
    printed = json.loads(capsys.readouterr().out)
    assert printed["held_out_accuracy"] == record["held_out_accuracy"]


def test_pretrain_refuses_data_without_one_batch_of_training_images(tmp_path):
    data = tmp_path / "classes"
    write_classes(data, count=2)
    from tests.jobs import beamcap_job

    result = beamcap_job("pretrain", "--data", data, "--output", tmp_path / "out", *TINY)
    assert result.returncode == 2
    assert "training images, fewer than one batch (--batch-size 8)" in result.stderr
    assert not (tmp_path / "out").exists()
